"""Meta's field values as we store them: timestamps, ids, coordinates, file names."""

from __future__ import annotations

import mimetypes
from datetime import UTC, datetime
from urllib.parse import urlsplit

from channels.errors import Malformed
from channels.social.meta.envelope import Id


def _when(value: int | float | str | None, fallback: datetime) -> datetime:
    """Meta's timestamps: epoch seconds (WhatsApp, as a string) or milliseconds (Messenger)."""
    if value is None or value == "":
        return fallback
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise Malformed("timestamp is not an epoch time")
        value = int(value)
    # Seconds stay below 1e11 until the year 5138; milliseconds passed it in 1973.
    seconds = value / 1000 if value >= 100_000_000_000 else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Malformed("timestamp out of range") from exc


def _id(value: Id | None, what: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise Malformed(f"{what} is missing")
    return text


def _number(value: float) -> str:
    return repr(value)


def _url_name(url: str, fallback: str) -> str:
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    return path.rstrip("/").rsplit("/", 1)[-1] or fallback


def _with_extension(name: str, content_type: str) -> str:
    if "." in name or not content_type:
        return name
    return name + (mimetypes.guess_extension(content_type.split(";")[0].strip()) or "")
