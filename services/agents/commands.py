"""Agent and team commands: load, call the domain (services/domain/agent.py), save.

What a request must know fresh about an agent (the password hash, the role, whether they are
disabled) is kept in `sb_agent_credentials` and written in the same transaction as the event that
changes it; disabling an agent ends every session of theirs in that transaction too. So a role
change or a disable takes effect on the very next request, with no read model in between.

Synchronous (the event store is): the HTTP layer calls these in a worker thread, the CLI directly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from events.agent import Presence, Role, agent_stream_id, team_stream_id
from services.agents.passwords import hash_password
from services.core.commands import Done, NotFound, append_new, load
from services.domain.agent import Agent, Team
from services.platform.eventstore.store import ConcurrencyError, EventStore, Transaction

MAX_NAME = 200


class AgentExists(Exception):
    """An agent with this email exists already."""


class TeamExists(Exception):
    """A team of this name exists already."""


@dataclass
class NewAgent:
    email: str
    name: str
    role: Role
    teams: Sequence[str] = ()
    skills: Sequence[str] = ()
    capacity: int = 5


def load_agent(store: EventStore, agent_id: UUID) -> Agent:
    return load(store, Agent, agent_id, first="agent.Created")


def ensure_teams(store: EventStore, names: Sequence[str], at: datetime) -> int:
    """Creates the teams not there yet; returns the last position written (0: none)."""
    position = 0
    for name in names:
        if store.load(team_stream_id(name)):
            continue
        try:
            position = append_new(store, Team.create(name, at))
        except ConcurrencyError:
            pass  # created meanwhile by someone else: what we wanted
    return position


def create_team(store: EventStore, name: str, at: datetime) -> Done[Team]:
    team = Team.create(name, at)
    if store.load(team.id):
        raise TeamExists(f"a team named {team.name!r} exists")
    try:
        position = append_new(store, team)
    except ConcurrencyError:
        raise TeamExists(f"a team named {team.name!r} exists") from None
    return Done(team, position)


def create_agent(store: EventStore, new: NewAgent, password: str, at: datetime) -> Done[Agent]:
    """Records agent.Created (creating the teams named that do not exist) and stores the password's
    hash in the same transaction. AgentExists when the email is taken."""
    password_hash = hash_password(password)
    agent = Agent.create(new.email, new.name, new.role, at, list(new.teams), list(new.skills), new.capacity)
    if store.load(agent.id):
        raise AgentExists("an agent with this email exists")
    ensure_teams(store, agent.teams, at)
    try:
        with store.transaction() as tx:
            tx.append(agent.collect())
            tx.execute(
                "INSERT INTO sb_agent_credentials (agent_id, hash, role) VALUES (%s, %s, %s)",
                (agent.id, password_hash, agent.role),
            )
    except ConcurrencyError:
        raise AgentExists("an agent with this email exists") from None
    return Done(agent, tx.positions[-1])


def run_agent(
    store: EventStore,
    agent_id: UUID,
    command: Callable[[Agent], None],
    also: Callable[[Transaction, Agent], None] | None = None,
    attempts: int = 5,
) -> Done[Agent]:
    """Loads the agent, calls `command`, and appends what it triggered together with `also(tx,
    agent)` (the credentials, the sessions); retries from a fresh load when another writer won."""
    for attempt in range(attempts):
        agent = load_agent(store, agent_id)
        command(agent)
        events = agent.collect()
        if not events and also is None:
            return Done(agent, store.max_position())
        try:
            with store.transaction() as tx:
                if events:
                    tx.append(events)
                if also is not None:
                    also(tx, agent)
            return Done(agent, tx.positions[-1] if tx.positions else store.max_position())
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


def _sync_access(tx: Transaction, agent: Agent) -> None:
    """The fresh copy of role and disabled a request is authorised by; a disabled agent's sessions end."""
    tx.execute(
        "UPDATE sb_agent_credentials SET role = %s, disabled = %s, updated_at = now() WHERE agent_id = %s",
        (agent.role, agent.disabled, agent.id),
    )
    if agent.disabled:
        tx.execute(
            "UPDATE sb_agent_sessions SET ended_at = now() WHERE agent_id = %s AND ended_at IS NULL", (agent.id,)
        )


def change_agent(
    store: EventStore,
    agent_id: UUID,
    by: str,
    at: datetime,
    *,
    password: str | None = None,
    disabled: bool | None = None,
    **fields: Any,
) -> Done[Agent]:
    """Changes name, role, teams, skills, capacity (None: unchanged), the password and whether the
    agent is disabled: the events, the credentials and (on disable) the end of their sessions in one
    transaction. Teams named that do not exist yet are created first."""
    password_hash = hash_password(password) if password is not None else None
    if fields.get("teams"):
        ensure_teams(store, fields["teams"], at)

    def command(agent: Agent) -> None:
        agent.change(by, at, **fields)
        if password_hash is not None:
            agent.password_changed(by, at)
        if disabled is True:
            agent.disable(by, at)
        elif disabled is False:
            agent.enable(by, at)

    def also(tx: Transaction, agent: Agent) -> None:
        if password_hash is not None:
            tx.execute(
                "UPDATE sb_agent_credentials SET hash = %s, updated_at = now() WHERE agent_id = %s",
                (password_hash, agent.id),
            )
        _sync_access(tx, agent)

    return run_agent(store, agent_id, command, also)


def set_status(store: EventStore, agent_id: UUID, status: Presence, at: datetime) -> Done[Agent]:
    return run_agent(store, agent_id, lambda agent: agent.set_status(status, at))


def agent_id_of(email: str) -> UUID:
    return agent_stream_id(email)


def all_agents(store: EventStore) -> list[Agent]:
    """Every agent, from the log (fresh, whether or not a projector runs): the CLI's `agent list`."""
    with store.datastore.transaction(commit=False) as curs:
        curs.execute("SELECT agent_id FROM sb_agent_credentials")
        ids = [row["agent_id"] for row in curs.fetchall()]
    agents = []
    for agent_id in ids:
        try:
            agents.append(load_agent(store, agent_id))
        except NotFound:
            continue
    return sorted(agents, key=lambda a: a.email)
