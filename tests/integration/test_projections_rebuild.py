"""`projections rebuild` on a generated log: the rebuilt read models equal what live processing
built, each row is written once, the live projector and readers carry on while it runs, and an
event a projection cannot apply stops it (or, through `on_failure`, is set aside) by position."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from events.customer import InteractionRecorded
from events.interactions import Interaction
from projections.cases import CasesProjection
from projections.folds import FOLDS, TimelineFold
from projections.rebuild import SHADOW, Rebuild, RebuildError, fail_on_event
from projections.runner import _BATCH_LOCK_KEY, ProjectionRunner, all_projections
from projections.timeline import TimelineProjection
from services.core.classifier import classifier_follower
from services.core.commands import erase_customer
from services.domain.customer import Customer
from services.platform.eventstore.codec import REDACTED
from tests.benchmarks import _eventlog

pytestmark = pytest.mark.integration

READ_MODELS = {  # table → its key, for an ordered dump
    "proj_timeline": "interaction_id",
    "proj_customer_alias": "absorbed_id",
    "proj_timeline_classes": "interaction_id",
    "proj_customers": "id",
    "proj_identities": "customer_id, kind, value",
    "proj_cases": "id",
    "proj_case_notes": "note_id",
    "proj_replies": "reply_id",
}


def dump(database_url: str, tables=READ_MODELS) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {READ_MODELS[table]}").fetchall() for table in tables
        }


def differences(a: list[tuple], b: list[tuple]) -> list[tuple]:
    """What differs between two dumps of a table, a few at most: (key, column, one, other)."""
    theirs = {row[0]: row for row in b}
    out = [
        (row[0], i, x, y)
        for row in a
        if row[0] in theirs
        for i, (x, y) in enumerate(zip(row, theirs[row[0]], strict=True))
        if x != y
    ]
    out += [("only in one", row[0]) for row in a if row[0] not in theirs]
    out += [("only in the other", k) for k in set(theirs) - {row[0] for row in a}]
    return [str(x) for x in out[:4]]


def positions(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(
            conn.execute(
                "SELECT application_name, max(notification_id) FROM sb_tracking "
                "WHERE application_name LIKE 'projection:%%' GROUP BY application_name"
            ).fetchall()
        )


def shadow_exists(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (SHADOW,)).fetchone()[0] > 0


def write_log(store, database_url: str, live: ProjectionRunner) -> dict:
    """A log with merges (some chained), erasures, a duplicated interaction; projected live as it
    grows (odd batch size), the way a running projector would have seen it."""
    _eventlog.write(
        store,
        _eventlog.events(customers=80, target=7000, heavy=2, heavy_events=1200, merge_rate=0.35, seed=7),
        batch=1000,
    )
    classifier_follower(store).catch_up()  # the inbound messages classified, as the classifier role would
    live.catch_up()
    with psycopg.connect(database_url) as conn:
        survivors = [
            r[0]
            for r in conn.execute(
                "SELECT originator_id FROM sb_events WHERE topic = 'customer.Merged' ORDER BY notification_id"
            )
        ]
        first_two = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT ON (originator_id) originator_id FROM sb_events WHERE topic = 'customer.Registered' "
                "ORDER BY originator_id LIMIT 2"
            )
        ]
    # The same interaction recorded for a second customer (a redelivery after a merge, say).
    one, other = (Customer.replay(c, store.load(c)) for c in first_two)
    recorded = next(e for e in store.load(one.id) if isinstance(e, InteractionRecorded))
    other.record(
        Interaction(
            id=recorded.interaction_id,
            channel=recorded.channel,
            direction=recorded.direction,
            occurred_at=recorded.occurred_at,
            text="again",
        ),
        None,
    )
    with store.transaction() as tx:
        tx.append(other.collect())
    live.catch_up()
    erased = [
        erase_customer(store, survivors[0], "test", datetime.now(UTC)),
        erase_customer(store, first_two[1], "test", datetime.now(UTC)),
    ]
    _eventlog.write(store, _eventlog.events(customers=10, target=500, seed=8))  # life goes on after
    classifier_follower(store).catch_up()
    live.catch_up()
    return {"survivors": survivors, "erased": erased, "duplicate": recorded.interaction_id}


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "two-worker-processes"])
def test_rebuilt_read_models_equal_live_ones_and_each_row_is_written_once(store, database_url, workers):
    live = ProjectionRunner(store, batch_size=97)
    facts = write_log(store, database_url, live)
    before = dump(database_url)
    assert len(facts["survivors"]) >= 5 and before["proj_customer_alias"]
    assert any(row[8] == REDACTED for row in before["proj_timeline"]), "an erased customer's timeline"
    assert any(len(row[8]) > 1 for row in before["proj_cases"]), "cases with several tags"
    assert sum(row[0] == facts["duplicate"] for row in before["proj_timeline"]) == 1
    assert len(before["proj_timeline_classes"]) > 100, "classified messages"

    # Pages of 700 events: the workers open many of them ahead of the one being folded.
    rebuilt = Rebuild(ProjectionRunner(store), batch_size=700, workers=workers).run()

    assert rebuilt == store.max_position()
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Read before anything else touches the pages: the old rebuild left a dead version per UPDATE.
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        for table in (
            "proj_customers",
            "proj_identities",
            "proj_cases",
            "proj_case_notes",
            "proj_replies",
            "proj_customer_alias",
            "proj_timeline_classes",
        ):
            live_rows, dead = conn.execute(
                f"SELECT tuple_count, dead_tuple_count FROM pgstattuple('{table}')"
            ).fetchone()
            assert live_rows > 0 and dead == 0, (table, live_rows, dead)
        live_rows, dead = conn.execute(
            "SELECT tuple_count, dead_tuple_count FROM pgstattuple('proj_timeline')"
        ).fetchone()
        corrected = conn.execute(
            "SELECT count(*) FROM proj_timeline WHERE customer_id <> origin_customer_id OR text = %s", (REDACTED,)
        ).fetchone()[0]
        assert dead <= corrected < live_rows / 2
        # Rebuilt with room for updates in place (HOT), as the DDL asks.
        options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'proj_customers'::regclass").fetchone()[0]
        assert "fillfactor=80" in options
    after = dump(database_url)
    for table in READ_MODELS:
        assert after[table] == before[table], (table, differences(after[table], before[table]))
    assert positions(database_url) == {f"projection:{p.name}": store.max_position() for p in all_projections()}
    assert not shadow_exists(database_url)


def test_rebuilding_one_projection_leaves_the_others_alone(store, database_url):
    live = ProjectionRunner(store, batch_size=250)
    write_log(store, database_url, live)
    before = dump(database_url)
    with psycopg.connect(database_url) as conn:  # the timeline's rows stay the very same rows
        timeline_ctids = conn.execute("SELECT ctid::text FROM proj_timeline ORDER BY 1").fetchall()

    ProjectionRunner(store, [CasesProjection()]).rebuild()

    assert dump(database_url) == before
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT ctid::text FROM proj_timeline ORDER BY 1").fetchall() == timeline_ctids


def test_a_projection_without_a_fold_is_rebuilt_by_its_own_apply(store, database_url):
    live = ProjectionRunner(store, batch_size=500)
    write_log(store, database_url, live)
    before = dump(database_url)

    Rebuild(ProjectionRunner(store, batch_size=700), folds={}).run()

    assert dump(database_url) == before
    assert not shadow_exists(database_url)


def test_the_live_projector_and_readers_carry_on_while_a_rebuild_runs(store, database_url):
    live = ProjectionRunner(store, batch_size=300)
    _eventlog.write(store, _eventlog.events(customers=60, target=6000, heavy=1, heavy_events=1500, seed=11))
    live.catch_up()
    old_count = len(dump(database_url, ["proj_timeline"])["proj_timeline"])
    seen: dict = {}

    def meanwhile(_n: int) -> None:
        if seen:
            return
        with psycopg.connect(database_url) as conn:
            conn.execute("SET lock_timeout = '3s'")
            # Readers see the whole old view (nothing truncated, nothing locked) ...
            seen["rows"] = conn.execute("SELECT count(*) FROM proj_timeline").fetchone()[0]
            # ... and the live projector is not paused: it can take its batch lock and write.
            seen["lock"] = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_BATCH_LOCK_KEY,)).fetchone()[0]
        _eventlog.write(store, _eventlog.events(customers=15, target=900, merge_rate=0.3, seed=12))
        seen["projected"] = live.catch_up()

    ProjectionRunner(store, batch_size=2000).rebuild(meanwhile)

    assert seen["rows"] == old_count and seen["lock"] is True and seen["projected"] > 0
    assert live.catch_up() == 0  # the swap carried the position: nothing applied twice
    rebuilt = dump(database_url)
    assert len(rebuilt["proj_timeline"]) > old_count
    live.reset([p.name for p in all_projections()])
    live.catch_up()
    assert dump(database_url) == rebuilt  # what live processing builds from the whole log


def _position_of_an_interaction(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT notification_id FROM sb_events WHERE topic = 'customer.InteractionRecorded' "
            "ORDER BY notification_id OFFSET 100 LIMIT 1"
        ).fetchone()[0]


def test_an_event_a_fold_cannot_apply_stops_the_rebuild_naming_its_position(store, database_url):
    live = ProjectionRunner(store, batch_size=500)
    _eventlog.write(store, _eventlog.events(customers=30, target=2000, seed=13))
    live.catch_up()
    before = dump(database_url)
    bad = _position_of_an_interaction(database_url)

    class Exploding(TimelineFold):
        def apply(self, position, event, redacted):
            if position == bad:
                raise ValueError("cannot")
            super().apply(position, event, redacted)

    with pytest.raises(
        RebuildError,
        match=rf"'timeline' could not apply the event at position {bad} "
        r"\(customer.InteractionRecorded, stream [0-9a-f-]{36}\): ValueError",
    ):
        Rebuild(ProjectionRunner(store), folds={**FOLDS, "timeline": Exploding}, on_failure=fail_on_event).run()
    assert dump(database_url) == before
    assert not shadow_exists(database_url)

    # The seam a quarantine hooks into: told about the event, it may record it and let the rebuild go on.
    set_aside = []
    Rebuild(
        ProjectionRunner(store),
        folds={**FOLDS, "timeline": Exploding},
        on_failure=lambda name, item, error: set_aside.append((name, item[0], type(error).__name__)),
    ).run()
    assert set_aside == [("timeline", bad, "ValueError")]
    after = dump(database_url)
    assert len(after["proj_timeline"]) == len(before["proj_timeline"]) - 1
    assert after["proj_cases"] == before["proj_cases"]

    # By default the event is quarantined as the live projector would, in the swap's transaction;
    # a rebuild replaces what the old views had set aside (a second one does not count it twice).
    runner = ProjectionRunner(store)
    for _ in range(2):
        Rebuild(runner, folds={**FOLDS, "timeline": Exploding}).run()
        assert [(q.consumer, q.position, q.event_type, q.attempts) for q in runner.quarantined()] == [
            ("projection:timeline", bad, "customer.InteractionRecorded", 1)
        ]
    assert dump(database_url) == after


def test_an_event_a_projection_cannot_apply_is_named_on_the_apply_path_too(store, database_url):
    live = ProjectionRunner(store, batch_size=500)
    _eventlog.write(store, _eventlog.events(customers=30, target=2000, seed=14))
    live.catch_up()
    before = dump(database_url)
    bad = _position_of_an_interaction(database_url)

    class ExplodingTimeline(TimelineProjection):
        def apply(self, curs, items):
            if any(position == bad for position, _, _ in items):
                raise ValueError("cannot")
            return super().apply(curs, items)

    with pytest.raises(RebuildError, match=f"at position {bad} "):
        Rebuild(ProjectionRunner(store, [ExplodingTimeline()]), folds={}, on_failure=fail_on_event).run()
    assert dump(database_url) == before
    assert not shadow_exists(database_url)


def test_a_worker_process_that_dies_stops_the_rebuild_and_nothing_is_swapped(store, database_url):
    live = ProjectionRunner(store, batch_size=500)
    _eventlog.write(store, _eventlog.events(customers=30, target=3000, seed=15))
    live.catch_up()
    before, where = dump(database_url), positions(database_url)
    rebuild = Rebuild(ProjectionRunner(store), batch_size=200, workers=2)
    killed = []

    def kill_a_worker(_n: int) -> None:
        if not killed:  # the first page is folded: the workers are opening the next ones
            killed.append(rebuild.pages.a_worker_pid())
            os.kill(killed[0], signal.SIGKILL)

    rebuild.progress = kill_a_worker
    with pytest.raises(RebuildError, match="a process opening the log's pages ended before answering"):
        rebuild.run()
    assert killed
    assert dump(database_url) == before
    assert positions(database_url) == where
    assert not shadow_exists(database_url)
    with pytest.raises(ProcessLookupError):  # the pool's processes are gone, none left behind
        os.kill(killed[0], 0)

    Rebuild(ProjectionRunner(store), batch_size=200, workers=2).run()  # and the next rebuild runs
    assert dump(database_url) == before


def test_one_rebuild_at_a_time(store, database_url):
    from projections.rebuild import REBUILD_LOCK_KEY  # noqa: PLC0415

    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (REBUILD_LOCK_KEY,))
        with pytest.raises(RebuildError, match="another rebuild"):
            ProjectionRunner(store).rebuild()
        # Released here, not by closing: a closed session's locks go when its backend has exited.
        conn.execute("SELECT pg_advisory_unlock(%s)", (REBUILD_LOCK_KEY,))
    ProjectionRunner(store).rebuild()  # and once it is over, a rebuild runs


def test_generated_log_has_what_the_benchmark_promises():
    source = _eventlog.events(customers=400, target=20_000, heavy=2, heavy_events=2_000, seed=3)
    per_stream: dict[uuid.UUID, int] = {}
    versions: dict[uuid.UUID, int] = {}
    total = 0
    while (group := source()) is not None:
        total += len(group)
        for e in group:
            per_stream[e.customer_id] = per_stream.get(e.customer_id, 0) + 1
            # Each aggregate's events in its own order, as a real log has them.
            assert e.version == versions.get(e.stream_id, 0) + 1, (e.stream_id, e.version)
            versions[e.stream_id] = e.version
    assert 17_000 <= total <= 23_000
    heavy = sorted(per_stream.values())[-2:]
    assert all(1_500 <= n <= 3_000 for n in heavy), heavy
