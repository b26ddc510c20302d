"""Events of the case aggregate: one conversation, from opened to resolved."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args
from uuid import UUID

from events.base import DomainEvent, personal

Priority = Literal["low", "normal", "high", "urgent"]
# open → pending (we answered, waiting on the customer) → open (they wrote again) → resolved;
# snoozed until a time; a resolved case can be reopened.
CaseStatus = Literal["open", "pending", "snoozed", "resolved"]
# Where a reply stands: requested by an agent, sent by the relay, then delivered or failed.
ReplyState = Literal["requested", "sent", "delivered", "failed"]

PRIORITIES: tuple[Priority, ...] = get_args(Priority)
CASE_STATUSES: tuple[CaseStatus, ...] = get_args(CaseStatus)
REPLY_STATES: tuple[ReplyState, ...] = get_args(ReplyState)


class CaseOpened(DomainEvent, frozen=True, kw_only=True):
    """Version 2: `priority` became a named level (version 1 stored a number from 1 to 5)."""

    NAME = "case.Opened"
    VERSION = 2
    PERSONAL = personal("thread_key")
    channel: str
    thread_key: str | None
    queue: str
    priority: Priority
    sla_due_at: datetime | None
    interaction_id: UUID | None = None


def upcast_case_opened_v1(state: dict[str, Any]) -> dict[str, Any]:
    # v1: priority 1 (most urgent) .. 5 (least). v2: a named level.
    number = int(state.get("priority", 3))
    state["priority"] = {1: "urgent", 2: "high", 3: "normal"}.get(number, "low")
    return state


class CaseMessageAdded(DomainEvent, frozen=True, kw_only=True):
    """A message of the conversation; its text is on the customer's InteractionRecorded."""

    NAME = "case.MessageAdded"
    interaction_id: UUID
    direction: str
    channel: str


class CaseClassified(DomainEvent, frozen=True, kw_only=True):
    """An inbound message classified on this machine (services/intelligence/classify.py): language
    (ISO 639-1, "" when undetermined), sentiment (negative, neutral, positive), intent (from the
    configured label set) and the intent's confidence (0-1)."""

    NAME = "case.Classified"
    # The case. Recorded on the case's classification stream (services/domain/case.py:
    # Classifications); None on events that earlier releases recorded on the case's own stream,
    # whose `stream_id` is the case.
    case_id: UUID | None = None
    interaction_id: UUID
    language: str
    sentiment: str
    intent: str
    confidence: float


class CaseAssigned(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.Assigned"
    assignee: str | None
    by: str


class CasePrioritized(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.Prioritized"
    priority: Priority
    by: str


class CaseTagged(DomainEvent, frozen=True, kw_only=True):
    """Version 2: tags are sealed (agents write free text: "vip", "divorce", "wheelchair user").
    Version 1 stored them in clear (same fields)."""

    NAME = "case.Tagged"
    VERSION = 2
    PERSONAL = personal("tags")
    tags: list[str]
    by: str


class CaseNoteAdded(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.NoteAdded"
    PERSONAL = personal("text")
    note_id: UUID
    text: str
    by: str


class ReplyRequested(DomainEvent, frozen=True, kw_only=True):
    """An agent asked to send a reply; the relay delivers it through the case's channel."""

    NAME = "case.ReplyRequested"
    PERSONAL = personal("text")
    reply_id: UUID
    text: str
    by: str
    channel: str


class ReplySent(DomainEvent, frozen=True, kw_only=True):
    """Version 2: the provider's id of the sent message is sealed (a wamid encodes the recipient's
    number, a Telegram id the user's chat id). Version 1 stored it in clear (same fields)."""

    NAME = "case.ReplySent"
    VERSION = 2
    PERSONAL = personal("provider_message_id")
    reply_id: UUID
    provider_message_id: str | None


class ReplyDelivered(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.ReplyDelivered"
    reply_id: UUID


class ReplyFailed(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.ReplyFailed"
    reply_id: UUID
    reason: str
    final: bool = True


class CaseSnoozed(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.Snoozed"
    until: datetime
    by: str


class CaseResolved(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.Resolved"
    by: str


class CaseReopened(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.Reopened"
    by: str


class CsatRecorded(DomainEvent, frozen=True, kw_only=True):
    """A satisfaction score 1-5: a reply to the survey, a click on its link, or a connector's POST."""

    NAME = "case.CsatRecorded"
    PERSONAL = personal("comment")
    score: int
    comment: str | None = None
    source: str = "api"  # "reply", "link", "api"


class CsatRequested(DomainEvent, frozen=True, kw_only=True):
    """The survey went out with the reply `reply_id`; a score from the customer on the case's channel
    until `until` answers it (and opens no case)."""

    NAME = "case.CsatRequested"
    reply_id: UUID
    until: datetime


class CaseTransferred(DomainEvent, frozen=True, kw_only=True):
    """Moved to another queue (routing applies again there)."""

    NAME = "case.Transferred"
    queue: str
    by: str


class CaseAttributesSet(DomainEvent, frozen=True, kw_only=True):
    """Custom attribute values (checked against their definitions before); None removes a value."""

    NAME = "case.AttributesSet"
    PERSONAL = personal("values")
    values: dict[str, Any]
    by: str


class SlaStarted(DomainEvent, frozen=True, kw_only=True):
    """A target's clock runs, due at `due_at` (business hours of `policy` already counted in)."""

    NAME = "case.SlaStarted"
    target: str  # "first_response", "next_response", "resolution"
    policy: str
    due_at: datetime


class SlaPaused(DomainEvent, frozen=True, kw_only=True):
    """Every running target's clock stops (the case went pending or snoozed)."""

    NAME = "case.SlaPaused"
    reason: str


class SlaResumed(DomainEvent, frozen=True, kw_only=True):
    """A paused target runs again, now due at `due_at` (what was left of it, from now)."""

    NAME = "case.SlaResumed"
    target: str
    due_at: datetime


class SlaFulfilled(DomainEvent, frozen=True, kw_only=True):
    NAME = "case.SlaFulfilled"
    target: str


class SlaBreached(DomainEvent, frozen=True, kw_only=True):
    """Recorded once per target and clock run, by the timer role, when `due_at` passed unmet."""

    NAME = "case.SlaBreached"
    target: str
    due_at: datetime


class CaseWoken(DomainEvent, frozen=True, kw_only=True):
    """A snoozed case's time came: it is open again."""

    NAME = "case.Woken"


CASE_EVENTS: tuple[type[DomainEvent], ...] = (
    CaseOpened,
    CaseMessageAdded,
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
    CsatRequested,
    CaseTransferred,
    CaseAttributesSet,
    SlaStarted,
    SlaPaused,
    SlaResumed,
    SlaFulfilled,
    SlaBreached,
    CaseWoken,
    CaseClassified,
)
