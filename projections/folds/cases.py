"""The cases fold: cases, notes and reply states, each row written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from events.base import DomainEvent
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
from events.customer import (
    CustomerErased,
    CustomerMerged,
)
from projections.folds.common import (
    Aliases,
    Columns,
    Correction,
    Order,
    RawJson,
    Rows,
    _encode,
    storable,
)
from services.platform.eventstore.codec import REDACTED

# -- cases --------------------------------------------------------------------------------------

CASE_COLUMNS: Columns = (
    ("id", "uuid"),
    ("customer_id", "uuid"),
    ("origin_customer_id", "uuid"),
    ("channel", "text"),
    ("status", "text"),
    ("priority", "text"),
    ("assignee", "text"),
    ("queue", "text"),
    ("tags", "text[]"),
    ("sla_due_at", "timestamptz"),
    ("opened_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("first_response_at", "timestamptz"),
    ("resolved_at", "timestamptz"),
    ("snoozed_until", "timestamptz"),
    ("message_count", "int4"),
    ("csat", "int4"),
    ("position", "int8"),
    ("attributes", "jsonb"),
    ("sla_breached", "bool"),
    ("sla_state", "text"),
)
SLA_COLUMNS: Columns = (
    ("case_id", "uuid"),
    ("target", "text"),
    ("state", "text"),
    ("due_at", "timestamptz"),
)
NOTE_COLUMNS: Columns = (
    ("note_id", "uuid"),
    ("case_id", "uuid"),
    ("text", "text"),
    ("author", "text"),
    ("created_at", "timestamptz"),
)
REPLY_COLUMNS: Columns = (
    ("reply_id", "uuid"),
    ("case_id", "uuid"),
    ("status", "text"),
    ("reason", "text"),
    ("updated_at", "timestamptz"),
)


class _Case:
    __slots__ = (
        "origin",
        "channel",
        "status",
        "priority",
        "assignee",
        "queue",
        "tags",
        "sla_due_at",
        "opened_at",
        "updated_at",
        "first_response_at",
        "resolved_at",
        "snoozed_until",
        "message_count",
        "csat",
        "position",
        "id",
        "attributes",
        "sla_breached",
        "sla_state",
    )

    def __init__(self, event: CaseOpened, position: int):
        self.id = event.stream_id
        self.origin = event.customer_id
        self.channel = event.channel
        self.status = "open"
        self.priority = event.priority
        self.assignee: str | None = None
        self.queue = event.queue
        self.tags: set[str] = set()
        self.sla_due_at = event.sla_due_at
        self.opened_at = self.updated_at = event.occurred_at
        self.first_response_at = self.resolved_at = self.snoozed_until = None
        # A case opened by an inbound message has that message as its first (see Case.open).
        self.message_count = 1 if event.interaction_id else 0
        self.csat: int | None = None
        self.position = position
        self.attributes: dict[str, Any] = {}
        self.sla_breached = False
        self.sla_state: str | None = None


class CasesFold:
    """proj_cases, proj_case_notes, proj_replies and proj_case_sla."""

    name = "cases"
    streamed: tuple[str, Columns] | None = None

    def __init__(self) -> None:
        self.cases: dict[UUID, _Case] = {}
        self.notes: dict[UUID, list] = {}  # note id → [case id, text, author, created at]
        self.case_notes: dict[UUID, list[list]] = {}  # case id → its notes (whether the case is known or not)
        self.replies: dict[UUID, list] = {}  # reply id → [case id, status, reason, updated at]
        self.sla: dict[UUID, dict[str, list]] = {}  # case id → target → [state, due at]
        self.by_origin: dict[UUID, list[_Case]] = {}
        self.aliases = Aliases()

    def apply(self, position: int, event: DomainEvent, redacted: bool) -> None:
        kind = type(event)
        if kind is CaseMessageAdded:
            c = self.cases.get(event.stream_id)
            if c is not None:
                c.message_count += 1
                if event.occurred_at > c.updated_at:
                    c.updated_at = event.occurred_at
                if event.direction == "inbound":
                    if c.status == "pending" or c.status == "snoozed":
                        c.status = "open"
                elif c.first_response_at is None:
                    c.first_response_at = event.occurred_at
            return
        if kind is CaseOpened:
            storable(event.channel, event.priority, event.queue)
            if event.stream_id not in self.cases:
                c = self.cases[event.stream_id] = _Case(event, position)
                self.by_origin.setdefault(c.origin, []).append(c)
            return
        handler = _CASE_HANDLERS.get(kind)
        if handler is not None:
            handler(self, event)

    def _touch(self, event: DomainEvent) -> _Case | None:
        """The case of this event with `updated_at` moved on (live: `_set`), or None if unknown."""
        c = self.cases.get(event.stream_id)
        if c is not None and event.occurred_at > c.updated_at:
            c.updated_at = event.occurred_at
        return c

    def _assigned(self, event: CaseAssigned) -> None:
        storable(event.assignee)
        if (c := self._touch(event)) is not None:
            c.assignee = event.assignee

    def _prioritized(self, event: CasePrioritized) -> None:
        storable(event.priority)
        if (c := self._touch(event)) is not None:
            c.priority = event.priority

    def _tagged(self, event: CaseTagged) -> None:
        storable(event.tags)
        if (c := self._touch(event)) is not None:
            c.tags.update(event.tags)

    def _note(self, event: CaseNoteAdded) -> None:
        storable(event.text, event.by)
        if event.note_id not in self.notes:
            note = self.notes[event.note_id] = [event.stream_id, event.text, event.by, event.occurred_at]
            self.case_notes.setdefault(event.stream_id, []).append(note)
        self._touch(event)

    def _reply_requested(self, event: ReplyRequested) -> None:
        if event.reply_id not in self.replies:
            self.replies[event.reply_id] = [event.stream_id, "requested", None, event.occurred_at]
        if (c := self._touch(event)) is not None:
            if c.status == "open" or c.status == "snoozed":
                c.status = "pending"
            if c.first_response_at is None:
                c.first_response_at = event.occurred_at

    def _reply_status(self, event: ReplySent | ReplyDelivered | ReplyFailed) -> None:
        storable(getattr(event, "reason", None))
        reply = self.replies.get(event.reply_id)
        if reply is not None:
            reply[1:] = [_REPLY_STATUS[type(event)], getattr(event, "reason", None), event.occurred_at]

    def _snoozed(self, event: CaseSnoozed) -> None:
        if (c := self._touch(event)) is not None:
            c.status, c.snoozed_until = "snoozed", event.until

    def _resolved(self, event: CaseResolved) -> None:
        if (c := self._touch(event)) is not None:
            c.status, c.resolved_at = "resolved", event.occurred_at

    def _reopened(self, event: CaseReopened) -> None:
        if (c := self._touch(event)) is not None:
            c.status, c.resolved_at = "open", None

    def _csat(self, event: CsatRecorded) -> None:
        if (c := self._touch(event)) is not None:
            c.csat = event.score

    def _transferred(self, event: CaseTransferred) -> None:
        storable(event.queue)
        if (c := self._touch(event)) is not None:
            c.queue = event.queue

    def _attributes(self, event: CaseAttributesSet) -> None:
        storable(event.values)
        if (c := self._touch(event)) is not None:
            for key, value in event.values.items():
                if value is None:
                    c.attributes.pop(key, None)
                else:
                    c.attributes[key] = value

    def _sla(self, event: SlaStarted | SlaPaused | SlaResumed | SlaFulfilled | SlaBreached) -> None:
        # live: _sla(): the target's row, then the case's summary of its clocks (updated_at untouched).
        kind = type(event)
        clocks = self.sla.setdefault(event.stream_id, {})
        if kind is SlaPaused:
            for clock in clocks.values():
                if clock[0] == "running":
                    clock[:] = ["paused", None]
        else:
            storable(event.target)
            due = event.due_at if kind is SlaStarted or kind is SlaResumed else None
            clocks[event.target] = [_SLA_STATE[kind], due]
        c = self.cases.get(event.stream_id)
        if c is None:
            return
        states = {clock[0] for clock in clocks.values()}
        running = [clock[1] for clock in clocks.values() if clock[0] == "running" and clock[1] is not None]
        c.sla_due_at = min(running) if running else None
        c.sla_breached = c.sla_breached or "breached" in states
        c.sla_state = next((s for s in ("breached", "running", "paused") if s in states), "met" if states else None)

    def _merged(self, event: CustomerMerged) -> None:
        self.aliases.merge(event.stream_id, event.absorbed_id)

    def _erased(self, event: CustomerErased) -> None:
        # erase(): the tags of the cases WHERE customer_id = X OR origin_customer_id = X, and their notes.
        for origin in self.aliases.owned_by(event.stream_id):
            for c in self.by_origin.get(origin, ()):
                c.tags = set()
                c.attributes = {}
                for note in self.case_notes.get(c.id, ()):
                    note[1] = REDACTED

    def array_values(self) -> set[str]:
        return set().union(*(c.tags for c in self.cases.values()))

    def rows(self, order: Order) -> Rows:
        resolve = self.aliases.resolve
        cases = [
            (
                i,
                resolve(c.origin),
                c.origin,
                c.channel,
                c.status,
                c.priority,
                c.assignee,
                c.queue,
                order(c.tags),
                c.sla_due_at,
                c.opened_at,
                c.updated_at,
                c.first_response_at,
                c.resolved_at,
                c.snoozed_until,
                c.message_count,
                c.csat,
                c.position,
                RawJson(_encode(c.attributes)),
                c.sla_breached,
                c.sla_state,
            )
            for i, c in self.cases.items()
        ]
        clocks = [(i, target, *clock) for i, targets in self.sla.items() for target, clock in targets.items()]
        notes = [(i, *note) for i, note in self.notes.items()]
        replies = [(i, *reply) for i, reply in self.replies.items()]
        return {
            "proj_cases": (CASE_COLUMNS, cases),
            "proj_case_notes": (NOTE_COLUMNS, notes),
            "proj_replies": (REPLY_COLUMNS, replies),
            "proj_case_sla": (SLA_COLUMNS, clocks),
        }

    def corrections(self) -> list[Correction]:
        return []


_REPLY_STATUS = {ReplySent: "sent", ReplyDelivered: "delivered", ReplyFailed: "failed"}
_SLA_STATE = {SlaStarted: "running", SlaResumed: "running", SlaFulfilled: "fulfilled", SlaBreached: "breached"}
_CASE_HANDLERS: dict[type, Callable[[CasesFold, Any], None]] = {
    CaseAssigned: CasesFold._assigned,
    CasePrioritized: CasesFold._prioritized,
    CaseTagged: CasesFold._tagged,
    CaseNoteAdded: CasesFold._note,
    ReplyRequested: CasesFold._reply_requested,
    ReplySent: CasesFold._reply_status,
    ReplyDelivered: CasesFold._reply_status,
    ReplyFailed: CasesFold._reply_status,
    CaseSnoozed: CasesFold._snoozed,
    CaseResolved: CasesFold._resolved,
    CaseReopened: CasesFold._reopened,
    CsatRecorded: CasesFold._csat,
    CaseTransferred: CasesFold._transferred,
    CaseAttributesSet: CasesFold._attributes,
    CustomerMerged: CasesFold._merged,
    CustomerErased: CasesFold._erased,
    SlaStarted: CasesFold._sla,
    SlaPaused: CasesFold._sla,
    SlaResumed: CasesFold._sla,
    SlaFulfilled: CasesFold._sla,
    SlaBreached: CasesFold._sla,
}
