"""Agents and teams as the API lists them: who works here, with which role, teams, skills, capacity
and presence. (`open_assigned` is counted from proj_cases when read, not kept here.)

Agents are not customers: erasing a customer changes nothing in this view (an agent's own data is
sealed with a key of their own, which customer erasure never touches), so `erase` does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from events.agent import (
    AgentChanged,
    AgentCreated,
    AgentDisabled,
    AgentEnabled,
    AgentPasswordChanged,
    AgentStatusChanged,
    TeamCreated,
)
from projections.base import Item


class AgentsProjection:
    name = "agents"
    tables = ("proj_agents", "proj_teams")
    events = frozenset(
        e.NAME
        for e in (
            AgentCreated,
            AgentChanged,
            AgentStatusChanged,
            AgentDisabled,
            AgentEnabled,
            TeamCreated,
            AgentPasswordChanged,
        )
    )
    schema = """
    CREATE TABLE IF NOT EXISTS proj_agents (
        id uuid PRIMARY KEY,
        email text NOT NULL,
        name text NOT NULL,
        role text NOT NULL,
        teams text[] NOT NULL DEFAULT '{}',
        skills text[] NOT NULL DEFAULT '{}',
        capacity int NOT NULL,
        status text NOT NULL DEFAULT 'offline',
        disabled boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS proj_agents_created_idx ON proj_agents (created_at DESC, id DESC);
    CREATE TABLE IF NOT EXISTS proj_teams (
        id uuid PRIMARY KEY,
        name text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        # Agents' events are few (people, not traffic): one statement each is enough.
        for _position, event, _redacted in items:
            kind = type(event)
            if kind is AgentCreated:
                curs.execute(
                    "INSERT INTO proj_agents (id, email, name, role, teams, skills, capacity, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (
                        event.stream_id,
                        event.email,
                        event.name,
                        event.role,
                        list(event.teams),
                        list(event.skills),
                        event.capacity,
                        event.occurred_at,
                        event.occurred_at,
                    ),
                )
            elif kind is AgentChanged:
                curs.execute(
                    "UPDATE proj_agents SET name = COALESCE(%s, name), role = COALESCE(%s, role), "
                    "teams = COALESCE(%s::text[], teams), skills = COALESCE(%s::text[], skills), "
                    "capacity = COALESCE(%s, capacity), updated_at = %s WHERE id = %s",
                    (
                        event.name,
                        event.role,
                        event.teams,
                        event.skills,
                        event.capacity,
                        event.occurred_at,
                        event.stream_id,
                    ),
                )
            elif kind is AgentStatusChanged:
                curs.execute(
                    "UPDATE proj_agents SET status = %s, updated_at = %s WHERE id = %s",
                    (event.status, event.occurred_at, event.stream_id),
                )
            elif kind is AgentDisabled or kind is AgentEnabled:
                curs.execute(
                    "UPDATE proj_agents SET disabled = %s, updated_at = %s WHERE id = %s",
                    (kind is AgentDisabled, event.occurred_at, event.stream_id),
                )
            elif kind is TeamCreated:
                curs.execute(
                    "INSERT INTO proj_teams (id, name, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (event.stream_id, event.name, event.occurred_at),
                )
            elif kind is AgentPasswordChanged:
                continue  # nothing of it is shown
        return []

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Agents are not customers: nothing here belongs to a customer."""
