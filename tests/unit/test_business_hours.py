"""Business hours: adding a business duration to an instant and measuring business time, DST included."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from events.config import BusinessHours
from services.domain.business_hours import Calendar, CalendarError, parse_range

MADRID = ZoneInfo("Europe/Madrid")
OFFICE = {d: ["09:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def madrid(*args: int) -> datetime:
    return datetime(*args, tzinfo=MADRID)


def calendar(week=None, holidays=(), tz="Europe/Madrid") -> Calendar:
    return Calendar.of(BusinessHours(timezone=tz, week=week or OFFICE, holidays=list(holidays)))


def test_friday_evening_plus_fifteen_minutes_is_monday_morning():
    # 2026-11-20 is a Friday: ten minutes left on Friday, five more on Monday.
    due = calendar().add(madrid(2026, 11, 20, 17, 50), timedelta(minutes=15))
    assert due == madrid(2026, 11, 23, 9, 5)
    assert due.tzinfo is not None


def test_a_holiday_monday_moves_it_to_tuesday():
    due = calendar(holidays=["2026-11-23"]).add(madrid(2026, 11, 20, 17, 50), timedelta(minutes=15))
    assert due == madrid(2026, 11, 24, 9, 5)


def test_the_lunch_break_does_not_count():
    cal = calendar({"mon": ["09:00-14:00", "15:00-18:00"]})
    assert cal.add(madrid(2026, 11, 23, 13, 50), timedelta(minutes=30)) == madrid(2026, 11, 23, 15, 20)
    assert cal.between(madrid(2026, 11, 23, 13, 0), madrid(2026, 11, 23, 16, 0)) == timedelta(hours=2)


def test_starting_before_opening_counts_from_the_opening():
    assert calendar().add(madrid(2026, 11, 23, 6, 0), timedelta(hours=1)) == madrid(2026, 11, 23, 10, 0)


def test_a_duration_longer_than_a_day_spans_days():
    # Nine hours a day: 20 business hours from Monday 09:00 is Wednesday 11:00.
    assert calendar().add(madrid(2026, 11, 23, 9, 0), timedelta(hours=20)) == madrid(2026, 11, 25, 11, 0)


def test_between_is_the_inverse_of_add():
    cal = calendar({"mon": ["09:00-14:00", "15:00-18:00"], "wed": ["10:00-12:00"]}, holidays=["2026-11-25"])
    start = madrid(2026, 11, 20, 11, 17)
    for minutes in (1, 59, 300, 481, 1000):
        due = cal.add(start, timedelta(minutes=minutes))
        assert cal.between(start, due) == timedelta(minutes=minutes)


def test_a_range_across_the_autumn_dst_change_counts_the_real_hours():
    # Sunday 2026-10-25, Madrid: 03:00 CEST becomes 02:00 CET, so 00:00-06:00 lasts seven hours.
    cal = calendar({"sun": ["00:00-06:00"]})
    assert cal.between(madrid(2026, 10, 25, 0, 0), madrid(2026, 10, 26, 0, 0)) == timedelta(hours=7)
    # A weekday office keeps its local hours the week after: Monday 09:00 CET is 08:00 UTC.
    due = calendar().add(madrid(2026, 10, 23, 17, 50), timedelta(minutes=15))
    assert due == madrid(2026, 10, 26, 9, 5)
    assert due.astimezone(UTC) == datetime(2026, 10, 26, 8, 5, tzinfo=UTC)


def test_a_range_across_the_spring_dst_change_counts_the_real_hours():
    # Sunday 2026-03-29, Madrid: 02:00 CET becomes 03:00 CEST, so 00:00-06:00 lasts five hours.
    cal = calendar({"sun": ["00:00-06:00"]})
    assert cal.between(madrid(2026, 3, 29, 0, 0), madrid(2026, 3, 30, 0, 0)) == timedelta(hours=5)
    due = calendar().add(madrid(2026, 3, 27, 17, 50), timedelta(minutes=15))
    assert due.astimezone(UTC) == datetime(2026, 3, 30, 7, 5, tzinfo=UTC)  # 09:05 CEST


def test_without_business_hours_it_is_wall_clock_time():
    cal = Calendar.of(None)
    start = datetime(2026, 11, 20, 16, 50, tzinfo=UTC)
    assert cal.add(start, timedelta(minutes=15)) == start + timedelta(minutes=15)
    assert cal.between(start, start + timedelta(days=3)) == timedelta(days=3)


def test_a_range_may_run_to_midnight():
    assert parse_range("18:00-24:00") == (1080, 1440)
    cal = calendar({"fri": ["18:00-24:00"], "sat": ["00:00-01:00"]})
    assert cal.add(madrid(2026, 11, 20, 23, 30), timedelta(hours=1)) == madrid(2026, 11, 21, 0, 30)


@pytest.mark.parametrize(
    "hours",
    [
        BusinessHours(timezone="Mars/Olympus", week=OFFICE),
        BusinessHours(timezone="../etc/passwd", week=OFFICE),
        BusinessHours(timezone="Europe/Madrid", week={"monday": ["09:00-18:00"]}),
        BusinessHours(timezone="Europe/Madrid", week={"mon": ["9-18"]}),
        BusinessHours(timezone="Europe/Madrid", week={"mon": ["18:00-09:00"]}),
        BusinessHours(timezone="Europe/Madrid", week={"mon": ["09:00-14:00", "13:00-18:00"]}),
        BusinessHours(timezone="Europe/Madrid", week={"mon": []}),
        BusinessHours(timezone="Europe/Madrid", week=OFFICE, holidays=["25/12/2026"]),
    ],
)
def test_unusable_hours_are_refused(hours):
    with pytest.raises(CalendarError):
        Calendar.of(hours)
