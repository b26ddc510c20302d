"""Pure parts of the SLA clock: the case's once-only transitions, the file clock, duration text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.case import SlaBreached, SlaFulfilled, SlaPaused, SlaResumed, SlaStarted
from services.api.sla import iso_duration
from services.domain.case import Case
from services.platform.clock import Clock, ClockFileError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def opened() -> Case:
    case = Case.open(uuid.uuid4(), uuid.uuid4(), "sms", None, T0, interaction_id=uuid.uuid4())
    case.collect()
    return case


def test_each_sla_transition_happens_once() -> None:
    case = opened()
    due = T0 + timedelta(minutes=15)
    case.start_sla("first_response", "gold", due, T0)
    case.start_sla("first_response", "gold", due, T0)  # a retried timer
    case.breach_sla("first_response", due - timedelta(seconds=1))  # not due yet
    case.breach_sla("first_response", due)
    case.breach_sla("first_response", due + timedelta(seconds=5))
    case.fulfil_sla("first_response", due + timedelta(minutes=1))  # too late to fulfil a breached target
    assert [type(e) for e in case.collect()] == [SlaStarted, SlaBreached]
    assert case.sla["first_response"] == ("breached", None)


def test_pause_resume_and_fulfil() -> None:
    case = opened()
    case.start_sla("resolution", "gold", T0 + timedelta(hours=2), T0)
    case.pause_sla("pending", T0 + timedelta(minutes=5))
    case.pause_sla("pending", T0 + timedelta(minutes=6))
    case.breach_sla("resolution", T0 + timedelta(hours=3))  # a paused clock is never breached
    case.resume_sla("resolution", T0 + timedelta(hours=4), T0 + timedelta(hours=2))
    case.resume_sla("resolution", T0 + timedelta(hours=4), T0 + timedelta(hours=2))
    case.fulfil_sla("resolution", T0 + timedelta(hours=3))
    case.fulfil_sla("resolution", T0 + timedelta(hours=3))
    assert [type(e) for e in case.collect()] == [SlaStarted, SlaPaused, SlaResumed, SlaFulfilled]


def test_retarget_moves_a_running_clock_only_when_something_changed() -> None:
    case = opened()
    case.retarget_sla("first_response", "gold", T0, T0)  # not running: nothing
    case.start_sla("first_response", "gold", T0 + timedelta(minutes=15), T0)
    case.retarget_sla("first_response", "gold", T0 + timedelta(minutes=15), T0)  # the same: nothing
    case.retarget_sla("first_response", "gold", T0 + timedelta(minutes=5), T0 + timedelta(minutes=1))
    events = case.collect()
    assert [type(e) for e in events] == [SlaStarted, SlaStarted]
    assert case.sla["first_response"] == ("running", T0 + timedelta(minutes=5))


def test_the_file_clock(tmp_path) -> None:
    path = tmp_path / "clock"
    clock = Clock(path)
    before = datetime.now(UTC)
    assert clock.now() >= before  # no file yet: the real clock
    Clock.write(path, datetime(2026, 11, 23, 9, 5, 30, tzinfo=UTC))
    assert clock.now() == datetime(2026, 11, 23, 9, 5, 30, tzinfo=UTC)
    path.write_text("2026-11-23T09:05:30")  # no offset: UTC
    assert clock.now() == datetime(2026, 11, 23, 9, 5, 30, tzinfo=UTC)
    path.write_text("next monday")
    with pytest.raises(ClockFileError):
        clock.now()
    assert Clock(None).now() >= before


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(minutes=15), "PT15M"),
        (timedelta(hours=1, minutes=30), "PT1H30M"),
        (timedelta(days=2, hours=4), "P2DT4H"),
        (timedelta(days=1), "P1D"),
        (timedelta(seconds=45), "PT45S"),
        (timedelta(seconds=1, microseconds=500000), "PT1.5S"),
    ],
)
def test_durations_are_written_as_people_write_them(duration, text) -> None:
    assert iso_duration(duration) == text


def test_a_target_the_calendar_cannot_hold_falls_back_to_wall_time() -> None:
    from events.config import BusinessHours  # noqa: PLC0415
    from services.domain.business_hours import Calendar  # noqa: PLC0415
    from services.timer.sla import _add  # noqa: PLC0415

    sparse = Calendar.of(BusinessHours(timezone="UTC", week={"mon": ["09:00-10:00"]}))
    long = timedelta(days=300).total_seconds()
    assert _add(sparse, T0, long) == T0 + timedelta(days=300)
    assert _add(sparse, T0, 1800) == T0 + timedelta(minutes=30)  # Monday 09:00 UTC + 30 business minutes
