"""How the projector's two lanes share the events the leading one read (projections/runner.py): the
lane behind takes them from memory wherever they reach back to where it stands, and the leading lane
waits for it rather than let it fall back to reading (and decrypting) the log a second time."""

from __future__ import annotations

import threading

from projections.runner import _after, _Handoff


def _run(first: int, last: int) -> list[tuple[int, str, bool]]:
    """Events at positions first..last, as the store reads them: (position, event, redacted)."""
    return [(p, f"event {p}", False) for p in range(first, last + 1)]


def test_events_held_are_used_from_where_the_lane_behind_stands() -> None:
    read = (10, _run(11, 20))
    assert _after(read, 10) == _run(11, 20)
    assert _after(read, 14) == _run(15, 20)
    assert _after(read, 19) == _run(20, 20)


def test_the_log_is_read_where_the_events_held_do_not_reach() -> None:
    read = (10, _run(11, 20))
    assert _after(read, 9) is None  # before them: the event at 10 is not held
    assert _after(read, 20) is None  # nothing after 20 held
    assert _after(read, 25) is None
    assert _after((-1, []), 0) is None


def test_positions_with_gaps_are_found_by_position_not_by_count() -> None:
    items = [(p, f"event {p}", False) for p in (11, 13, 17, 18)]
    assert _after((10, items), 13) == items[2:]
    assert _after((10, items), 15) == items[2:]


def test_consecutive_runs_are_held_as_one_and_released_as_applied() -> None:
    handoff = _Handoff(limit=100, wait=0)
    handoff.put(0, _run(1, 5))
    handoff.put(5, _run(6, 8))
    assert handoff.held() == (0, _run(1, 8))
    assert handoff.frontier == 8
    handoff.release(5)
    assert handoff.held() == (5, _run(6, 8))
    handoff.release(7)  # a run not applied to its end stays
    assert handoff.held() == (5, _run(6, 8))
    handoff.release(8)
    assert handoff.held() == (-1, [])


def test_a_run_that_does_not_follow_on_replaces_what_was_held() -> None:
    handoff = _Handoff(limit=100, wait=0)
    handoff.put(0, _run(1, 5))
    handoff.put(40, _run(41, 42))  # the views were moved (a rebuild's swap)
    assert handoff.held() == (40, _run(41, 42))


class _Watched(threading.Condition):
    """The handoff's condition, telling when a thread has started to wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def _waiting_lead(handoff: _Handoff) -> tuple[threading.Thread, threading.Event]:
    """The leading lane handing over its next run (6..10) on a thread, once it waits for the lane
    behind; the event is set once handed."""
    watched = handoff._changed = _Watched()
    handed = threading.Event()

    def lead() -> None:
        handoff.put(5, _run(6, 10))
        handed.set()

    thread = threading.Thread(target=lead)
    thread.start()
    assert watched.waiting.wait(30), "the leading lane did not wait"
    return thread, handed


def test_the_leading_lane_waits_until_the_lane_behind_has_applied_what_it_holds() -> None:
    handoff = _Handoff(limit=5, wait=60)
    handoff.put(0, _run(1, 5))  # the limit reached
    thread, handed = _waiting_lead(handoff)
    assert not handed.is_set()
    assert _after(handoff.held(), 0) == _run(1, 5)  # the lane behind still finds its events held
    handoff.release(5)  # and applied them
    thread.join(30)
    assert handed.is_set()
    assert handoff.held() == (5, _run(6, 10))


def test_a_lane_behind_that_does_not_apply_costs_the_leading_lane_only_the_wait() -> None:
    handoff = _Handoff(limit=5, wait=0.01)
    handoff.put(0, _run(1, 5))
    handoff.put(5, _run(6, 10))  # nobody releases: after the wait, the oldest run is dropped
    assert handoff.held() == (5, _run(6, 10))
    assert _after(handoff.held(), 0) is None  # so a lane still at 0 reads the log itself


def test_closing_frees_a_leading_lane_that_waits() -> None:
    handoff = _Handoff(limit=5, wait=60)
    handoff.put(0, _run(1, 5))
    thread, handed = _waiting_lead(handoff)
    handoff.close()
    thread.join(30)
    assert handed.is_set()
