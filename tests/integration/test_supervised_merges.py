"""Merges a supervisor decides, on a real PostgreSQL: racing the core on the same customers they fork
and lose nothing, and the suggestions' read model rebuilds to what live processing built."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from events.interactions import Identity, Interaction, interaction_id
from projections.merge_suggestions import MergeSuggestionsProjection, merge_suggestion_id
from projections.runner import ProjectionRunner
from services.bootstrap import Switchboard
from services.core import merging
from services.core.processor import CoreProcessor

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def message(*identities: Identity, at: int = 0, text: str = "hello") -> Interaction:
    provider_id = uuid.uuid4().hex
    return Interaction(
        id=interaction_id("chat", provider_id),
        channel="chat",
        direction="inbound",
        occurred_at=T0 + timedelta(seconds=at),
        identities=list(identities),
        text=text,
        provider_message_id=provider_id,
    )


def rows(database_url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def test_a_merge_racing_the_core_on_both_customers_forks_and_loses_nothing(store, settings, database_url):
    core = CoreProcessor(store)
    email = Identity("email", "race@example.org")
    a = message(Identity("chat", "s-a"), Identity("external", "u-a"), email, at=0, text="a 0")
    b = message(Identity("chat", "s-b"), Identity("external", "u-b"), email, at=1, text="b 0")
    core.process([(a, 1), (b, 2)])
    registered = [
        r[0]
        for r in rows(
            database_url,
            "SELECT originator_id FROM sb_events WHERE topic = 'customer.Registered' ORDER BY notification_id",
        )
    ]
    assert len(registered) == 2
    first, second = registered
    later = [
        message(Identity("chat", "s-a" if n % 2 else "s-b"), at=10 + n, text=f"{'a' if n % 2 else 'b'} {n}")
        for n in range(1, 201)
    ]
    started = threading.Event()
    errors: list[BaseException] = []

    def run_core() -> None:
        try:
            for start in range(0, len(later), 5):
                outcome = core.process([(i, 3 + start + k) for k, i in enumerate(later[start : start + 5])])
                assert not outcome.poison and not outcome.failed, outcome
                started.set()
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=run_core)
    thread.start()
    started.wait(30)
    # A supervisor's process: a store of its own, on the same database, while the core writes on.
    supervisor = Switchboard(settings).open_store()
    try:
        done = merging.merge_by_hand(supervisor, first, second, "supervisor-1", datetime.now(UTC))
    finally:
        thread.join(120)
        supervisor.datastore.close()
    assert not errors, errors
    assert (done.survivor_id, done.absorbed_id) == (first, second)

    # Every interaction recorded once, every stream's versions 1..n without a gap or a fork.
    assert rows(database_url, "SELECT count(*) FROM sb_events WHERE topic = 'customer.InteractionRecorded'") == [(202,)]
    for stream, versions in rows(
        database_url,
        "SELECT originator_id, array_agg(originator_version ORDER BY originator_version) FROM sb_events "
        "GROUP BY originator_id",
    ):
        assert versions == list(range(1, len(versions) + 1)), stream
    # Nothing was recorded on the absorbed customer after it was absorbed.
    [(absorbed_at,)] = rows(
        database_url,
        "SELECT originator_version FROM sb_events WHERE topic = 'customer.Absorbed' AND originator_id = %s",
        second,
    )
    assert rows(
        database_url,
        "SELECT count(*) FROM sb_events WHERE originator_id = %s AND originator_version > %s",
        second,
        absorbed_at,
    ) == [(0,)]
    assert rows(database_url, "SELECT DISTINCT customer_id FROM sb_identities") == [(first,)]
    ProjectionRunner(store).catch_up()
    timeline = rows(database_url, "SELECT customer_id, text FROM proj_timeline")
    assert {c for c, _ in timeline} == {first}
    assert sorted(t for _, t in timeline) == sorted(["a 0", "b 0", *(i.text for i in later)])


def test_the_suggestions_read_model_rebuilds_to_what_live_processing_built(store, database_url):
    core = CoreProcessor(store)
    live = ProjectionRunner(store, batch_size=7)
    pairs = []
    for n in range(6):
        email = Identity("email", f"pair{n}@example.org")
        a = message(Identity("chat", f"p{n}a"), Identity("external", f"p{n}a"), email, at=n * 10)
        b = message(Identity("chat", f"p{n}b"), Identity("external", f"p{n}b"), email, at=n * 10 + 1)
        core.process([(a, 100 + 2 * n), (b, 101 + 2 * n)])
        live.catch_up()
        pairs.append(
            [
                r[0]
                for r in rows(
                    database_url,
                    "SELECT originator_id FROM sb_events WHERE topic = 'customer.Registered' "
                    "ORDER BY notification_id DESC LIMIT 2",
                )
            ][::-1]
        )
    now = datetime.now(UTC)
    merging.resolve_suggestion(store, *pairs[0], True, "sup", now)
    merging.resolve_suggestion(store, *pairs[1], False, "sup", now)
    merging.merge_by_hand(store, pairs[2][1], pairs[2][0], "sup", now)  # merged without a verdict
    merging.resolve_suggestion(store, *pairs[3], True, "sup", now)
    live.catch_up()

    def table() -> list[tuple]:
        return rows(database_url, "SELECT * FROM proj_merge_suggestions ORDER BY id")

    before = table()
    statuses = {r[0]: r[5] for r in before}
    expected = ["accepted", "rejected", "merged", "accepted", "pending", "pending"]
    assert [statuses[merge_suggestion_id(*p)] for p in pairs] == expected
    ProjectionRunner(store, [MergeSuggestionsProjection()], batch_size=5).rebuild()
    assert table() == before
