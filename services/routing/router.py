"""The router role: follows the log, keeps what routing needs in its own tables, and assigns the
cases of routed queues (`services.domain.assignment` decides who).

Built on `services.platform.follower.Follower`: one router is active per database, and each batch
is handled in the transaction that stores the router's position, so its tables, its decisions
(`case.Assigned` by "routing", appended with `tx.append`) and the position commit together or not at
all. A crash replays the batch; a decision raced by a person's command on the same case is a
version conflict, and the batch is handled again from a fresh read.

What routing keeps (sb_routing_*, DDL in services/platform/schema.py):
- agents: status, teams, skills, capacity, disabled, and their creation position (a stable order);
- queues: strategy, team, required skills, and the agent whose turn was last (round robin);
- cases: queue, open or resolved, assignee, the last event of the case applied (`version`), and
  whether it waits for an agent (`waiting`).

When a case waits. On open, reopen and transfer into a routed queue; when its assignee goes offline
or is disabled (cases of routed queues only: a person's assignment in a manual queue stays); when a
queue becomes routed (its open unassigned cases). A person's assignment (or unassignment) ends the
wait: a person decided. After every batch that changed anything, the waiting cases are taken oldest
first; each goes to its current assignee if they are still free for the queue, else to whoever the
queue's strategy picks; nobody free: it is unassigned (if it had an assignee who is away) and waits.
Load counts every open (not resolved) case assigned to an agent, by routing or by people.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from events.agent import (
    AgentChanged,
    AgentCreated,
    AgentDisabled,
    AgentEnabled,
    AgentStatusChanged,
)
from events.case import CASE_EVENTS, CaseAssigned, CaseOpened, CaseReopened, CaseResolved, CaseTransferred
from events.config import QueueConfigured
from services.domain.assignment import AgentState, QueueRule, choose
from services.domain.case import Case
from services.platform.eventstore.store import EventStore, Transaction
from services.platform.follower import Follower
from services.platform.logs import get_logger

log = get_logger(__name__)

ROUTING = "routing"  # the `by` of routing's assignments, and the follower's name
_CASE_EVENTS = frozenset(CASE_EVENTS)
_ROUTED_QUEUE = "EXISTS (SELECT 1 FROM sb_routing_queues q WHERE q.name = {0} AND q.strategy <> 'manual')"


class Router:
    """The follower's handler: `handle(tx, items)` applies a batch to routing's tables, then assigns."""

    def __init__(self, clock: Callable[[], datetime] | None = None):
        self.clock = clock or (lambda: datetime.now(UTC))

    def handle(self, tx: Transaction, items: Sequence[tuple[int, Any, bool]]) -> None:
        changed = False
        versions: dict[UUID, int] = {}  # case → its last event read (those not handled one by one)
        for position, event, _redacted in items:
            kind = type(event)
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(tx, position, event)
                changed = True
            elif kind in _CASE_EVENTS:
                versions[event.stream_id] = event.version
                changed = True
        if versions:
            ids, vs = zip(*versions.items(), strict=True)
            tx.execute(
                "UPDATE sb_routing_cases c SET version = u.v FROM unnest(%s::uuid[], %s::int8[]) AS u(id, v) "
                "WHERE c.case_id = u.id AND c.version < u.v",
                (list(ids), list(vs)),
            )
        if changed:
            self.assign_waiting(tx)

    # -- assigning ------------------------------------------------------------------------------

    def assign_waiting(self, tx: Transaction) -> int:
        """Takes the waiting cases oldest first and assigns those somebody is free for; returns the
        decisions recorded."""
        waiting = tx.execute(
            "SELECT case_id, queue, assignee, version FROM sb_routing_cases WHERE waiting "
            "ORDER BY opened_at, opened_position"
        ).fetchall()
        if not waiting:
            return 0
        queues: dict[str, QueueRule] = {}
        turns: dict[str, str | None] = {}
        for r in tx.execute("SELECT name, strategy, team, required_skills, last_turn FROM sb_routing_queues"):
            queues[r["name"]] = QueueRule(r["name"], r["strategy"], r["team"], frozenset(r["required_skills"]))
            turns[r["name"]] = r["last_turn"]
        agents = [
            AgentState(
                r["agent_id"],
                r["rank"],
                r["status"],
                frozenset(r["teams"]),
                frozenset(r["skills"]),
                r["capacity"],
                r["disabled"],
            )
            for r in tx.execute("SELECT * FROM sb_routing_agents")
        ]
        loads: dict[str, int] = {
            r["assignee"]: r["n"]
            for r in tx.execute(
                "SELECT assignee, count(*) AS n FROM sb_routing_cases "
                "WHERE status <> 'resolved' AND assignee IS NOT NULL GROUP BY assignee"
            )
        }
        blocked: set[str] = set()  # queues nobody is free for (the same answer for every case in them)
        decided = 0
        for row in waiting:
            case_id, queue_name, current = row["case_id"], row["queue"], row["assignee"]
            queue = queues.get(queue_name)
            if queue is None or not queue.routed:
                tx.execute("UPDATE sb_routing_cases SET waiting = false WHERE case_id = %s", (case_id,))
                continue
            if current is None and queue_name in blocked:
                continue
            chosen = choose(queue, agents, loads, current, turns.get(queue_name))
            if chosen is None:
                blocked.add(queue_name)
                if current is None:
                    continue
            elif chosen == current:
                tx.execute("UPDATE sb_routing_cases SET waiting = false WHERE case_id = %s", (case_id,))
                continue
            case = Case.replay(case_id, tx.store.load(case_id))
            if case.version != row["version"] or case.status == "resolved":
                continue  # events of the case this router has not read yet: decide once it has
            case.assign(chosen, ROUTING, self.clock())
            tx.append(case.collect())
            decided += 1
            tx.execute(
                "UPDATE sb_routing_cases SET assignee = %s, version = %s, waiting = %s WHERE case_id = %s",
                (chosen, case.version, chosen is None, case_id),
            )
            if current is not None:
                loads[current] = loads.get(current, 0) - 1
            if chosen is not None:
                loads[chosen] = loads.get(chosen, 0) + 1
                if queue.strategy == "round_robin":
                    turns[queue_name] = chosen
                    tx.execute("UPDATE sb_routing_queues SET last_turn = %s WHERE name = %s", (chosen, queue_name))
            log.info("case_routed", case_id=str(case_id), queue=queue_name, assignee=chosen)
        return decided


# -- keeping routing's tables from the log ---------------------------------------------------------


def _agent_created(tx: Transaction, position: int, e: AgentCreated) -> None:
    tx.execute(
        "INSERT INTO sb_routing_agents (agent_id, rank, teams, skills, capacity) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (agent_id) DO NOTHING",
        (str(e.stream_id), position, list(e.teams), list(e.skills), e.capacity),
    )


def _agent_changed(tx: Transaction, position: int, e: AgentChanged) -> None:
    tx.execute(
        "UPDATE sb_routing_agents SET teams = COALESCE(%s, teams), skills = COALESCE(%s, skills), "
        "capacity = COALESCE(%s, capacity) WHERE agent_id = %s",
        (e.teams, e.skills, e.capacity, str(e.stream_id)),
    )


def _agent_status(tx: Transaction, position: int, e: AgentStatusChanged) -> None:
    tx.execute("UPDATE sb_routing_agents SET status = %s WHERE agent_id = %s", (e.status, str(e.stream_id)))
    if e.status == "offline":
        _hand_back(tx, str(e.stream_id))


def _agent_disabled(tx: Transaction, position: int, e: AgentDisabled) -> None:
    tx.execute("UPDATE sb_routing_agents SET disabled = true WHERE agent_id = %s", (str(e.stream_id),))
    _hand_back(tx, str(e.stream_id))


def _agent_enabled(tx: Transaction, position: int, e: AgentEnabled) -> None:
    tx.execute("UPDATE sb_routing_agents SET disabled = false WHERE agent_id = %s", (str(e.stream_id),))


def _hand_back(tx: Transaction, agent_id: str) -> None:
    """An agent away: their open cases of routed queues wait for someone else."""
    tx.execute(
        "UPDATE sb_routing_cases c SET waiting = true WHERE c.assignee = %s AND c.status <> 'resolved' AND "
        + _ROUTED_QUEUE.format("c.queue"),
        (agent_id,),
    )


def _queue_configured(tx: Transaction, position: int, e: QueueConfigured) -> None:
    tx.execute(
        "INSERT INTO sb_routing_queues (name, strategy, team, required_skills) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET strategy = excluded.strategy, team = excluded.team, "
        "required_skills = excluded.required_skills",
        (e.name, e.strategy, e.team, list(e.required_skills)),
    )
    if e.strategy == "manual":
        tx.execute("UPDATE sb_routing_cases SET waiting = false WHERE queue = %s AND waiting", (e.name,))
    else:  # routed (now, or still): its open cases nobody has wait for routing
        tx.execute(
            "UPDATE sb_routing_cases SET waiting = true "
            "WHERE queue = %s AND assignee IS NULL AND status <> 'resolved' AND NOT waiting",
            (e.name,),
        )


def _case_opened(tx: Transaction, position: int, e: CaseOpened) -> None:
    tx.execute(
        "INSERT INTO sb_routing_cases (case_id, queue, status, opened_at, opened_position, version, waiting) "
        f"VALUES (%s, %s, 'open', %s, %s, %s, {_ROUTED_QUEUE.format('%s')}) ON CONFLICT (case_id) DO NOTHING",
        (e.stream_id, e.queue, e.occurred_at, position, e.version, e.queue),
    )


# Each of these changes a case only if the case has not seen the event yet (`version`): routing's own
# decisions were written to its tables when taken, and read back later they must change nothing.
_GUARD = " WHERE case_id = %s AND version < %s"


def _case_assigned(tx: Transaction, position: int, e: CaseAssigned) -> None:
    # A person's assignment or unassignment ends a wait; routing's own unassignment keeps it waiting.
    keep_waiting = e.assignee is None and e.by == ROUTING
    tx.execute(
        "UPDATE sb_routing_cases SET assignee = %s, version = %s, waiting = (waiting AND %s)" + _GUARD,
        (e.assignee, e.version, keep_waiting, e.stream_id, e.version),
    )


def _case_resolved(tx: Transaction, position: int, e: CaseResolved) -> None:
    tx.execute(
        "UPDATE sb_routing_cases SET status = 'resolved', version = %s, waiting = false" + _GUARD,
        (e.version, e.stream_id, e.version),
    )


def _case_reopened(tx: Transaction, position: int, e: CaseReopened) -> None:
    tx.execute(
        f"UPDATE sb_routing_cases c SET status = 'open', version = %s, waiting = {_ROUTED_QUEUE.format('c.queue')}"
        + _GUARD,
        (e.version, e.stream_id, e.version),
    )


def _case_transferred(tx: Transaction, position: int, e: CaseTransferred) -> None:
    tx.execute(
        "UPDATE sb_routing_cases SET queue = %s, version = %s, "
        f"waiting = status <> 'resolved' AND {_ROUTED_QUEUE.format('%s')}" + _GUARD,
        (e.queue, e.version, e.queue, e.stream_id, e.version),
    )


_HANDLERS: dict[type, Callable[[Transaction, int, Any], None]] = {
    AgentCreated: _agent_created,
    AgentChanged: _agent_changed,
    AgentStatusChanged: _agent_status,
    AgentDisabled: _agent_disabled,
    AgentEnabled: _agent_enabled,
    QueueConfigured: _queue_configured,
    CaseOpened: _case_opened,
    CaseAssigned: _case_assigned,
    CaseResolved: _case_resolved,
    CaseReopened: _case_reopened,
    CaseTransferred: _case_transferred,
}


def router_follower(store: EventStore, clock: Callable[[], datetime] | None = None, batch_size: int = 500) -> Follower:
    """The router as the follower the `router` role runs (one active per database)."""
    return Follower(store, ROUTING, Router(clock).handle, batch_size=batch_size)
