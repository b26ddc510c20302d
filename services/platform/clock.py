"""The time of day for the roles that act on it (the SLA timer, the API's commands).

Production reads the real clock. For tests and demos only, `SWITCHBOARD_CLOCK_FILE` names a file
holding one ISO 8601 instant ("2026-11-23T09:05:30+01:00"); every `now()` reads it again, so moving
the time is writing the file. A missing file reads the real clock; an instant without an offset is
UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path


class ClockFileError(ValueError):
    """The clock file holds no ISO 8601 instant."""


class Clock:
    def __init__(self, file: str | Path | None = None):
        self.file = Path(file) if file else None

    def now(self) -> datetime:
        if self.file is None:
            return datetime.now(UTC)
        try:
            text = self.file.read_text().strip()
        except FileNotFoundError:
            return datetime.now(UTC)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ClockFileError(f"{self.file} holds no ISO 8601 instant") from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @staticmethod
    def write(file: str | Path, at: datetime) -> None:
        """Moves a file clock to `at` (tests, demos): written whole, then renamed, so no reader sees half."""
        path = Path(file)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(at.isoformat())
        tmp.replace(path)
