"""Events of the people who work the contact centre: agents and teams.

An agent's stream id is `agent_stream_id(email)` and a team's `team_stream_id(name)`, so that a
second `agent create` of one address is a version conflict, not a second agent. An agent's email
and name are personal data sealed with the agent's own key (`customer_id` of these events is the
agent's id: the key's owner, as a customer is for its own events).

Passwords never enter the log: the argon2id hash lives in a table of its own (`sb_agent_credentials`),
and the log records only that it changed.
"""

from __future__ import annotations

import uuid
from typing import Literal, get_args
from uuid import UUID

from events.base import DomainEvent, personal

Role = Literal["agent", "supervisor", "auditor", "admin"]
Presence = Literal["online", "busy", "offline"]

ROLES: tuple[Role, ...] = get_args(Role)
PRESENCES: tuple[Presence, ...] = get_args(Presence)

_AGENT_NAMESPACE = uuid.UUID("5d7a9c3e-1b2f-4e6a-8c0d-3f1e2a4b6c8d")


def agent_stream_id(email: str) -> UUID:
    return uuid.uuid5(_AGENT_NAMESPACE, "agent:" + email.strip().lower())


def team_stream_id(name: str) -> UUID:
    return uuid.uuid5(_AGENT_NAMESPACE, "team:" + name.strip())


class AgentCreated(DomainEvent, frozen=True, kw_only=True):
    NAME = "agent.Created"
    PERSONAL = personal("email", "name")
    email: str
    name: str
    role: Role
    teams: list[str] = []
    skills: list[str] = []
    capacity: int = 5


class AgentChanged(DomainEvent, frozen=True, kw_only=True):
    """The fields given changed (None: unchanged)."""

    NAME = "agent.Changed"
    PERSONAL = personal("name")
    name: str | None = None
    role: Role | None = None
    teams: list[str] | None = None
    skills: list[str] | None = None
    capacity: int | None = None
    by: str


class AgentStatusChanged(DomainEvent, frozen=True, kw_only=True):
    """Presence: routing assigns cases only to online agents; offline hands their cases back."""

    NAME = "agent.StatusChanged"
    status: Presence


class AgentPasswordChanged(DomainEvent, frozen=True, kw_only=True):
    NAME = "agent.PasswordChanged"
    by: str


class AgentDisabled(DomainEvent, frozen=True, kw_only=True):
    """Every session of the agent ended; they can no longer sign in."""

    NAME = "agent.Disabled"
    by: str


class AgentEnabled(DomainEvent, frozen=True, kw_only=True):
    NAME = "agent.Enabled"
    by: str


class TeamCreated(DomainEvent, frozen=True, kw_only=True):
    NAME = "team.Created"
    name: str


AGENT_EVENTS: tuple[type[DomainEvent], ...] = (
    AgentCreated,
    AgentChanged,
    AgentStatusChanged,
    AgentPasswordChanged,
    AgentDisabled,
    AgentEnabled,
)
TEAM_EVENTS: tuple[type[DomainEvent], ...] = (TeamCreated,)
