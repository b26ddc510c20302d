"""The process managers' loop: each event handled once across restarts, what a handler appends
committed with the position, one failing event quarantined and the rest handled, one active follower
of a name at a time."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from events.case import CaseOpened
from services.domain.case import Case
from services.platform.follower import Follower
from services.platform.schema import bring_up_to_date

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 6, 17, 50, tzinfo=UTC)


def _open_cases(store, n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        case = Case.open(uuid.uuid4(), uuid.uuid4(), "sms", None, T0)
        with store.transaction() as tx:
            tx.append(case.collect())
        ids.append(case.id)
    return ids


def _assigning(seen: list[uuid.UUID], poison: set[uuid.UUID] | None = None):
    """A handler that assigns every opened case to "bot" (the case's next version, in the batch's
    transaction)."""

    def handle(tx, items) -> None:
        for _position, event, _redacted in items:
            if type(event) is CaseOpened:
                if poison and event.stream_id in poison:
                    raise ValueError("this event cannot be handled")
                case = Case.replay(event.stream_id, tx.store.load(event.stream_id))
                case.assign("bot", "routing", T0)
                tx.append(case.collect())
                seen.append(event.stream_id)

    return handle


def _assignees(store, ids) -> dict[uuid.UUID, int]:
    counts = {}
    for i in ids:
        n = sum(1 for e in store.load(i) if e.NAME == "case.Assigned")
        if n:
            counts[i] = n
    return counts


def test_each_event_is_handled_once_and_a_restart_resumes_from_the_position(store, settings) -> None:
    bring_up_to_date(store, read_models=[])
    first = _open_cases(store, 3)
    seen: list[uuid.UUID] = []
    Follower(store, "test-assign", _assigning(seen), batch_size=2).catch_up()
    assert sorted(seen) == sorted(first)
    later = _open_cases(store, 2)
    again: list[uuid.UUID] = []
    Follower(store, "test-assign", _assigning(again)).catch_up()  # a new process: from the stored position
    assert sorted(again) == sorted(later)
    assert _assignees(store, first + later) == {i: 1 for i in first + later}


def test_one_event_that_fails_is_quarantined_and_the_others_handled(store, settings) -> None:
    bring_up_to_date(store, read_models=[])
    ids = _open_cases(store, 5)
    seen: list[uuid.UUID] = []
    follower = Follower(store, "test-poison", _assigning(seen, poison={ids[2]}))
    follower.catch_up()
    # (`seen` also holds the attempt that was rolled back when the batch failed: the log is what counts)
    assert _assignees(store, ids) == {i: 1 for i in ids[:2] + ids[3:]}
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT consumer, event_type FROM sb_quarantine WHERE consumer = 'follower:test-poison'"
        ).fetchall()
    assert rows == [("follower:test-poison", "case.Opened")]
    assert follower.position() == store.max_position()


def test_only_one_follower_of_a_name_is_active(store, settings) -> None:
    bring_up_to_date(store, read_models=[])
    stop = threading.Event()
    seen_a: list[uuid.UUID] = []
    seen_b: list[uuid.UUID] = []
    a = Follower(store, "test-leader", _assigning(seen_a))
    b = Follower(store, "test-leader", _assigning(seen_b))
    threads = [threading.Thread(target=f.run_forever, args=(stop,), daemon=True) for f in (a, b)]
    for t in threads:
        t.start()
    try:
        ids = _open_cases(store, 20)
        deadline = threading.Event()
        for _ in range(200):
            if a.position() >= store.max_position() and len(seen_a) + len(seen_b) >= 20:
                break
            deadline.wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert set(seen_a + seen_b) == set(ids)
    assert not (seen_a and seen_b), "both followers handled events"
    assert _assignees(store, ids) == {i: 1 for i in ids}
