"""Case queues: every case with its status, priority, assignee, SLA clock and response times."""

from __future__ import annotations

from collections.abc import Sequence

from events.case import (
    CaseAssigned,
    CaseMessageAdded,
    CaseNoteAdded,
    CaseOpened,
    CasePrioritized,
    CaseReopened,
    CaseResolved,
    CaseSnoozed,
    CaseTagged,
    CsatRecorded,
    ReplyDelivered,
    ReplyFailed,
    ReplyRequested,
    ReplySent,
)
from events.customer import CustomerErased, CustomerMerged
from projections.base import ALIAS_SCHEMA, Item


class CasesProjection:
    name = "cases"
    tables = ("proj_cases", "proj_case_notes", "proj_replies")
    schema = ALIAS_SCHEMA + """
    CREATE TABLE IF NOT EXISTS proj_cases (
        id uuid PRIMARY KEY,
        customer_id uuid NOT NULL,
        origin_customer_id uuid NOT NULL,
        channel text NOT NULL,
        status text NOT NULL,
        priority text NOT NULL,
        assignee text,
        queue text NOT NULL,
        tags text[] NOT NULL DEFAULT '{}',
        sla_due_at timestamptz,
        opened_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        first_response_at timestamptz,
        resolved_at timestamptz,
        snoozed_until timestamptz,
        message_count int NOT NULL DEFAULT 0,
        csat int,
        position bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS proj_cases_queue_idx ON proj_cases (queue, status, updated_at DESC);
    CREATE INDEX IF NOT EXISTS proj_cases_customer_idx ON proj_cases (customer_id);
    CREATE TABLE IF NOT EXISTS proj_case_notes (
        note_id uuid PRIMARY KEY,
        case_id uuid NOT NULL,
        text text NOT NULL,
        author text NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS proj_replies (
        reply_id uuid PRIMARY KEY,
        case_id uuid NOT NULL,
        status text NOT NULL,
        reason text,
        updated_at timestamptz NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        live: list[dict] = []
        counts: dict = {}

        def flush() -> None:
            if not counts:
                return
            ids = list(counts)
            curs.execute(
                "UPDATE proj_cases c SET message_count = c.message_count + u.n, updated_at = GREATEST(c.updated_at, u.at), "
                "status = CASE WHEN u.inbound AND c.status IN ('pending', 'snoozed') THEN 'open' ELSE c.status END, "
                "first_response_at = COALESCE(c.first_response_at, u.first_out) "
                "FROM unnest(%s::uuid[], %s::int[], %s::timestamptz[], %s::boolean[], %s::timestamptz[]) "
                "AS u(id, n, at, inbound, first_out) WHERE c.id = u.id",
                (ids, [counts[i][0] for i in ids], [counts[i][1] for i in ids], [counts[i][2] for i in ids],
                 [counts[i][3] for i in ids]),
            )
            counts.clear()

        for position, event, _redacted in items:
            if isinstance(event, CaseMessageAdded):
                c = counts.setdefault(event.stream_id, [0, event.occurred_at, False, None])
                c[0] += 1
                c[1] = max(c[1], event.occurred_at)
                if event.direction == "inbound":
                    c[2] = True
                elif c[3] is None:
                    c[3] = event.occurred_at
                live.append({"type": "case", "case_id": str(event.stream_id)})
                continue
            flush()
            at = event.occurred_at
            case_id = event.stream_id
            if isinstance(event, CaseOpened):
                curs.execute(
                    "INSERT INTO proj_cases (id, customer_id, origin_customer_id, channel, status, priority, queue, "
                    "sla_due_at, opened_at, updated_at, position) "
                    "VALUES (%s, COALESCE((SELECT survivor_id FROM proj_customer_alias WHERE absorbed_id = %s), %s), "
                    "%s, %s, 'open', %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (case_id, event.customer_id, event.customer_id, event.customer_id, event.channel, event.priority,
                     event.queue, event.sla_due_at, at, at, position))
            elif isinstance(event, CaseAssigned):
                self._set(curs, case_id, at, "assignee = %s", event.assignee)
            elif isinstance(event, CasePrioritized):
                self._set(curs, case_id, at, "priority = %s", event.priority)
            elif isinstance(event, CaseTagged):
                self._set(curs, case_id, at, "tags = ARRAY(SELECT DISTINCT x FROM unnest(tags || %s::text[]) x ORDER BY x)",
                          event.tags)
            elif isinstance(event, CaseNoteAdded):
                curs.execute("INSERT INTO proj_case_notes VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                             (event.note_id, case_id, event.text, event.by, at))
                self._set(curs, case_id, at, "position = position")
            elif isinstance(event, ReplyRequested):
                curs.execute("INSERT INTO proj_replies VALUES (%s, %s, 'requested', NULL, %s) ON CONFLICT DO NOTHING",
                             (event.reply_id, case_id, at))
                self._set(curs, case_id, at, "status = CASE WHEN status IN ('open', 'snoozed') THEN 'pending' ELSE status END, "
                          "first_response_at = COALESCE(first_response_at, %s)", at)
            elif isinstance(event, ReplySent | ReplyDelivered | ReplyFailed):
                status = {ReplySent: "sent", ReplyDelivered: "delivered", ReplyFailed: "failed"}[type(event)]
                curs.execute("UPDATE proj_replies SET status = %s, reason = %s, updated_at = %s WHERE reply_id = %s",
                             (status, getattr(event, "reason", None), at, event.reply_id))
            elif isinstance(event, CaseSnoozed):
                self._set(curs, case_id, at, "status = 'snoozed', snoozed_until = %s", event.until)
            elif isinstance(event, CaseResolved):
                self._set(curs, case_id, at, "status = 'resolved', resolved_at = %s", at)
            elif isinstance(event, CaseReopened):
                self._set(curs, case_id, at, "status = 'open', resolved_at = NULL")
            elif isinstance(event, CsatRecorded):
                self._set(curs, case_id, at, "csat = %s", event.score)
            elif isinstance(event, CustomerMerged):
                curs.execute("UPDATE proj_cases SET customer_id = %s WHERE customer_id = %s", (event.stream_id, event.absorbed_id))
                continue
            elif isinstance(event, CustomerErased):
                curs.execute("UPDATE proj_case_notes SET text = '[erased]' WHERE case_id IN "
                             "(SELECT id FROM proj_cases WHERE customer_id = %s OR origin_customer_id = %s)",
                             (event.stream_id, event.stream_id))
                continue
            else:
                continue
            live.append({"type": "case", "case_id": str(case_id)})
        flush()
        return live

    @staticmethod
    def _set(curs, case_id, at, assignment: str, *values) -> None:
        curs.execute(f"UPDATE proj_cases SET {assignment}, updated_at = GREATEST(updated_at, %s) WHERE id = %s",
                     (*values, at, case_id))
