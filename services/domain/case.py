"""The case: one conversation with one customer on one channel thread, from opened to resolved.

Pure domain: no I/O, no clock. Status moves open → pending (we answered, waiting on the customer)
→ open (they wrote again) → resolved; snoozed until a time; a resolved case can be reopened.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from events.case import (
    CASE_EVENTS,
    PRIORITIES,
    CaseAssigned,
    CaseMessageAdded,
    CaseNoteAdded,
    CaseOpened,
    CasePrioritized,
    CaseReopened,
    CaseResolved,
    CaseSnoozed,
    CaseStatus,
    CaseTagged,
    CsatRecorded,
    Priority,
    ReplyDelivered,
    ReplyFailed,
    ReplyRequested,
    ReplySent,
    ReplyState,
)
from services.domain.aggregate import Aggregate, DomainError

# First-response targets per priority: what a case's SLA clock is measured against.
SLA: dict[Priority, timedelta] = {
    "urgent": timedelta(minutes=15),
    "high": timedelta(hours=1),
    "normal": timedelta(hours=4),
    "low": timedelta(hours=24),
}


class CaseResolvedError(DomainError):
    pass


class Case(Aggregate):
    EVENTS = CASE_EVENTS
    # Notes and CSAT scores are read by the projections; no command of the case depends on them.
    STATELESS = (CaseNoteAdded, CsatRecorded)

    def __init__(self, id: UUID):
        super().__init__(id)
        self.customer_id: UUID | None = None
        self.channel = ""
        self.thread_key: str | None = None
        self.status: CaseStatus = "open"
        self.priority: Priority = "normal"
        self.queue = "default"
        self.assignee: str | None = None
        self.tags: list[str] = []
        self.opened_at: datetime | None = None
        self.snoozed_until: datetime | None = None
        self.replies: dict[UUID, ReplyState] = {}
        self.messages: set[UUID] = set()

    @property
    def owner_id(self) -> UUID:
        assert self.customer_id is not None
        return self.customer_id

    # -- commands ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        id: UUID,
        customer_id: UUID,
        channel: str,
        thread_key: str | None,
        at: datetime,
        queue: str | None = None,
        priority: Priority = "normal",
        interaction_id: UUID | None = None,
    ) -> Case:
        """Opens a case; `interaction_id` is the customer's inbound message that opened it, which is
        then the case's first message (no separate MessageAdded: one event fewer per conversation)."""
        if priority not in PRIORITIES:
            raise DomainError(f"unknown priority {priority!r}")
        case = cls(id)
        case._trigger(
            CaseOpened,
            at,
            customer_id=customer_id,
            channel=channel,
            thread_key=thread_key,
            queue=queue or channel,
            priority=priority,
            sla_due_at=at + SLA[priority],
            interaction_id=interaction_id,
        )
        return case

    def add_message(self, interaction_id: UUID, direction: str, channel: str, at: datetime) -> None:
        if interaction_id in self.messages:
            return
        self._trigger(CaseMessageAdded, at, interaction_id=interaction_id, direction=direction, channel=channel)

    def assign(self, assignee: str | None, by: str, at: datetime) -> None:
        if assignee != self.assignee:
            self._trigger(CaseAssigned, at, assignee=assignee, by=by)

    def prioritize(self, priority: Priority, by: str, at: datetime) -> None:
        if priority not in PRIORITIES:
            raise DomainError(f"unknown priority {priority!r}")
        if priority != self.priority:
            self._trigger(CasePrioritized, at, priority=priority, by=by)

    def tag(self, tags: list[str], by: str, at: datetime) -> None:
        new = sorted({t.strip() for t in tags if t.strip()} - set(self.tags))
        if new:
            self._trigger(CaseTagged, at, tags=new, by=by)

    def add_note(self, note_id: UUID, text: str, by: str, at: datetime) -> None:
        if not text.strip():
            raise DomainError("a note needs text")
        self._trigger(CaseNoteAdded, at, note_id=note_id, text=text, by=by)

    def request_reply(self, reply_id: UUID, text: str, by: str, at: datetime) -> None:
        if not text.strip():
            raise DomainError("a reply needs text")
        if reply_id in self.replies:
            return
        self._trigger(ReplyRequested, at, reply_id=reply_id, text=text, by=by, channel=self.channel)

    def reply_sent(self, reply_id: UUID, provider_message_id: str | None, at: datetime) -> None:
        if self.replies.get(reply_id) == "requested":
            self._trigger(ReplySent, at, reply_id=reply_id, provider_message_id=provider_message_id)

    def reply_delivered(self, reply_id: UUID, at: datetime) -> None:
        if self.replies.get(reply_id) in ("requested", "sent"):
            self._trigger(ReplyDelivered, at, reply_id=reply_id)

    def reply_failed(self, reply_id: UUID, reason: str, at: datetime, final: bool = True) -> None:
        if self.replies.get(reply_id) in ("requested", "sent"):
            self._trigger(ReplyFailed, at, reply_id=reply_id, reason=reason, final=final)

    def snooze(self, until: datetime, by: str, at: datetime) -> None:
        if self.status == "resolved":
            raise CaseResolvedError("a resolved case cannot be snoozed")
        self._trigger(CaseSnoozed, at, until=until, by=by)

    def resolve(self, by: str, at: datetime) -> None:
        if self.status != "resolved":
            self._trigger(CaseResolved, at, by=by)

    def reopen(self, by: str, at: datetime) -> None:
        if self.status == "resolved":
            self._trigger(CaseReopened, at, by=by)

    def record_csat(self, score: int, at: datetime) -> None:
        if not 1 <= score <= 5:
            raise DomainError("CSAT is a score from 1 to 5")
        self._trigger(CsatRecorded, at, score=score)

    # -- state ---------------------------------------------------------------------------------

    def when_Opened(self, e: CaseOpened) -> None:
        self.customer_id = e.customer_id
        self.channel = e.channel
        self.thread_key = e.thread_key
        self.queue = e.queue
        self.priority = e.priority
        self.opened_at = e.occurred_at
        self.status = "open"
        if e.interaction_id is not None:
            self.messages.add(e.interaction_id)

    def when_MessageAdded(self, e: CaseMessageAdded) -> None:
        self.messages.add(e.interaction_id)
        if e.direction == "inbound" and self.status in ("pending", "snoozed"):
            self.status = "open"

    def when_Assigned(self, e: CaseAssigned) -> None:
        self.assignee = e.assignee

    def when_Prioritized(self, e: CasePrioritized) -> None:
        self.priority = e.priority

    def when_Tagged(self, e: CaseTagged) -> None:
        self.tags.extend(e.tags)

    def when_ReplyRequested(self, e: ReplyRequested) -> None:
        self.replies[e.reply_id] = "requested"
        if self.status in ("open", "snoozed"):
            self.status = "pending"

    def when_ReplySent(self, e: ReplySent) -> None:
        self.replies[e.reply_id] = "sent"

    def when_ReplyDelivered(self, e: ReplyDelivered) -> None:
        self.replies[e.reply_id] = "delivered"

    def when_ReplyFailed(self, e: ReplyFailed) -> None:
        self.replies[e.reply_id] = "failed"

    def when_Snoozed(self, e: CaseSnoozed) -> None:
        self.status = "snoozed"
        self.snoozed_until = e.until

    def when_Resolved(self, e: CaseResolved) -> None:
        self.status = "resolved"

    def when_Reopened(self, e: CaseReopened) -> None:
        self.status = "open"
