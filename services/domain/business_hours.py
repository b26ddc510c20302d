"""Business hours: the calendar an SLA policy counts its durations in.

Pure (no clock, no I/O). A calendar is a time zone, opening ranges per weekday ("09:00-14:00",
"15:00-18:00") and holidays (dates in that zone). Times of day are the zone's wall clock, so a range
keeps its local hours across a DST change; durations are real elapsed time inside the ranges, so a
range that a DST change shortens (or lengthens) counts the hours it really had. A policy without
business hours counts wall-clock time (`Calendar.wall()`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from events.config import BusinessHours

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))$")
# A calendar with no opening at all for this long is a configuration mistake, not an endless loop.
_SEARCH_DAYS = 3 * 366


class CalendarError(ValueError):
    """Business hours that cannot be used: an unknown zone, a malformed range, a bad date."""


def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; CalendarError when there is none."""
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        raise CalendarError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CalendarError(f"unknown time zone {name!r}") from None


def parse_range(text: str) -> tuple[int, int]:
    """ "09:00-14:00" → (540, 840): minutes from local midnight; "18:00-24:00" runs to midnight."""
    m = _RANGE.match(text)
    if m is None:
        raise CalendarError(f"opening hours are HH:MM-HH:MM, not {text!r}")
    start = int(m[1]) * 60 + int(m[2])
    end = 1440 if m[5] else int(m[3]) * 60 + int(m[4])
    if end <= start:
        raise CalendarError(f"opening range {text!r} ends before it starts")
    return start, end


@dataclass(frozen=True)
class Calendar:
    """`tz` None: wall-clock time, every instant counts."""

    tz: ZoneInfo | None = None
    week: tuple[tuple[tuple[int, int], ...], ...] = ()  # Monday first: (start, end) minutes per range
    holidays: frozenset[date] = frozenset()

    @classmethod
    def wall(cls) -> Calendar:
        return cls()

    @classmethod
    def of(cls, hours: BusinessHours | None) -> Calendar:
        """The calendar of a policy's business hours (wall clock without them); CalendarError if bad."""
        if hours is None:
            return cls.wall()
        unknown = set(hours.week) - set(WEEKDAYS)
        if unknown:
            raise CalendarError(f"weekdays are {', '.join(WEEKDAYS)}, not {', '.join(sorted(unknown))}")
        week = []
        for day in WEEKDAYS:
            ranges = sorted(parse_range(r) for r in hours.week.get(day, []))
            for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
                if start < end:
                    raise CalendarError(f"opening ranges of {day} overlap")
            week.append(tuple(ranges))
        if not any(week):
            raise CalendarError("business hours need at least one opening range")
        holidays = set()
        for text in hours.holidays:
            try:
                holidays.add(date.fromisoformat(text))
            except ValueError:
                raise CalendarError(f"holidays are ISO dates (2026-12-25), not {text!r}") from None
        return cls(zone(hours.timezone), tuple(week), frozenset(holidays))

    def openings(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The opening intervals (UTC, in order) that end after `since`, the first clipped to start there."""
        assert self.tz is not None
        since = since.astimezone(UTC)
        day = since.astimezone(self.tz).date() - timedelta(days=1)
        for _ in range(_SEARCH_DAYS):
            if day not in self.holidays:
                for start, end in self.week[day.weekday()]:
                    begins, ends = self._instant(day, start), self._instant(day, end)
                    if ends > since and ends > begins:
                        yield max(begins, since), ends
            day += timedelta(days=1)
        raise CalendarError("no business hours in three years")

    def _instant(self, day: date, minutes: int) -> datetime:
        """The UTC instant of a local time of day (a time a DST change skips counts as after it)."""
        if minutes == 1440:
            day, minutes = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=self.tz)
        return local.astimezone(UTC)

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The instant when `duration` of business time has passed since `start`."""
        if self.tz is None or duration <= timedelta(0):
            return start + max(duration, timedelta(0))
        remaining = duration
        for begins, ends in self.openings(start):
            if ends - begins >= remaining:
                return begins + remaining
            remaining -= ends - begins
        raise AssertionError("unreachable")  # openings() ends by raising

    def between(self, start: datetime, end: datetime) -> timedelta:
        """The business time from `start` to `end` (zero when `end` is not after `start`)."""
        if end <= start:
            return timedelta(0)
        if self.tz is None:
            return end - start
        total = timedelta(0)
        for begins, ends in self.openings(start):
            if begins >= end:
                break
            total += min(ends, end) - begins
        return total
