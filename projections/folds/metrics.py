"""The metrics fold: proj_case_metrics, proj_metrics_sla and proj_metrics_agents, each row written once
(mirrors projections/metrics.py event by event)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from events.agent import AgentChanged, AgentCreated
from events.base import DomainEvent
from events.case import (
    CaseAssigned,
    CaseMessageAdded,
    CaseOpened,
    CaseReopened,
    CaseResolved,
    CaseTransferred,
    CsatRecorded,
    ReplyRequested,
    SlaBreached,
    SlaFulfilled,
    SlaStarted,
)
from projections.folds.common import Columns, Correction, Order, Rows, storable

CASE_COLUMNS: Columns = (
    ("case_id", "uuid"),
    ("channel", "text"),
    ("queue", "text"),
    ("assignee", "text"),
    ("teams", "text[]"),
    ("sla_policy", "text"),
    ("opened_at", "timestamptz"),
    ("first_response_at", "timestamptz"),
    ("resolved_at", "timestamptz"),
    ("csat", "int4"),
)
SLA_COLUMNS: Columns = (
    ("event_id", "uuid"),
    ("case_id", "uuid"),
    ("target", "text"),
    ("met", "bool"),
    ("at", "timestamptz"),
)
AGENT_COLUMNS: Columns = (("agent_id", "text"), ("teams", "text[]"))

# Indexes into a case's row (a list, in CASE_COLUMNS order).
_QUEUE, _ASSIGNEE, _TEAMS, _POLICY, _FIRST, _RESOLVED, _CSAT = 2, 3, 4, 5, 7, 8, 9


class MetricsFold:
    name = "metrics"
    streamed: tuple[str, Columns] | None = None

    def __init__(self) -> None:
        self.cases: dict[UUID, list[Any]] = {}
        self.sla: dict[UUID, tuple] = {}
        self.agents: dict[str, list[str]] = {}

    def apply(self, position: int, event: DomainEvent, redacted: bool) -> None:
        kind = type(event)
        if kind is CaseOpened:
            storable(event.channel, event.queue)
            if event.stream_id not in self.cases:
                self.cases[event.stream_id] = [
                    event.stream_id,
                    event.channel,
                    event.queue,
                    None,
                    [],
                    None,
                    event.occurred_at,
                    None,
                    None,
                    None,
                ]
            return
        if kind is ReplyRequested or (kind is CaseMessageAdded and event.direction != "inbound"):
            row = self.cases.get(event.stream_id)
            if row is not None and row[_FIRST] is None:
                row[_FIRST] = event.occurred_at
            return
        if kind is AgentCreated:
            storable(event.teams)
            self.agents.setdefault(str(event.stream_id), list(event.teams))
            return
        if kind is AgentChanged:
            storable(event.teams)
            agent = str(event.stream_id)
            if event.teams is not None and agent in self.agents:
                self.agents[agent] = list(event.teams)
            return
        if kind is SlaFulfilled or kind is SlaBreached:
            storable(event.target)
            self.sla.setdefault(
                event.id, (event.id, event.stream_id, event.target, kind is SlaFulfilled, event.occurred_at)
            )
            return
        if kind not in _CASE_UPDATES:
            return
        row = self.cases.get(event.stream_id)
        if kind is CaseAssigned:
            storable(event.assignee)
            if row is not None:
                row[_ASSIGNEE] = event.assignee
                row[_TEAMS] = list(self.agents.get(event.assignee, [])) if event.assignee is not None else []
        elif kind is CaseTransferred:
            storable(event.queue)
            if row is not None:
                row[_QUEUE] = event.queue
        elif kind is SlaStarted:
            storable(event.policy)
            if row is not None:
                row[_POLICY] = event.policy
        elif row is not None:
            if kind is CaseResolved:
                row[_RESOLVED] = event.occurred_at
            elif kind is CaseReopened:
                row[_RESOLVED] = None
            elif kind is CsatRecorded:
                row[_CSAT] = event.score

    def array_values(self) -> set[str]:
        return set()  # team lists keep the order the events gave them

    def rows(self, order: Order) -> Rows:
        return {
            "proj_case_metrics": (CASE_COLUMNS, [tuple(row) for row in self.cases.values()]),
            "proj_metrics_sla": (SLA_COLUMNS, list(self.sla.values())),
            "proj_metrics_agents": (AGENT_COLUMNS, [(agent, teams) for agent, teams in self.agents.items()]),
        }

    def corrections(self) -> list[Correction]:
        return []


_CASE_UPDATES = frozenset({CaseAssigned, CaseTransferred, SlaStarted, CaseResolved, CaseReopened, CsatRecorded})
