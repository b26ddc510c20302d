"""Who gets a case: the routing rule of a queue, as pure functions over what routing knows.

A queue that is not `manual` is routed. A case in it goes to an agent who is online (not busy, not
offline, not disabled), belongs to the queue's team (any agent when the queue names none), has every
skill the queue requires and holds fewer open (not resolved) cases than their capacity. Among those:

- round_robin: the next one after the agent who got the queue's previous case, in a fixed order
  (the order agents were created in), wrapping around;
- least_loaded: the one holding the fewest open cases; ties go to the one created first.

A case that already has an assignee keeps them while they are still free for the queue (a reopened
case goes back to the agent the customer knows; a transfer to a queue they also work keeps them):
no reassignment, no turn taken. Nobody free: the case waits (`None`) and is taken, oldest first, as
soon as somebody is.

Pure domain: no I/O, no clock; the routing role feeds it from its own tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from events.config import Strategy


@dataclass(frozen=True)
class QueueRule:
    name: str
    strategy: Strategy = "manual"
    team: str | None = None
    required_skills: frozenset[str] = frozenset()

    @property
    def routed(self) -> bool:
        return self.strategy != "manual"


@dataclass(frozen=True)
class AgentState:
    """An agent as routing sees them; `order` is a stable rank (their creation in the log)."""

    id: str
    order: int
    status: str = "offline"
    teams: frozenset[str] = frozenset()
    skills: frozenset[str] = frozenset()
    capacity: int = 0
    disabled: bool = False


def works(agent: AgentState, queue: QueueRule) -> bool:
    """Whether the agent may take cases of this queue at all (now): online, enabled, team, skills."""
    return (
        agent.status == "online"
        and not agent.disabled
        and (queue.team is None or queue.team in agent.teams)
        and queue.required_skills <= agent.skills
    )


def has_room(agent: AgentState, load: int) -> bool:
    return load < agent.capacity


def choose(
    queue: QueueRule,
    agents: Sequence[AgentState],
    loads: Mapping[str, int],
    current: str | None = None,
    last_turn: str | None = None,
) -> str | None:
    """The agent this case of `queue` goes to, or None when nobody is free (it waits).

    `loads` counts each agent's open assigned cases, this case included for its `current` assignee.
    `last_turn` is the agent who got the queue's previous case by round robin.
    """
    if not queue.routed:
        return current
    if current is not None:
        holder = next((a for a in agents if a.id == current), None)
        # The case is already part of the holder's load: they keep it if that load fits.
        if holder is not None and works(holder, queue) and loads.get(current, 0) <= holder.capacity:
            return current
    free = sorted(
        (a for a in agents if a.id != current and works(a, queue) and has_room(a, loads.get(a.id, 0))),
        key=lambda a: (a.order, a.id),
    )
    if not free:
        return None
    if queue.strategy == "least_loaded":
        return min(free, key=lambda a: (loads.get(a.id, 0), a.order, a.id)).id
    # round_robin: the first free agent after the previous turn in the fixed order, wrapping around.
    if last_turn is not None:
        ranks = {a.id: (a.order, a.id) for a in agents}
        previous = ranks.get(last_turn)
        if previous is not None:
            after = [a for a in free if (a.order, a.id) > previous]
            if after:
                return after[0].id
    return free[0].id
