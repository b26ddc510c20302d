"""Case queues: every case with its status, priority, assignee, SLA clock and response times."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.case import (
    CaseAssigned,
    CaseAttributesSet,
    CaseMessageAdded,
    CaseNoteAdded,
    CaseOpened,
    CasePrioritized,
    CaseReopened,
    CaseResolved,
    CaseSnoozed,
    CaseTagged,
    CaseTransferred,
    CsatRecorded,
    ReplyDelivered,
    ReplyFailed,
    ReplyRequested,
    ReplySent,
    SlaBreached,
    SlaFulfilled,
    SlaPaused,
    SlaResumed,
    SlaStarted,
)
from events.customer import CustomerErased, CustomerMerged
from projections.base import ALIAS_SCHEMA, Item, bulk
from services.platform.eventstore.codec import REDACTED

# Databases made before cases had custom attributes get the column (looked up first: altering a table
# locks it even when there is nothing to do).
CASE_ATTRIBUTES_COLUMN = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'proj_cases' AND column_name = 'attributes') THEN
        ALTER TABLE proj_cases ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}';
    END IF;
END $$;
"""


class CasesProjection:
    name = "cases"
    tables = ("proj_cases", "proj_case_notes", "proj_replies", "proj_case_sla")
    schema = (
        ALIAS_SCHEMA
        + """
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
        position bigint NOT NULL,
        sla_breached boolean NOT NULL DEFAULT false,
        attributes jsonb NOT NULL DEFAULT '{}',
        sla_state text
    );
    ALTER TABLE proj_cases ADD COLUMN IF NOT EXISTS sla_breached boolean NOT NULL DEFAULT false;
    -- Read models made before the SLA clock: its columns added (looked for first, as ALTER TABLE
    -- locks the table even when there is nothing to do).
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                       AND table_name = 'proj_cases' AND column_name = 'sla_state') THEN
            ALTER TABLE proj_cases ADD COLUMN IF NOT EXISTS sla_state text;
        END IF;
    END $$;
    CREATE INDEX IF NOT EXISTS proj_cases_queue_idx ON proj_cases (queue, status, updated_at DESC);
    CREATE INDEX IF NOT EXISTS proj_cases_customer_idx ON proj_cases (customer_id);
    CREATE INDEX IF NOT EXISTS proj_cases_updated_idx ON proj_cases (updated_at DESC, id DESC);
    CREATE INDEX IF NOT EXISTS proj_cases_status_idx ON proj_cases (status, updated_at DESC, id DESC);
    CREATE TABLE IF NOT EXISTS proj_case_notes (
        note_id uuid PRIMARY KEY,
        case_id uuid NOT NULL,
        text text NOT NULL,
        author text NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS proj_case_sla (
        case_id uuid NOT NULL,
        target text NOT NULL,
        state text NOT NULL,
        due_at timestamptz,
        PRIMARY KEY (case_id, target)
    );
    CREATE TABLE IF NOT EXISTS proj_replies (
        reply_id uuid PRIMARY KEY,
        case_id uuid NOT NULL,
        status text NOT NULL,
        reason text,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS proj_replies_case_idx ON proj_replies (case_id);
    """
        + CASE_ATTRIBUTES_COLUMN
    )

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        opened: list[tuple] = []
        counts: dict = {}  # case id → [messages, last at, any inbound, first outbound at]
        changed: dict[str, None] = {}  # case ids for the live feed, once each

        def flush() -> None:
            if opened:
                # A case opened by an inbound message has that message as its first (see Case.open).
                with bulk(curs, "stage_cases_opened", _OPENED_COLUMNS, opened) as (source, params):
                    curs.execute(
                        "INSERT INTO proj_cases (id, customer_id, origin_customer_id, channel, status, priority, queue, "
                        "sla_due_at, opened_at, updated_at, position, message_count) "
                        "SELECT u.id, COALESCE(a.survivor_id, u.c), u.c, u.ch, 'open', u.pr, u.q, u.sla, u.at, u.at, u.pos, "
                        f"u.n FROM {source} LEFT JOIN proj_customer_alias a ON a.absorbed_id = u.c "
                        "ON CONFLICT (id) DO NOTHING",
                        params,
                    )
                opened.clear()
            if counts:
                with bulk(curs, "stage_case_messages", _COUNT_COLUMNS, [(i, *c) for i, c in counts.items()]) as (
                    source,
                    params,
                ):
                    curs.execute(
                        "UPDATE proj_cases c SET message_count = c.message_count + u.n, "
                        "updated_at = GREATEST(c.updated_at, u.at), "
                        "status = CASE WHEN u.inbound AND c.status IN ('pending', 'snoozed') THEN 'open' ELSE c.status END, "
                        f"first_response_at = COALESCE(c.first_response_at, u.first_out) FROM {source} WHERE c.id = u.id",
                        params,
                    )
                counts.clear()

        for position, event, _redacted in items:
            kind = type(event)
            if kind is CaseMessageAdded:
                c = counts.get(event.stream_id)
                if c is None:
                    c = counts[event.stream_id] = [0, event.occurred_at, False, None]
                c[0] += 1
                if event.occurred_at > c[1]:
                    c[1] = event.occurred_at
                if event.direction == "inbound":
                    c[2] = True
                elif c[3] is None:
                    c[3] = event.occurred_at
                changed[str(event.stream_id)] = None
                continue
            if kind is CaseOpened:
                opened.append(
                    (
                        event.stream_id,
                        event.customer_id,
                        event.channel,
                        event.priority,
                        event.queue,
                        event.sla_due_at,
                        event.occurred_at,
                        position,
                        1 if event.interaction_id else 0,
                    )
                )
                changed[str(event.stream_id)] = None
                continue
            if kind not in _HANDLED:
                continue
            flush()
            at = event.occurred_at
            case_id = event.stream_id
            if kind is CaseAssigned:
                self._set(curs, case_id, at, "assignee = %s", event.assignee)
            elif kind is CasePrioritized:
                self._set(curs, case_id, at, "priority = %s", event.priority)
            elif kind is CaseTagged:
                self._set(
                    curs,
                    case_id,
                    at,
                    "tags = ARRAY(SELECT DISTINCT x FROM unnest(tags || %s::text[]) x ORDER BY x)",
                    event.tags,
                )
            elif kind is CaseNoteAdded:
                curs.execute(
                    "INSERT INTO proj_case_notes VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (event.note_id, case_id, event.text, event.by, at),
                )
                self._set(curs, case_id, at, "position = position")
            elif kind is ReplyRequested:
                curs.execute(
                    "INSERT INTO proj_replies VALUES (%s, %s, 'requested', NULL, %s) ON CONFLICT DO NOTHING",
                    (event.reply_id, case_id, at),
                )
                self._set(
                    curs,
                    case_id,
                    at,
                    "status = CASE WHEN status IN ('open', 'snoozed') THEN 'pending' ELSE status END, "
                    "first_response_at = COALESCE(first_response_at, %s)",
                    at,
                )
            elif kind is ReplySent or kind is ReplyDelivered or kind is ReplyFailed:
                status = {ReplySent: "sent", ReplyDelivered: "delivered", ReplyFailed: "failed"}[kind]
                curs.execute(
                    "UPDATE proj_replies SET status = %s, reason = %s, updated_at = %s WHERE reply_id = %s",
                    (status, getattr(event, "reason", None), at, event.reply_id),
                )
            elif kind is CaseSnoozed:
                self._set(curs, case_id, at, "status = 'snoozed', snoozed_until = %s", event.until)
            elif kind is CaseResolved:
                self._set(curs, case_id, at, "status = 'resolved', resolved_at = %s", at)
            elif kind is CaseReopened:
                self._set(curs, case_id, at, "status = 'open', resolved_at = NULL")
            elif kind is CsatRecorded:
                self._set(curs, case_id, at, "csat = %s", event.score)
            elif kind is CaseTransferred:
                self._set(curs, case_id, at, "queue = %s", event.queue)
            elif kind is CaseAttributesSet:
                # None removes a value (jsonb_strip_nulls: values are scalars, nothing nested).
                self._set(
                    curs, case_id, at, "attributes = jsonb_strip_nulls(attributes || %s::jsonb)", _json(event.values)
                )
            elif kind in _SLA:
                self._sla(curs, event)
            elif kind is CustomerMerged:
                curs.execute(
                    "UPDATE proj_cases SET customer_id = %s WHERE customer_id = %s",
                    (event.stream_id, event.absorbed_id),
                )
                continue
            elif kind is CustomerErased:
                self.erase(curs, [event.stream_id])
                continue
            changed[str(case_id)] = None
        flush()
        return [{"type": "case", "case_id": case_id} for case_id in changed]

    def erase(self, curs, customer_ids: Sequence) -> None:
        ids = list(customer_ids)
        # Tags are agents' free text about the customer ("vip", "divorce"): they go with the rest.
        curs.execute(
            "UPDATE proj_cases SET tags = '{}' WHERE (customer_id = ANY(%s) OR origin_customer_id = ANY(%s)) "
            "AND tags <> '{}'",
            (ids, ids),
        )
        # Custom attributes are personal (sealed with the customer's key in the log): gone too.
        curs.execute(
            "UPDATE proj_cases SET attributes = '{}' WHERE (customer_id = ANY(%s) OR origin_customer_id = ANY(%s)) "
            "AND attributes <> '{}'",
            (ids, ids),
        )
        curs.execute(
            "UPDATE proj_case_notes SET text = %s WHERE case_id IN "
            "(SELECT id FROM proj_cases WHERE customer_id = ANY(%s) OR origin_customer_id = ANY(%s))",
            (REDACTED, ids, ids),
        )

    @staticmethod
    def _sla(curs, event) -> None:
        """The SLA clock of one target (proj_case_sla), then the case's summary of its clocks:
        `sla_due_at` the earliest running target's due time, `sla_state` breached > running > paused
        > met, `sla_breached` once any target was breached. Not case activity: `updated_at` stays."""
        kind, case_id = type(event), event.stream_id
        if kind is SlaPaused:
            curs.execute(
                "UPDATE proj_case_sla SET state = 'paused', due_at = NULL WHERE case_id = %s AND state = 'running'",
                (case_id,),
            )
        else:
            state, due_at = {
                SlaStarted: ("running", getattr(event, "due_at", None)),
                SlaResumed: ("running", getattr(event, "due_at", None)),
                SlaFulfilled: ("fulfilled", None),
                SlaBreached: ("breached", None),
            }[kind]
            curs.execute(
                "INSERT INTO proj_case_sla VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (case_id, target) DO UPDATE SET state = excluded.state, due_at = excluded.due_at",
                (case_id, event.target, state, due_at),
            )
        curs.execute(
            "UPDATE proj_cases c SET sla_due_at = s.due, sla_state = s.state, sla_breached = c.sla_breached OR s.breached "
            "FROM (SELECT min(due_at) FILTER (WHERE state = 'running') AS due, "
            "COALESCE(bool_or(state = 'breached'), false) AS breached, CASE WHEN count(*) = 0 THEN NULL "
            "WHEN bool_or(state = 'breached') THEN 'breached' WHEN bool_or(state = 'running') THEN 'running' "
            "WHEN bool_or(state = 'paused') THEN 'paused' ELSE 'met' END AS state "
            "FROM proj_case_sla WHERE case_id = %s) s WHERE c.id = %s",
            (case_id, case_id),
        )

    @staticmethod
    def _set(curs, case_id, at, assignment: str, *values) -> None:
        curs.execute(
            f"UPDATE proj_cases SET {assignment}, updated_at = GREATEST(updated_at, %s) WHERE id = %s",
            (*values, at, case_id),
        )


_HANDLED = frozenset(
    {
        CaseAssigned,
        CasePrioritized,
        CaseTagged,
        CaseNoteAdded,
        ReplyRequested,
        ReplySent,
        ReplyDelivered,
        ReplyFailed,
        CaseSnoozed,
        CaseResolved,
        CaseReopened,
        CsatRecorded,
        CaseTransferred,
        CaseAttributesSet,
        CustomerMerged,
        CustomerErased,
        SlaStarted,
        SlaPaused,
        SlaResumed,
        SlaFulfilled,
        SlaBreached,
    }
)
_SLA = frozenset({SlaStarted, SlaPaused, SlaResumed, SlaFulfilled, SlaBreached})
_OPENED_COLUMNS = (
    ("id", "uuid"),
    ("c", "uuid"),
    ("ch", "text"),
    ("pr", "text"),
    ("q", "text"),
    ("sla", "timestamptz"),
    ("at", "timestamptz"),
    ("pos", "int8"),
    ("n", "int4"),
)
_COUNT_COLUMNS = (
    ("id", "uuid"),
    ("n", "int4"),
    ("at", "timestamptz"),
    ("inbound", "bool"),
    ("first_out", "timestamptz"),
)


def _json(value) -> str:
    return msgspec.json.encode(value).decode()
