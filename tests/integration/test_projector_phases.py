"""The projector commits and announces the timeline before the other read models (issue 13: the
publish → timeline latency), and read models left behind between the two catch up, once each.

Events are written by the real core into the real event store; the projections run on PostgreSQL.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from events.config import QueueConfigured
from events.customer import InteractionRecorded
from events.interactions import Interaction
from projections.runner import ProjectionRunner, all_projections
from projections.timeline import TimelineProjection
from services.core.processor import CoreProcessor
from tests.fixtures.interactions import sms
from tests.fixtures.projector import WatchedRunner

pytestmark = pytest.mark.integration


def _sms(n: int) -> Interaction:
    return sms(f"+44770091{n:04d}", n)


def _record(store, interactions: list[Interaction]) -> None:
    outcome = CoreProcessor(store).process([(i, None) for i in interactions])
    assert len(outcome.recorded) == len(interactions), outcome


def _one(settings, query: str, params=()):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


def _interaction_counts(settings, messages: list[Interaction]) -> list[int]:
    """The interaction count of each message's customer (found by the message's identity)."""
    return _one(
        settings,
        "SELECT array_agg(c.interaction_count) FROM proj_customers c JOIN proj_identities i ON i.customer_id = c.id "
        "WHERE i.value = ANY(%s)",
        ([m.identities[0].value for m in messages],),
    )


def test_the_timeline_is_committed_and_announced_before_the_other_read_models(store, settings) -> None:
    messages = [_sms(n) for n in range(3)]
    _record(store, messages)
    end = store.max_position()
    calls: list[tuple[list[dict], int, dict[str, int]]] = []

    def on_live(items: list[dict]) -> None:
        # Seen from another connection: what is committed when the announcement goes out.
        rows = _one(
            settings, "SELECT count(*) FROM proj_timeline WHERE interaction_id = ANY(%s)", ([m.id for m in messages],)
        )
        calls.append((items, rows, ProjectionRunner(store).positions()))

    runner = ProjectionRunner(store, on_live=on_live)
    assert runner.run_once() > 0

    first_items, committed_rows, positions = calls[0]
    assert {i["type"] for i in first_items} == {"timeline"}
    assert {i["interaction_id"] for i in first_items} == {str(m.id) for m in messages}
    assert committed_rows == len(messages)
    # Announced before the other read models were written: they still stand before these events.
    assert positions["timeline"] == end
    assert positions["cases"] < end and positions["profile"] < end
    # Then the others, from the same events, announced after their own commit.
    assert any(i["type"] == "case" for items, _, _ in calls[1:] for i in items)
    assert set(runner.positions().values()) == {end}


def test_read_models_left_behind_between_the_phases_catch_up_once(store, settings) -> None:
    messages = [_sms(10 + n) for n in range(4)]
    _record(store, messages)
    end = store.max_position()
    # As if the projector stopped right after committing the timeline: only its position moved.
    ProjectionRunner(store, [TimelineProjection()]).catch_up()
    runner = ProjectionRunner(store)
    assert runner.positions()["timeline"] == end and runner.positions()["profile"] < end

    later = _sms(20)
    _record(store, [later])
    runner.catch_up()

    assert set(runner.positions().values()) == {store.max_position()}
    ids = [m.id for m in [*messages, later]]
    assert _one(settings, "SELECT count(*) FROM proj_timeline WHERE interaction_id = ANY(%s)", (ids,)) == len(ids)
    # Every customer's message counted once: the timeline's events were not applied twice elsewhere
    # and the others did not miss the ones the timeline had already taken.
    assert _interaction_counts(settings, [*messages, later]) == [1] * len(ids)
    assert len(all_projections()) == len(runner.positions())


def test_the_timeline_lane_goes_on_while_the_others_are_still_writing(store, settings) -> None:
    """`run_forever`: the timeline and the other read models are two lanes. Here the others are held
    inside their first batch (their live announcement blocks); the timeline still takes, commits and
    announces the next messages, and the others then catch up on every message, once."""
    first, second = [_sms(30 + n) for n in range(3)], [_sms(40 + n) for n in range(3)]
    _record(store, first)
    others_inside = threading.Event()
    release = threading.Event()
    announced: list[str] = []
    seen = threading.Condition()

    def on_live(items: list[dict]) -> None:
        if any(i["type"] != "timeline" for i in items) and not release.is_set():
            others_inside.set()
            assert release.wait(60)
        with seen:
            announced.extend(i["interaction_id"] for i in items if i["type"] == "timeline")
            seen.notify_all()

    runner = WatchedRunner(store, on_live=on_live)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        assert others_inside.wait(60)
        _record(store, second)
        end = store.max_position()
        with seen:
            assert seen.wait_for(lambda: {str(m.id) for m in second} <= set(announced), 60)
        positions = runner.positions()
        assert positions["timeline"] == end
        assert positions["cases"] < end and positions["profile"] < end  # still held in their first batch
        release.set()
        runner.until_every_position_is(end)
    finally:
        release.set()
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert _interaction_counts(settings, [*first, *second]) == [1] * 6


def test_on_a_backlog_the_lane_behind_takes_the_events_from_the_timeline_lane(store, settings, monkeypatch) -> None:
    """A backlog of many batches: the other read models, slower than the timeline, are handed every
    event the timeline lane read, instead of reading (and decrypting) the log a second time; the
    timeline lane waits for them rather than run on and make them fall behind what it holds."""
    messages = [_sms(100 + n) for n in range(40)]
    _record(store, messages)
    end = store.max_position()
    read_by: list[tuple[str, int]] = []
    read = store.read

    def recording(position: int, limit: int):
        items = read(position, limit)
        if items:
            read_by.append((threading.current_thread().name, len(items)))
        return items

    monkeypatch.setattr(store, "read", recording)
    runner = WatchedRunner(store, batch_size=10)
    runner.handoff_wait = 60  # never give up on the lane behind here: it is only slower
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop, 2.0), daemon=True)
    thread.start()
    try:
        runner.until_every_position_is(end)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    behind = [n for name, n in read_by if name == "projector-others"]
    lead = [n for name, n in read_by if name != "projector-others"]
    assert sum(lead) == end and len(lead) >= 10  # the timeline lane read the whole log, in batches
    assert len(behind) <= 1, read_by  # at most a first page, if the timeline lane was slow to start
    assert _interaction_counts(settings, messages) == [1] * len(messages)


def test_the_lane_behind_finds_its_read_models_reset_on_a_quiet_log(store, settings) -> None:
    """Caught up with the timeline lane, the lane behind waits for its next run; when no run comes,
    it still looks at its read models' positions again, so a reset of them is built again although
    nothing new is appended."""
    messages = [_sms(200 + n) for n in range(3)]
    _record(store, messages)
    end = store.max_position()
    runner = WatchedRunner(store)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        runner.until_every_position_is(end)
        ProjectionRunner(store).reset(["profile", "cases"])
        assert runner.positions()["profile"] == 0
        runner.until_every_position_is(end)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert _interaction_counts(settings, messages) == [1] * len(messages)


class _Seen:
    """A read model that keeps in memory the events handed to it (no table)."""

    schema = ""
    tables: tuple[str, ...] = ()

    def __init__(self, name: str, events: frozenset[str] | None):
        self.name = name
        if events is not None:
            self.events = events
        self.seen: list[str] = []

    def apply(self, curs, items) -> list[dict]:
        self.seen.extend(type(event).NAME for _, event, _ in items)
        return []

    def erase(self, curs, customer_ids) -> None:
        """Nothing kept."""


def test_a_read_model_is_handed_only_the_events_it_names_and_still_moves_past_every_batch(store) -> None:
    _record(store, [_sms(30 + n) for n in range(3)])
    end = store.max_position()
    messages = _Seen("test_messages_only", frozenset({InteractionRecorded.NAME}))
    queues = _Seen("test_queues_only", frozenset({QueueConfigured.NAME}))
    everything = _Seen("test_everything", None)
    runner = ProjectionRunner(store, [messages, queues, everything])

    runner.catch_up()

    assert messages.seen == [InteractionRecorded.NAME] * 3
    assert queues.seen == []
    assert len(everything.seen) == end and InteractionRecorded.NAME in everything.seen
    assert runner.positions() == {"test_messages_only": end, "test_queues_only": end, "test_everything": end}
