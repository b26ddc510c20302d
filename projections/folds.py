"""Read models folded in memory from the whole log, for `projections rebuild`.

The live projections (timeline.py, profile.py, cases.py) write each batch into the tables with
UPDATEs; replaying a whole log that way updates a busy customer's row thousands of times. A fold
gives the same rows with each row written once: it keeps the state of every row in memory while the
log streams past (the timeline's rows, which only ever change by merges and erasures, go straight
out to the caller's sink), then hands over the final rows and a few set-based corrections.

Each fold mirrors the SQL of its projection event by event: the same guards (an UPDATE of a row that
does not exist changes nothing; an INSERT of a key already there is ignored) and the same order. Two
things are left to PostgreSQL so that they come out exactly as live processing makes them: the order
of text arrays (`ORDER BY` under the database's collation) and the customer a row belongs to after
merges (the alias table, applied at the end). The folds do no I/O: `rows(order)` gives
`{table: (columns, rows)}`, with text arrays put in order by `order` (which asks the database how it
sorts the few distinct values `array_values()` names), and `corrections()` the SQL to run after.

This relies on what the domain guarantees for merges (services/domain/customer.py): an absorbed
customer is never absorbed again nor absorbs anyone, so where a row's customer ends up depends only
on the customer it was recorded for and the merges recorded after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import msgspec

from events.base import DomainEvent
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
from events.customer import (
    CustomerAbsorbed,
    CustomerErased,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    ProfileUpdated,
)
from services.platform.eventstore.codec import REDACTED

Columns = tuple[tuple[str, str], ...]  # (column, PostgreSQL type) in COPY order
Rows = dict[str, tuple[Columns, list[tuple]]]  # table → its columns and rows
# SQL run once the rows are in; with rows for a temporary table `stage` that it reads, if not None.
Correction = tuple[str, tuple, tuple[Columns, list[tuple]] | None]
_encode = msgspec.json.Encoder().encode


class RawJson(bytes):
    """JSON text already encoded, for a jsonb column of a binary COPY."""


Order = Callable[[set[str]], list[str]]  # text values sorted as the database's `ORDER BY` sorts them


class Unstorable(ValueError):
    """A value PostgreSQL refuses (a NUL character in text or jsonb): live processing gets a DataError
    for the event and quarantines it; a fold raises this before changing anything, to the same end."""


def storable(*values: Any) -> None:
    """Raises Unstorable if any text among these values (in lists, maps and keys too) holds a NUL.
    Checked in the folds because their rows reach PostgreSQL only at the end, in one COPY."""
    for value in values:
        if isinstance(value, str):
            if "\x00" in value:
                raise Unstorable("text with a NUL character, which PostgreSQL cannot store")
        elif isinstance(value, dict):
            storable(*value.keys(), *value.values())
        elif isinstance(value, (list, tuple, set)):
            storable(*value)


class Aliases:
    """proj_customer_alias as live processing keeps it: every absorbed customer → its survivor now."""

    def __init__(self) -> None:
        self.survivor: dict[UUID, UUID] = {}
        self.absorbed: dict[UUID, set[UUID]] = {}  # survivor → the customers aliased to it

    def merge(self, survivor: UUID, absorbed: UUID) -> None:
        # UPDATE alias SET survivor = S WHERE survivor = A; INSERT (A, S) ON CONFLICT DO UPDATE.
        moved = self.absorbed.pop(absorbed, set())
        previous = self.survivor.get(absorbed)
        if previous is not None and previous in self.absorbed:
            self.absorbed[previous].discard(absorbed)
        for customer in moved:
            self.survivor[customer] = survivor
        moved.add(absorbed)
        self.survivor[absorbed] = survivor
        self.absorbed.setdefault(survivor, set()).update(moved)

    def resolve(self, customer: UUID) -> UUID:
        return self.survivor.get(customer, customer)

    def owned_by(self, customer: UUID) -> set[UUID]:
        """The customers whose rows are this customer's now (itself and everyone aliased to it)."""
        return {customer, *self.absorbed.get(customer, ())}


# -- timeline -----------------------------------------------------------------------------------

TIMELINE_COLUMNS: Columns = (
    ("interaction_id", "uuid"),
    ("customer_id", "uuid"),
    ("origin_customer_id", "uuid"),
    ("position", "int8"),
    ("occurred_at", "timestamptz"),
    ("channel", "text"),
    ("direction", "text"),
    ("kind", "text"),
    ("text", "text"),
    ("case_id", "uuid"),
    ("attachments", "jsonb"),
)
ALIAS_COLUMNS: Columns = (("absorbed_id", "uuid"), ("survivor_id", "uuid"))
REDACTION_COLUMNS: Columns = (("origin", "uuid"), ("before", "int8"))


def attachments_json(attachments: Sequence[Any]) -> RawJson:
    if not attachments:
        return RawJson(b"[]")
    return RawJson(
        _encode(
            [{"name": a.name, "content_type": a.content_type, "size": a.size, "sha256": a.sha256} for a in attachments]
        )
    )


class TimelineFold:
    """proj_timeline (rows streamed to `sink` in log order) and proj_customer_alias."""

    name = "timeline"
    streamed: tuple[str, Columns] | None = ("proj_timeline", TIMELINE_COLUMNS)
    # The same interaction recorded twice keeps its first row (live: ON CONFLICT DO NOTHING).
    duplicates = (
        "DELETE FROM proj_timeline t USING proj_timeline f "
        "WHERE t.interaction_id = f.interaction_id AND t.position > f.position"
    )

    def __init__(self, sink: Callable[[tuple], None]):
        self.sink = sink
        self.aliases = Aliases()
        self.redactions: list[tuple[UUID, int]] = []  # rows of this origin, recorded before this position

    def apply(self, position: int, event: DomainEvent, redacted: bool) -> None:
        kind = type(event)
        if kind is InteractionRecorded:
            origin = event.stream_id
            storable(
                event.channel,
                event.direction,
                event.kind,
                event.text,
                *((a.name, a.content_type, a.sha256) for a in event.attachments),
            )
            self.sink(
                (
                    event.interaction_id,
                    self.aliases.resolve(origin),
                    origin,
                    position,
                    event.occurred_at,
                    event.channel,
                    event.direction,
                    event.kind,
                    event.text,
                    event.case_id,
                    attachments_json(event.attachments),
                )
            )
        elif kind is CustomerMerged:
            self.aliases.merge(event.stream_id, event.absorbed_id)
        elif kind is CustomerErased:
            # erase(): rows WHERE customer_id = X (whoever is aliased to X) OR origin_customer_id = X.
            self.redactions.extend((origin, position) for origin in self.aliases.owned_by(event.stream_id))

    def array_values(self) -> set[str]:
        return set()

    def rows(self, order: Order) -> Rows:
        return {"proj_customer_alias": (ALIAS_COLUMNS, list(self.aliases.survivor.items()))}

    def corrections(self) -> list[Correction]:
        out: list[Correction] = [
            # A row follows its customer into every merge recorded after it.
            (
                "UPDATE proj_timeline t SET customer_id = a.survivor_id FROM proj_customer_alias a "
                "WHERE t.origin_customer_id = a.absorbed_id AND t.customer_id <> a.survivor_id",
                (),
                None,
            )
        ]
        if self.redactions:
            out.append(
                (
                    "UPDATE proj_timeline t SET text = %s, attachments = '[]' FROM stage s "
                    "WHERE t.origin_customer_id = s.origin AND t.position < s.before",
                    (REDACTED,),
                    (REDACTION_COLUMNS, self.redactions),
                )
            )
        return out


# -- profile ------------------------------------------------------------------------------------

CUSTOMER_COLUMNS: Columns = (
    ("id", "uuid"),
    ("name", "text"),
    ("name_verified", "bool"),
    ("attributes", "jsonb"),
    ("first_seen", "timestamptz"),
    ("last_seen", "timestamptz"),
    ("interaction_count", "int8"),
    ("channels", "text[]"),
    ("merged_into", "uuid"),
    ("erased", "bool"),
)
IDENTITY_COLUMNS: Columns = (("customer_id", "uuid"), ("kind", "text"), ("value", "text"), ("verified", "bool"))


class _Customer:
    __slots__ = (
        "name",
        "name_verified",
        "attributes",
        "first_seen",
        "last_seen",
        "count",
        "channels",
        "merged_into",
        "erased",
    )

    def __init__(self, at):
        self.name: str | None = None
        self.name_verified = False
        self.attributes: dict[str, Any] = {}
        self.first_seen = self.last_seen = at
        self.count = 0
        self.channels: set[str] = set()
        self.merged_into: UUID | None = None
        self.erased = False


class ProfileFold:
    """proj_customers and proj_identities."""

    name = "profile"
    streamed: tuple[str, Columns] | None = None

    def __init__(self) -> None:
        self.customers: dict[UUID, _Customer] = {}
        self.identities: dict[UUID, dict[tuple[str, str], bool]] = {}
        self.followers: dict[UUID, set[UUID]] = {}  # merged_into → the customers with that merged_into

    def _merged_into(self, customer_id: UUID, survivor: UUID) -> None:
        c = self.customers[customer_id]
        if c.merged_into is not None:
            self.followers[c.merged_into].discard(customer_id)
        c.merged_into = survivor
        self.followers.setdefault(survivor, set()).add(customer_id)

    def apply(self, position: int, event: DomainEvent, redacted: bool) -> None:
        kind = type(event)
        customers = self.customers
        if kind is InteractionRecorded:
            storable(event.channel)  # what the database is sent fails, whether a row matches or not
            c = customers.get(event.stream_id)
            if c is not None:
                c.count += 1
                if event.occurred_at > c.last_seen:
                    c.last_seen = event.occurred_at
                c.channels.add(event.channel)
        elif kind is CustomerRegistered:
            if event.stream_id not in customers:
                customers[event.stream_id] = _Customer(event.occurred_at)
        elif kind is IdentityLinked or kind is IdentityClaimed:
            storable(event.kind, event.value)
            held = self.identities.setdefault(event.stream_id, {})
            key = (event.kind, event.value)
            held[key] = held.get(key, False) or kind is IdentityLinked
        elif kind is ProfileUpdated:
            storable(event.attributes)
            c = customers.get(event.stream_id)
            if c is not None:
                c.attributes.update(event.attributes)
                name = event.attributes.get("name")
                if name is not None and (event.verified or c.name is None or not c.name_verified):
                    c.name = name
                c.name_verified = c.name_verified or (name is not None and event.verified)
        elif kind is CustomerMerged:
            survivor, absorbed = event.stream_id, event.absorbed_id
            s, a = customers.get(survivor), customers.get(absorbed)
            if s is not None and a is not None:
                s.count += a.count
                s.first_seen = min(s.first_seen, a.first_seen)
                s.last_seen = max(s.last_seen, a.last_seen)
                s.channels |= a.channels
            theirs = self.identities.get(absorbed)
            if theirs:
                mine = self.identities.setdefault(survivor, {})
                for key, verified in theirs.items():
                    mine.setdefault(key, verified)
            for customer_id in [absorbed, *self.followers.get(absorbed, ())]:
                if customer_id in customers:
                    self._merged_into(customer_id, survivor)
        elif kind is CustomerAbsorbed:
            if event.stream_id in customers:
                self._merged_into(event.stream_id, event.survivor_id)
        elif kind is CustomerErased:
            erased = {event.stream_id, *self.followers.get(event.stream_id, ())}
            for customer_id in erased:
                c = customers.get(customer_id)
                if c is not None:
                    c.name, c.name_verified, c.attributes, c.erased = None, False, {}, True
                self.identities.pop(customer_id, None)

    def array_values(self) -> set[str]:
        return set().union(*(c.channels for c in self.customers.values()))

    def rows(self, order: Order) -> Rows:
        customers = [
            (
                i,
                c.name,
                c.name_verified,
                RawJson(_encode(c.attributes)),
                c.first_seen,
                c.last_seen,
                c.count,
                order(c.channels),
                c.merged_into,
                c.erased,
            )
            for i, c in self.customers.items()
        ]
        identities = [
            (i, kind, value, verified)
            for i, held in self.identities.items()
            for (kind, value), verified in held.items()
        ]
        return {"proj_customers": (CUSTOMER_COLUMNS, customers), "proj_identities": (IDENTITY_COLUMNS, identities)}

    def corrections(self) -> list[Correction]:
        return []


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


class CasesFold:
    """proj_cases, proj_case_notes and proj_replies."""

    name = "cases"
    streamed: tuple[str, Columns] | None = None

    def __init__(self) -> None:
        self.cases: dict[UUID, _Case] = {}
        self.notes: dict[UUID, list] = {}  # note id → [case id, text, author, created at]
        self.case_notes: dict[UUID, list[list]] = {}  # case id → its notes (whether the case is known or not)
        self.replies: dict[UUID, list] = {}  # reply id → [case id, status, reason, updated at]
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

    def _merged(self, event: CustomerMerged) -> None:
        self.aliases.merge(event.stream_id, event.absorbed_id)

    def _erased(self, event: CustomerErased) -> None:
        # erase(): the tags of the cases WHERE customer_id = X OR origin_customer_id = X, and their notes.
        for origin in self.aliases.owned_by(event.stream_id):
            for c in self.by_origin.get(origin, ()):
                c.tags = set()
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
            )
            for i, c in self.cases.items()
        ]
        notes = [(i, *note) for i, note in self.notes.items()]
        replies = [(i, *reply) for i, reply in self.replies.items()]
        return {
            "proj_cases": (CASE_COLUMNS, cases),
            "proj_case_notes": (NOTE_COLUMNS, notes),
            "proj_replies": (REPLY_COLUMNS, replies),
        }

    def corrections(self) -> list[Correction]:
        return []


_REPLY_STATUS = {ReplySent: "sent", ReplyDelivered: "delivered", ReplyFailed: "failed"}
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
    CustomerMerged: CasesFold._merged,
    CustomerErased: CasesFold._erased,
}

# Projection name → its fold. A projection without one is rebuilt by its own `apply`, in chunks.
FOLDS: dict[str, Callable[..., Any]] = {"timeline": TimelineFold, "profile": ProfileFold, "cases": CasesFold}
