"""The metrics read model (projections/metrics.py): built live from the events, what it holds per case
(the assignee's teams at assignment, transfers, first reply, last resolution, SLA outcomes, CSAT), and
`projections rebuild` (its fold, and the apply path) gives exactly what live processing built. The
search indexes come back with a rebuild too."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from events.base import DomainEvent
from projections.folds import FOLDS
from projections.metrics import MetricsProjection
from projections.rebuild import Rebuild
from projections.runner import ProjectionRunner
from services.domain.agent import Agent
from services.domain.case import Case
from tests.benchmarks import _eventlog

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TABLES = {"proj_case_metrics": "case_id", "proj_metrics_sla": "event_id", "proj_metrics_agents": "agent_id"}


def dump(database_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall() for t, key in TABLES.items()}


def append(store, events: list[DomainEvent]) -> None:
    with store.transaction() as tx:
        tx.append(events)


def agents_log(rng: random.Random) -> tuple[list[Agent], list[DomainEvent]]:
    agents = [
        Agent.create("ana@example.com", "Ana", "agent", T0, teams=["billing"]),
        Agent.create("bo@example.com", "Bo", "agent", T0, teams=["billing", "tech"]),
        Agent.create("cy@example.com", "Cy", "supervisor", T0, teams=[]),
    ]
    return agents, [e for a in agents for e in a.collect()]


def case_life(rng: random.Random, agents: list[Agent], i: int) -> list[DomainEvent]:
    """One case through what agents, the SLA timer and customers do to it."""
    at = T0 + timedelta(hours=i * 5 + rng.randint(0, 4))
    channel = rng.choice(("email", "sms", "chat", "whatsapp"))
    case = Case.open(uuid.uuid4(), uuid.uuid4(), channel, None, at, interaction_id=uuid.uuid4())
    case.start_sla("first_response", "standard", at + timedelta(minutes=30), at)
    if rng.random() < 0.7:
        case.assign(str(rng.choice(agents).id), "routing", at + timedelta(minutes=1))
    if rng.random() < 0.2:
        case.transfer(rng.choice(("vip", "returns")), "supervisor", at + timedelta(minutes=2))
    if rng.random() < 0.8:
        reply_at = at + timedelta(minutes=rng.choice((5, 20, 45, 90)))
        if reply_at > at + timedelta(minutes=30) and rng.random() < 0.8:
            case.breach_sla("first_response", at + timedelta(minutes=31))
        case.request_reply(uuid.uuid4(), "on it", "agent", reply_at)
        case.add_message(uuid.uuid4(), "outbound", channel, reply_at + timedelta(seconds=3))
        case.fulfil_sla("first_response", reply_at)
        case.start_sla("resolution", "standard", reply_at + timedelta(hours=4), reply_at)
    else:
        case.add_message(uuid.uuid4(), "inbound", channel, at + timedelta(minutes=3))
    if rng.random() < 0.6:
        done = at + timedelta(hours=rng.randint(1, 6))
        if rng.random() < 0.3:
            case.breach_sla("resolution", done)
        case.fulfil_sla("resolution", done)
        case.resolve("agent", done)
        if rng.random() < 0.25:
            case.reopen("customer", done + timedelta(hours=1))
            case.resolve("agent", done + timedelta(hours=2))
        if rng.random() < 0.5:
            case.record_csat(rng.randint(1, 5), done + timedelta(hours=3))
    return case.collect()


def write_log(store, live: ProjectionRunner) -> dict:
    rng = random.Random(5)
    agents, events = agents_log(rng)
    append(store, events)
    lives = [case_life(rng, agents, i) for i in range(90)]
    # Interleaved as live traffic is, and projected as it grows.
    for chunk in range(0, 90, 30):
        append(store, _eventlog._interleave(rng, lives[chunk : chunk + 30]))
        if chunk == 30:
            # Bo leaves billing: cases assigned to Bo from now on count for tech only.
            agents[1].change("admin", T0 + timedelta(days=9), teams=["tech"])
            append(store, agents[1].collect())
        live.catch_up()
    # The rest of the centre's life, as the other read models see it.
    _eventlog.write(store, _eventlog.events(customers=20, target=1500, seed=3))
    late = Case.open(uuid.uuid4(), uuid.uuid4(), "email", None, T0 + timedelta(days=30), interaction_id=uuid.uuid4())
    late.assign(str(agents[1].id), "routing", T0 + timedelta(days=30, minutes=1))
    append(store, late.collect())
    live.catch_up()
    return {"agents": agents, "late": late.id}


def test_the_live_read_model_holds_each_cases_facts(store, database_url):
    live = ProjectionRunner(store, [MetricsProjection()], batch_size=53)
    facts = write_log(store, live)
    bo = str(facts["agents"][1].id)
    with psycopg.connect(database_url) as conn:
        teams = dict(conn.execute("SELECT agent_id, teams FROM proj_metrics_agents").fetchall())
        late = conn.execute(
            "SELECT assignee, teams FROM proj_case_metrics WHERE case_id = %s", (facts["late"],)
        ).fetchone()
        bo_cases = conn.execute(
            "SELECT DISTINCT teams FROM proj_case_metrics WHERE assignee = %s ORDER BY teams", (bo,)
        ).fetchall()
        outcomes = conn.execute(
            "SELECT target, met, count(*) FROM proj_metrics_sla GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        resolved_reopened = conn.execute(
            "SELECT count(*) FROM proj_case_metrics WHERE resolved_at IS NOT NULL AND first_response_at IS NOT NULL "
            "AND resolved_at > opened_at"
        ).fetchone()[0]
        unassigned = conn.execute("SELECT count(*) FROM proj_case_metrics WHERE assignee IS NULL").fetchone()[0]
        policies = conn.execute("SELECT DISTINCT sla_policy FROM proj_case_metrics").fetchall()
        csat = conn.execute("SELECT count(csat), min(csat), max(csat) FROM proj_case_metrics").fetchone()
        transferred = conn.execute(
            "SELECT count(*) FROM proj_case_metrics WHERE queue IN ('vip', 'returns')"
        ).fetchone()
    assert teams[bo] == ["tech"] and teams[str(facts["agents"][0].id)] == ["billing"]
    assert late == (bo, ["tech"])
    assert bo_cases == [(["billing", "tech"],), (["tech"],)], "the teams when assigned, not the teams now"
    assert {(t, m) for t, m, _ in outcomes} == {
        ("first_response", False),
        ("first_response", True),
        ("resolution", False),
        ("resolution", True),
    }
    assert resolved_reopened > 0 and unassigned > 0 and transferred[0] > 0
    assert {p for (p,) in policies} == {"standard", None}, "the generated traffic runs no SLA clock"
    assert csat[0] > 0 and 1 <= csat[1] <= csat[2] <= 5


def test_a_rebuild_equals_live_processing_through_the_fold_and_through_apply(store, database_url):
    live = ProjectionRunner(store, batch_size=97)
    write_log(store, live)
    before = dump(database_url)
    assert all(before.values())

    assert ProjectionRunner(store, [MetricsProjection()]).rebuild() == store.max_position()
    assert dump(database_url) == before

    Rebuild(ProjectionRunner(store, [MetricsProjection()], batch_size=700), folds={}).run()
    assert dump(database_url) == before
    assert "metrics" in FOLDS


def test_the_search_indexes_come_back_with_a_rebuild(store, database_url):
    live = ProjectionRunner(store, batch_size=500)
    _eventlog.write(store, _eventlog.events(customers=10, target=400, seed=4))
    live.catch_up()
    query = "SELECT interaction_id FROM proj_timeline WHERE search_vector @@ 'cafe:*'::tsquery ORDER BY 1"
    with psycopg.connect(database_url) as conn:
        before = conn.execute(query).fetchall()
    assert before, "the generated log's texts mention café"

    ProjectionRunner(store).rebuild()

    with psycopg.connect(database_url) as conn:
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%search%' OR indexname LIKE '%words%'"
            )
        }
        # The timeline's words are a stored column (proj_timeline.search_vector) with its own GIN index.
        assert indexes == {"proj_timeline_words_idx", "proj_customers_search_idx", "proj_identities_search_idx"}
        assert conn.execute(query).fetchall() == before
