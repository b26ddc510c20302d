"""The SLA timer on a real event store: clocks from the queue's policy in business hours, paused and
resumed, breaches recorded once however many timers run, due work surviving a restart."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from events.config import BusinessHours
from services.core.commands import run_case, run_command
from services.domain.case import Case
from services.domain.config import Queue, SlaPolicy
from services.platform.schema import bring_up_to_date
from services.timer.sla import SlaTimer

pytestmark = pytest.mark.integration

MADRID = ZoneInfo("Europe/Madrid")
FRIDAY_1750 = datetime(2026, 11, 20, 17, 50, tzinfo=MADRID)
MONDAY = datetime(2026, 11, 23, tzinfo=MADRID)
OFFICE = BusinessHours(timezone="Europe/Madrid", week={d: ["09:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")})


class FakeClock:
    """The timer's clock, moved by the test (what SWITCHBOARD_CLOCK_FILE does for a whole server)."""

    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def configure(store, queue: str = "sms", policy: str = "gold", hours: BusinessHours | None = OFFICE) -> None:
    run_command(
        store,
        SlaPolicy,
        SlaPolicy.stream_id(policy),
        lambda p: p.configure(
            policy,
            "admin",
            FRIDAY_1750 - timedelta(days=1),
            first_response={"normal": "PT15M", "urgent": "PT5M"},
            next_response={"normal": "PT30M"},
            resolution={"normal": "PT2H"},
            business_hours=hours,
        ),
        create=True,
    )
    run_command(
        store,
        Queue,
        Queue.stream_id(queue),
        lambda q: q.configure(queue, "admin", FRIDAY_1750 - timedelta(days=1), sla_policy=policy),
        create=True,
    )


def open_case(store, at: datetime = FRIDAY_1750, queue: str | None = None) -> uuid.UUID:
    case = Case.open(uuid.uuid4(), uuid.uuid4(), "sms", None, at, queue=queue, interaction_id=uuid.uuid4())
    with store.transaction() as tx:
        tx.append(case.collect())
    return case.id


def sla_events(store, case_id) -> list[tuple]:
    out = []
    for e in store.load(case_id):
        if e.NAME.startswith("case.Sla") or e.NAME == "case.Woken":
            out.append((e.NAME.removeprefix("case."), getattr(e, "target", None), getattr(e, "due_at", None)))
    return out


@pytest.fixture
def timer_store(store):
    bring_up_to_date(store, read_models=[])
    return store


def test_a_case_opened_friday_evening_is_due_monday_and_breached_once_after(timer_store) -> None:
    store = timer_store
    configure(store)
    case_id = open_case(store)
    clock = FakeClock(FRIDAY_1750)
    follower = SlaTimer(store, clock).follower()
    follower.catch_up()
    assert sla_events(store, case_id) == [
        ("SlaStarted", "first_response", MONDAY.replace(hour=9, minute=5)),
        ("SlaStarted", "resolution", MONDAY.replace(hour=10, minute=50)),
    ]
    follower.run_tick(MONDAY.replace(hour=9, minute=4))
    assert [e[0] for e in sla_events(store, case_id)] == ["SlaStarted", "SlaStarted"]
    for _ in range(3):  # ticks after the due time, and a breach handled back from the log
        follower.run_tick(MONDAY.replace(hour=9, minute=5, second=30))
        follower.catch_up()
    assert sla_events(store, case_id)[2:] == [("SlaBreached", "first_response", MONDAY.replace(hour=9, minute=5))]


def test_a_reply_before_due_fulfils_and_nothing_is_breached(timer_store) -> None:
    store = timer_store
    configure(store)
    case_id = open_case(store)
    follower = SlaTimer(store, FakeClock(FRIDAY_1750)).follower()
    follower.catch_up()
    run_case(store, case_id, lambda c: c.request_reply(uuid.uuid4(), "On it", "ana", MONDAY.replace(hour=9, minute=2)))
    follower.catch_up()
    follower.run_tick(MONDAY.replace(hour=12))
    names = [(n, t) for n, t, _ in sla_events(store, case_id)]
    assert names == [
        ("SlaStarted", "first_response"),
        ("SlaStarted", "resolution"),
        ("SlaFulfilled", "first_response"),
        ("SlaPaused", None),  # the case is pending: the resolution clock stops
    ]


def test_pending_pauses_and_the_customer_writing_resumes_with_what_was_left_in_business_time(timer_store) -> None:
    store = timer_store
    configure(store)
    case_id = open_case(store)
    follower = SlaTimer(store, FakeClock(FRIDAY_1750)).follower()
    follower.catch_up()
    # Resolution: 2 business hours from Friday 17:50. Reply Friday 17:55: 5 minutes used, 115 left.
    run_case(store, case_id, lambda c: c.request_reply(uuid.uuid4(), "Looking", "ana", FRIDAY_1750.replace(minute=55)))
    follower.catch_up()
    # The customer answers on Saturday; the clock resumes then, counting from Monday 09:00.
    saturday = datetime(2026, 11, 21, 11, 0, tzinfo=MADRID)
    run_case(store, case_id, lambda c: c.add_message(uuid.uuid4(), "inbound", "sms", saturday))
    follower.catch_up()
    events = sla_events(store, case_id)
    assert events[2:] == [
        ("SlaFulfilled", "first_response", None),
        ("SlaPaused", None, None),
        ("SlaResumed", "resolution", MONDAY.replace(hour=10, minute=55)),
        ("SlaStarted", "next_response", MONDAY.replace(hour=9, minute=30)),
    ]
    # Our next reply fulfils next_response; resolving fulfils resolution.
    run_case(store, case_id, lambda c: c.request_reply(uuid.uuid4(), "Done", "ana", MONDAY.replace(hour=9, minute=10)))
    run_case(store, case_id, lambda c: c.resolve("ana", MONDAY.replace(hour=9, minute=11)))
    follower.catch_up()
    assert [(n, t) for n, t, _ in sla_events(store, case_id)[6:]] == [
        ("SlaFulfilled", "next_response"),
        ("SlaPaused", None),
        ("SlaFulfilled", "resolution"),
    ]
    follower.run_tick(MONDAY.replace(hour=18))
    assert not any(n == "SlaBreached" for n, _, _ in sla_events(store, case_id))


def test_snooze_pauses_and_the_case_wakes_at_its_time(timer_store) -> None:
    store = timer_store
    configure(store, hours=None)  # wall-clock time
    at = datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)
    case_id = open_case(store, at)
    follower = SlaTimer(store, FakeClock(at)).follower()
    follower.catch_up()
    until = at + timedelta(hours=3)
    run_case(store, case_id, lambda c: c.snooze(until, "ana", at + timedelta(minutes=5)))
    follower.catch_up()
    follower.run_tick(until - timedelta(seconds=1))
    assert sla_events(store, case_id)[-1] == ("SlaPaused", None, None)
    follower.run_tick(until)
    follower.catch_up()
    events = sla_events(store, case_id)
    # Woken at its time; both clocks resume with what was left (10 and 115 minutes of wall time).
    assert events[3:] == [
        ("Woken", None, None),
        ("SlaResumed", "first_response", until + timedelta(minutes=10)),
        ("SlaResumed", "resolution", until + timedelta(minutes=115)),
    ] or events[3:] == [
        ("Woken", None, None),
        ("SlaResumed", "resolution", until + timedelta(minutes=115)),
        ("SlaResumed", "first_response", until + timedelta(minutes=10)),
    ]
    assert Case.replay(case_id, store.load(case_id)).status == "open"


def test_a_new_priority_measures_the_running_clock_again(timer_store) -> None:
    store = timer_store
    configure(store, hours=None)
    at = datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)
    case_id = open_case(store, at)
    follower = SlaTimer(store, FakeClock(at)).follower()
    follower.catch_up()
    run_case(store, case_id, lambda c: c.prioritize("urgent", "ana", at + timedelta(minutes=2)))
    follower.catch_up()
    # Urgent: 5 minutes for the first response, 2 already used; resolution has no urgent target.
    assert sla_events(store, case_id)[2:] == [("SlaStarted", "first_response", at + timedelta(minutes=5))]


def test_a_case_without_a_policy_has_no_clock(timer_store) -> None:
    store = timer_store
    configure(store)
    case_id = open_case(store, queue="no-policy-here")
    SlaTimer(store, FakeClock(FRIDAY_1750)).follower().catch_up()
    assert sla_events(store, case_id) == []


def test_due_work_survives_a_restart(timer_store) -> None:
    store = timer_store
    configure(store)
    case_id = open_case(store)
    clock = FakeClock(FRIDAY_1750)
    first = SlaTimer(store, clock).follower()
    stop = threading.Event()
    thread = threading.Thread(target=first.run_forever, args=(stop,), kwargs={"idle_wait": 0.02})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(sla_events(store, case_id)) < 2:
            assert time.monotonic() < deadline, "the first timer started no clock"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    # Another process, later: the clock it never saw started is in the table, due and breached.
    clock.at = MONDAY.replace(hour=9, minute=6)
    SlaTimer(store, clock).follower().run_tick(clock.at)
    assert sla_events(store, case_id)[2:] == [("SlaBreached", "first_response", MONDAY.replace(hour=9, minute=5))]


def test_two_timers_at_once_record_each_breach_once(timer_store) -> None:
    store = timer_store
    configure(store)
    ids = [open_case(store, FRIDAY_1750 + timedelta(seconds=i)) for i in range(6)]
    clock = FakeClock(FRIDAY_1750)
    timers = [SlaTimer(store, clock).follower(tick_every=0.05) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=t.run_forever, args=(stop,), kwargs={"idle_wait": 0.02}) for t in timers]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while any(len(sla_events(store, i)) < 2 for i in ids):
            assert time.monotonic() < deadline, "clocks did not start"
            time.sleep(0.05)
        clock.at = MONDAY.replace(hour=12)  # everything due
        while not all(any(e[0] == "SlaBreached" for e in sla_events(store, i)) for i in ids):
            assert time.monotonic() < deadline + 30, "breaches not recorded"
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    # And both ticking at the same moment, past the leader lock: the case's own rule and the
    # version check leave one breach each.
    racers = [threading.Thread(target=t.run_tick, args=(MONDAY.replace(hour=13),)) for t in timers]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    for i in ids:
        breaches = [e for e in sla_events(store, i) if e[0] == "SlaBreached"]
        assert sorted(t for _, t, _ in breaches) == ["first_response", "resolution"], breaches


def test_a_reply_the_timer_has_not_handled_yet_wins_over_a_breach(timer_store) -> None:
    store = timer_store
    configure(store)
    case_id = open_case(store)
    follower = SlaTimer(store, FakeClock(FRIDAY_1750)).follower()
    follower.catch_up()
    due = MONDAY.replace(hour=9, minute=5)
    run_case(store, case_id, lambda c: c.request_reply(uuid.uuid4(), "Just in time", "ana", due - timedelta(seconds=1)))
    follower.run_tick(due + timedelta(minutes=1))  # the timer is behind on this case: no decision yet
    assert [e[0] for e in sla_events(store, case_id)] == ["SlaStarted", "SlaStarted"]
    follower.catch_up()
    follower.run_tick(due + timedelta(minutes=2))
    assert [(n, t) for n, t, _ in sla_events(store, case_id)][2:] == [
        ("SlaFulfilled", "first_response"),
        ("SlaPaused", None),
    ]
