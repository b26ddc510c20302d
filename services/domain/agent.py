"""Agents and teams: who works the contact centre, with which role, teams, skills and capacity.

Pure domain: no I/O, no clock. Passwords are not here (the hash is kept outside the log).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from events.agent import (
    AGENT_EVENTS,
    PRESENCES,
    ROLES,
    TEAM_EVENTS,
    AgentChanged,
    AgentCreated,
    AgentDisabled,
    AgentEnabled,
    AgentPasswordChanged,
    AgentStatusChanged,
    Presence,
    Role,
    TeamCreated,
    agent_stream_id,
    team_stream_id,
)
from services.domain.aggregate import Aggregate, DomainError


class Agent(Aggregate):
    EVENTS = AGENT_EVENTS
    STATELESS = (AgentPasswordChanged,)

    def __init__(self, id: UUID):
        super().__init__(id)
        self.email = ""
        self.name = ""
        self.role: Role = "agent"
        self.teams: list[str] = []
        self.skills: list[str] = []
        self.capacity = 0
        self.status: Presence = "offline"
        self.disabled = False

    @property
    def owner_id(self) -> UUID:
        return self.id

    @classmethod
    def create(
        cls,
        email: str,
        name: str,
        role: Role,
        at: datetime,
        teams: list[str] | None = None,
        skills: list[str] | None = None,
        capacity: int = 5,
    ) -> Agent:
        email = email.strip().lower()
        if "@" not in email:
            raise DomainError("an agent's email needs an @")
        if role not in ROLES:
            raise DomainError(f"role must be one of {', '.join(ROLES)}")
        if capacity < 0:
            raise DomainError("capacity cannot be negative")
        agent = cls(agent_stream_id(email))
        agent._trigger(
            AgentCreated,
            at,
            email=email,
            name=name.strip() or email,
            role=role,
            teams=sorted(set(teams or [])),
            skills=sorted(set(skills or [])),
            capacity=capacity,
        )
        return agent

    def change(self, by: str, at: datetime, **fields: Any) -> None:
        """Changes the given fields (name, role, teams, skills, capacity); unchanged ones are left out."""
        if fields.get("role") is not None and fields["role"] not in ROLES:
            raise DomainError(f"role must be one of {', '.join(ROLES)}")
        if fields.get("capacity") is not None and fields["capacity"] < 0:
            raise DomainError("capacity cannot be negative")
        for key in ("teams", "skills"):
            if fields.get(key) is not None:
                fields[key] = sorted(set(fields[key]))
        changed = {k: v for k, v in fields.items() if v is not None and getattr(self, k) != v}
        if changed:
            self._trigger(AgentChanged, at, by=by, **changed)

    def set_status(self, status: Presence, at: datetime) -> None:
        if status not in PRESENCES:
            raise DomainError(f"status must be one of {', '.join(PRESENCES)}")
        if self.disabled and status != "offline":
            raise DomainError("a disabled agent cannot go online")
        if status != self.status:
            self._trigger(AgentStatusChanged, at, status=status)

    def password_changed(self, by: str, at: datetime) -> None:
        self._trigger(AgentPasswordChanged, at, by=by)

    def disable(self, by: str, at: datetime) -> None:
        if not self.disabled:
            if self.status != "offline":
                self._trigger(AgentStatusChanged, at, status="offline")
            self._trigger(AgentDisabled, at, by=by)

    def enable(self, by: str, at: datetime) -> None:
        if self.disabled:
            self._trigger(AgentEnabled, at, by=by)

    def when_Created(self, e: AgentCreated) -> None:
        self.email, self.name, self.role = e.email, e.name, e.role
        self.teams, self.skills, self.capacity = list(e.teams), list(e.skills), e.capacity

    def when_Changed(self, e: AgentChanged) -> None:
        for key in ("name", "role", "teams", "skills", "capacity"):
            value = getattr(e, key)
            if value is not None:
                setattr(self, key, value)

    def when_StatusChanged(self, e: AgentStatusChanged) -> None:
        self.status = e.status

    def when_Disabled(self, e: AgentDisabled) -> None:
        self.disabled = True

    def when_Enabled(self, e: AgentEnabled) -> None:
        self.disabled = False


class Team(Aggregate):
    EVENTS = TEAM_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.name = ""

    @property
    def owner_id(self) -> UUID:
        return self.id

    @classmethod
    def create(cls, name: str, at: datetime) -> Team:
        name = name.strip()
        if not name:
            raise DomainError("a team needs a name")
        team = cls(team_stream_id(name))
        team._trigger(TeamCreated, at, name=name)
        return team

    def when_Created(self, e: TeamCreated) -> None:
        self.name = e.name
