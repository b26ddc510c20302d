"""Events written by an older version of a class keep loading: stored as they were, read as they are.

`CaseOpened` v1 stored `priority` as a number from 1 (most urgent) to 5; v2 names the level. The v1
class is defined here exactly as it was, and its events go through the real codec and event store
into PostgreSQL, written by a registry that still maps "case.Opened" to v1. The current code then
reads them as v2 everywhere: loading, the Case aggregate, the cases projection and replay.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest

from events.base import DomainEvent, personal
from events.case import CaseMessageAdded, CaseOpened, CaseResolved, upcast_case_opened_v1
from events.registry import REGISTRY, EventRegistry
from projections.cases import CasesProjection
from projections.runner import ProjectionRunner
from services.domain.case import Case
from services.platform.eventstore.codec import EventCodec
from services.platform.eventstore.recorder import verify_chain
from services.platform.eventstore.store import EventStore
from services.replay import replay_events

pytestmark = pytest.mark.integration


class CaseOpenedV1(DomainEvent, frozen=True, kw_only=True):
    """`CaseOpened` as the first release wrote it."""

    NAME = "case.Opened"
    VERSION = 1
    PERSONAL = personal("thread_key")
    channel: str
    thread_key: str | None
    queue: str
    priority: int  # 1 (most urgent) .. 5
    sla_due_at: datetime | None


def _v1_registry() -> EventRegistry:
    registry = EventRegistry()
    for cls in REGISTRY:
        registry.register(CaseOpenedV1 if cls.NAME == "case.Opened" else cls)
    return registry


EXPECTED = {1: "urgent", 2: "high", 3: "normal", 4: "low", 5: "low"}
AT = datetime(2023, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def old_cases(store: EventStore) -> dict[int, tuple[uuid.UUID, uuid.UUID]]:
    """One case per v1 priority, each opened, messaged and (the first) resolved by the old release."""
    old = EventStore(store.datastore, store.master, codec=EventCodec(registry=_v1_registry()))
    cases: dict[int, tuple[uuid.UUID, uuid.UUID]] = {}
    events: list[DomainEvent] = []
    for priority in EXPECTED:
        case_id, customer_id = uuid.uuid4(), uuid.uuid4()
        cases[priority] = (case_id, customer_id)
        common = {"stream_id": case_id, "customer_id": customer_id}
        events.append(
            CaseOpenedV1(
                id=uuid.uuid4(),
                version=1,
                occurred_at=AT,
                channel="sms",
                thread_key=f"sms:+4477009000{priority}",
                queue="sms",
                priority=priority,
                sla_due_at=AT + timedelta(hours=priority),
                **common,
            )
        )
        events.append(
            CaseMessageAdded(
                id=uuid.uuid4(),
                version=2,
                occurred_at=AT,
                interaction_id=uuid.uuid4(),
                direction="inbound",
                channel="sms",
                **common,
            )
        )
        if priority == 1:
            events.append(
                CaseResolved(id=uuid.uuid4(), version=3, occurred_at=AT + timedelta(hours=1), by="agent-1", **common)
            )
    with old.transaction() as tx:
        tx.append(events)
    # What the old release reads back is its own class, with the number.
    opened = old.load(cases[2][0])[0]
    assert type(opened) is CaseOpenedV1 and opened.priority == 2
    return cases


def _stored_state(store: EventStore, case_id: uuid.UUID) -> dict:
    stored = store.recorder.select_events(case_id, lte=1)[0]
    return msgspec.json.decode(stored.state)


def test_the_log_keeps_what_the_old_release_wrote(store: EventStore, settings, old_cases) -> None:
    for priority, (case_id, _) in old_cases.items():
        state = _stored_state(store, case_id)
        assert state["v"] == 1 and state["d"]["priority"] == priority
        assert "thread_key" not in state["d"] and state["p"]  # still sealed with the customer's key
    with psycopg.connect(settings.database_url) as conn:
        assert verify_chain(conn, store.master.chain_key) == 11


def test_loading_upcasts_to_the_named_priority(store: EventStore, old_cases) -> None:
    for priority, (case_id, customer_id) in old_cases.items():
        opened = store.load(case_id)[0]
        assert type(opened) is CaseOpened
        assert opened.priority == EXPECTED[priority]
        assert opened.thread_key == f"sms:+4477009000{priority}"  # decrypted, then upcast
        assert opened.customer_id == customer_id and opened.interaction_id is None  # added later, defaulted
        assert opened.sla_due_at == AT + timedelta(hours=priority)


def test_the_case_aggregate_replays_old_events(store: EventStore, old_cases) -> None:
    for priority, (case_id, customer_id) in old_cases.items():
        case = Case.replay(case_id, store.load(case_id))
        assert case.priority == EXPECTED[priority]
        assert case.customer_id == customer_id and case.thread_key == f"sms:+4477009000{priority}"
        assert case.status == ("resolved" if priority == 1 else "open")
    # And new events go on top of the old ones.
    case_id = old_cases[4][0]
    case = Case.replay(case_id, store.load(case_id))
    case.prioritize("high", "agent-2", AT + timedelta(days=1))
    with store.transaction() as tx:
        tx.append(case.collect())
    assert Case.replay(case_id, store.load(case_id)).priority == "high"


def test_the_cases_projection_shows_the_named_priority(store: EventStore, settings, old_cases) -> None:
    runner = ProjectionRunner(store, [CasesProjection()])
    assert runner.catch_up() == 11
    with psycopg.connect(settings.database_url) as conn:
        rows = dict(conn.execute("SELECT id, priority FROM proj_cases").fetchall())
        resolved = conn.execute("SELECT status FROM proj_cases WHERE id = %s", (old_cases[1][0],)).fetchone()[0]
    assert rows == {case_id: EXPECTED[p] for p, (case_id, _) in old_cases.items()}
    assert resolved == "resolved"


def test_replay_writes_the_current_version(store: EventStore, settings, old_cases) -> None:
    out = io.BytesIO()
    replay_events(store, out, conninfo=settings.database_url)
    opened = [msgspec.json.decode(line) for line in out.getvalue().splitlines()]
    opened = [line for line in opened if line["type"] == "case.Opened"]
    assert len(opened) == 5
    by_case = {uuid.UUID(line["stream_id"]): line["payload"] for line in opened}
    for priority, (case_id, _) in old_cases.items():
        assert by_case[case_id]["priority"] == EXPECTED[priority]
        assert by_case[case_id]["thread_key"] == f"sms:+4477009000{priority}"


def test_an_erased_customers_old_event_upcasts_with_its_fields_redacted(store: EventStore, old_cases) -> None:
    case_id, customer_id = old_cases[3]
    store.erase_keys([customer_id])
    opened = store.load(case_id)[0]
    assert type(opened) is CaseOpened and opened.priority == "normal" and opened.thread_key is None


def test_the_upcaster_alone() -> None:
    assert [upcast_case_opened_v1({"priority": n})["priority"] for n in (1, 2, 3, 4, 5)] == [
        "urgent",
        "high",
        "normal",
        "low",
        "low",
    ]
    assert REGISTRY.upcast("case.Opened", 2, {"priority": "high"}) == {"priority": "high"}
