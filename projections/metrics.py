"""Metrics: one row per case with what the contact-centre figures need (services/domain/metrics.py),
the outcome of each SLA clock run, and the teams of every agent (for "team at assignment").

Fed from the events only: a case's channel, queue (transfers), assignee and the assignee's teams at
that moment (agent.Created / agent.Changed), its SLA policy, first reply (the first reply asked for
or outbound message, whichever the log has first, as the cases view counts it), last resolution, and
latest CSAT score. No personal data: ids, names of channels, queues and teams, times and scores
(a CSAT comment stays in the log), so `erase` has nothing to remove.
"""

from __future__ import annotations

from collections.abc import Sequence

from events.agent import AgentChanged, AgentCreated
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
from projections.base import Item, bulk

_OPENED_COLUMNS = (("id", "uuid"), ("ch", "text"), ("q", "text"), ("at", "timestamptz"))
_RESPONDED_COLUMNS = (("id", "uuid"), ("at", "timestamptz"))


class MetricsProjection:
    name = "metrics"
    tables = ("proj_case_metrics", "proj_metrics_sla", "proj_metrics_agents")
    schema = """
    CREATE TABLE IF NOT EXISTS proj_case_metrics (
        case_id uuid PRIMARY KEY,
        channel text NOT NULL,
        queue text NOT NULL,
        assignee text,
        teams text[] NOT NULL DEFAULT '{}',
        sla_policy text,
        opened_at timestamptz NOT NULL,
        first_response_at timestamptz,
        resolved_at timestamptz,
        csat int
    );
    CREATE INDEX IF NOT EXISTS proj_case_metrics_opened_idx ON proj_case_metrics (opened_at);
    CREATE TABLE IF NOT EXISTS proj_metrics_sla (
        event_id uuid PRIMARY KEY,
        case_id uuid NOT NULL,
        target text NOT NULL,
        met boolean NOT NULL,
        at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS proj_metrics_sla_case_idx ON proj_metrics_sla (case_id);
    CREATE TABLE IF NOT EXISTS proj_metrics_agents (
        agent_id text PRIMARY KEY,
        teams text[] NOT NULL DEFAULT '{}'
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        # The two frequent events (a case opened, a reply) are gathered and written set-based; any
        # other writes what was gathered first, so the order of the log is kept.
        opened: list[tuple] = []
        responded: dict = {}  # case id → its first reply of this batch

        def flush() -> None:
            if opened:
                with bulk(curs, "stage_metrics_opened", _OPENED_COLUMNS, opened) as (source, params):
                    curs.execute(
                        "INSERT INTO proj_case_metrics (case_id, channel, queue, opened_at) "
                        f"SELECT u.id, u.ch, u.q, u.at FROM {source} ON CONFLICT (case_id) DO NOTHING",
                        params,
                    )
                opened.clear()
            if responded:
                rows = list(responded.items())
                with bulk(curs, "stage_metrics_responded", _RESPONDED_COLUMNS, rows) as (source, params):
                    curs.execute(
                        f"UPDATE proj_case_metrics m SET first_response_at = u.at FROM {source} "
                        "WHERE m.case_id = u.id AND m.first_response_at IS NULL",
                        params,
                    )
                responded.clear()

        for _position, event, _redacted in items:
            kind = type(event)
            if kind is CaseOpened:
                opened.append((event.stream_id, event.channel, event.queue, event.occurred_at))
            elif kind is ReplyRequested or (kind is CaseMessageAdded and event.direction != "inbound"):
                responded.setdefault(event.stream_id, event.occurred_at)
            elif kind in _HANDLED:
                flush()
                self._apply_one(curs, event)
        flush()
        return []

    @staticmethod
    def _apply_one(curs, event) -> None:
        kind = type(event)
        case_id = event.stream_id
        if kind is CaseAssigned:
            curs.execute(
                "UPDATE proj_case_metrics SET assignee = %s, "
                "teams = COALESCE((SELECT teams FROM proj_metrics_agents WHERE agent_id = %s), '{}') "
                "WHERE case_id = %s",
                (event.assignee, event.assignee, case_id),
            )
        elif kind is CaseTransferred:
            curs.execute("UPDATE proj_case_metrics SET queue = %s WHERE case_id = %s", (event.queue, case_id))
        elif kind is CaseResolved:
            curs.execute(
                "UPDATE proj_case_metrics SET resolved_at = %s WHERE case_id = %s", (event.occurred_at, case_id)
            )
        elif kind is CaseReopened:
            curs.execute("UPDATE proj_case_metrics SET resolved_at = NULL WHERE case_id = %s", (case_id,))
        elif kind is CsatRecorded:
            curs.execute("UPDATE proj_case_metrics SET csat = %s WHERE case_id = %s", (event.score, case_id))
        elif kind is SlaStarted:
            curs.execute("UPDATE proj_case_metrics SET sla_policy = %s WHERE case_id = %s", (event.policy, case_id))
        elif kind is SlaFulfilled or kind is SlaBreached:
            curs.execute(
                "INSERT INTO proj_metrics_sla VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                (event.id, case_id, event.target, kind is SlaFulfilled, event.occurred_at),
            )
        elif kind is AgentCreated:
            curs.execute(
                "INSERT INTO proj_metrics_agents VALUES (%s, %s) ON CONFLICT (agent_id) DO NOTHING",
                (str(event.stream_id), list(event.teams)),
            )
        elif kind is AgentChanged and event.teams is not None:
            curs.execute(
                "UPDATE proj_metrics_agents SET teams = %s WHERE agent_id = %s",
                (list(event.teams), str(event.stream_id)),
            )

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing personal is kept here (see the module's docstring)."""


_HANDLED = frozenset(
    {
        CaseAssigned,
        CaseTransferred,
        CaseResolved,
        CaseReopened,
        CsatRecorded,
        SlaStarted,
        SlaFulfilled,
        SlaBreached,
        AgentCreated,
        AgentChanged,
    }
)
