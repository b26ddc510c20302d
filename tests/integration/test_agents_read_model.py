"""The agents read model: what live projection builds from agent and team commands, a rebuild of it
builds exactly again; customers' erasure leaves it alone; credentials and sessions follow the events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from projections.agents import AgentsProjection
from projections.runner import ProjectionRunner
from services.agents import commands
from services.agents.commands import NewAgent

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _dump(database_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("proj_agents", "proj_teams")}


def _some_history(store) -> list:
    ana = commands.create_agent(
        store, NewAgent("ana@example.com", "Ana", "agent", ["billing"], ["es"], 3), "pw-ana-123", T0
    )
    bo = commands.create_agent(store, NewAgent("bo@example.com", "Bo", "supervisor"), "pw-bo-1234", T0)
    commands.create_team(store, "returns", T0 + timedelta(seconds=1))
    at = T0 + timedelta(minutes=1)
    commands.set_status(store, ana.aggregate.id, "online", at)
    commands.change_agent(store, ana.aggregate.id, "agent:x", at, teams=["billing", "vip"], capacity=4)
    commands.change_agent(store, bo.aggregate.id, "admin", at, role="admin", password="a new password")
    commands.set_status(store, bo.aggregate.id, "busy", at)
    commands.change_agent(store, bo.aggregate.id, "admin", at + timedelta(seconds=1), disabled=True)
    commands.change_agent(store, bo.aggregate.id, "admin", at + timedelta(seconds=2), disabled=False)
    commands.change_agent(store, ana.aggregate.id, "admin", at + timedelta(seconds=3), disabled=True)
    return [ana.aggregate.id, bo.aggregate.id]


def test_rebuild_equals_live(store, database_url):
    ana, bo = _some_history(store)
    live = ProjectionRunner(store, [AgentsProjection()], batch_size=3)
    live.catch_up()
    built = _dump(database_url)
    rows = {r[0]: r for r in built["proj_agents"]}
    assert rows[ana][1:9] == ("ana@example.com", "Ana", "agent", ["billing", "vip"], ["es"], 4, "offline", True)
    assert rows[bo][3] == "admin" and rows[bo][7] == "offline" and rows[bo][8] is False
    assert sorted(r[1] for r in built["proj_teams"]) == ["billing", "returns", "vip"]

    ProjectionRunner(store, [AgentsProjection()]).rebuild()
    assert _dump(database_url) == built


def test_erasing_a_customer_touches_no_agent(store, database_url):
    _some_history(store)
    ProjectionRunner(store, [AgentsProjection()]).catch_up()
    before = _dump(database_url)
    with store.datastore.transaction(commit=True) as curs:
        AgentsProjection().erase(curs, [row[0] for row in before["proj_agents"]])
    assert _dump(database_url) == before


def test_credentials_and_sessions_follow_the_events(store, database_url):
    done = commands.create_agent(store, NewAgent("cy@example.com", "Cy", "agent"), "pw-cy-12345", T0)
    agent_id = done.aggregate.id
    with psycopg.connect(database_url, autocommit=True) as conn:
        for token in (b"one", b"two"):
            conn.execute(
                "INSERT INTO sb_agent_sessions (token_hash, agent_id, expires_at, idle_seconds) "
                "VALUES (%s, %s, now() + interval '1 hour', 3600)",
                (token, agent_id),
            )
        commands.change_agent(store, agent_id, "admin", T0, role="supervisor")
        assert conn.execute("SELECT role, disabled FROM sb_agent_credentials").fetchall() == [("supervisor", False)]
        commands.change_agent(store, agent_id, "admin", T0, disabled=True)
        assert conn.execute("SELECT disabled FROM sb_agent_credentials").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM sb_agent_sessions WHERE ended_at IS NULL").fetchone() == (0,)
    with pytest.raises(commands.AgentExists):
        commands.create_agent(store, NewAgent("CY@example.com", "Cy again", "agent"), "pw-cy-12345", T0)
