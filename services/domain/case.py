"""The case: one conversation with one customer on one channel thread, from opened to resolved.

Pure domain: no I/O, no clock. Status moves open → pending (we answered, waiting on the customer)
→ open (they wrote again) → resolved; snoozed until a time; a resolved case can be reopened.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from uuid import UUID

from events.case import (
    CASE_EVENTS,
    PRIORITIES,
    CaseAssigned,
    CaseAttributesSet,
    CaseClassified,
    CaseMessageAdded,
    CaseNoteAdded,
    CaseOpened,
    CasePrioritized,
    CaseReopened,
    CaseResolved,
    CaseSnoozed,
    CaseStatus,
    CaseTagged,
    CaseTransferred,
    CaseWoken,
    CsatRecorded,
    CsatRequested,
    Priority,
    ReplyDelivered,
    ReplyFailed,
    ReplyRequested,
    ReplySent,
    ReplyState,
    SlaBreached,
    SlaFulfilled,
    SlaPaused,
    SlaResumed,
    SlaStarted,
)
from services.domain.aggregate import Aggregate, DomainError


class CaseResolvedError(DomainError):
    pass


class Case(Aggregate):
    EVENTS = CASE_EVENTS
    # Notes and CSAT scores are read by the projections; no command of the case depends on them.
    STATELESS = (CaseNoteAdded,)

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
        self.classified: set[UUID] = set()  # inbound messages with a CaseClassified
        self.attributes: dict[str, Any] = {}
        self.csat_until: datetime | None = None  # a survey went out and may be answered until then
        self.csat_score: int | None = None
        self.csat_answered = False  # the survey now open was answered (by a reply or its link)
        # SLA targets: target → ("running", due_at) | ("paused", wall time that was left) |
        # ("fulfilled"|"breached", None). What is left in business time is the timer's to count.
        self.sla: dict[str, tuple[str, Any]] = {}
        self.sla_policy: str | None = None

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
            # The SLA clock is the timer's (services.timer.sla), from the queue's policy; cases
            # opened before it carry the old fixed first-response target here.
            sla_due_at=None,
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

    def record_csat(self, score: int, at: datetime, comment: str | None = None, source: str = "api") -> None:
        if not 1 <= score <= 5:
            raise DomainError("CSAT is a score from 1 to 5")
        self._trigger(CsatRecorded, at, score=score, comment=comment, source=source)

    def request_csat(self, reply_id: UUID, until: datetime, at: datetime) -> None:
        if self.csat_until is None:
            self._trigger(CsatRequested, at, reply_id=reply_id, until=until)

    def survey_open(self, at: datetime) -> bool:
        """A survey went out (since the last reopening) and may still be answered at `at`."""
        return self.csat_until is not None and at <= self.csat_until

    def answer_survey(self, score: int, source: str, at: datetime) -> bool:
        """The customer's answer to the survey (a reply, a click on its link): the first answer
        counts, later ones change nothing. False when nothing was recorded (answered already)."""
        if not self.survey_open(at):
            raise DomainError("no survey of this case is open")
        if self.csat_answered:
            return False
        self.record_csat(score, at, source=source)
        return True

    def transfer(self, queue: str, by: str, at: datetime) -> None:
        if not queue.strip():
            raise DomainError("a transfer needs a queue")
        if queue != self.queue:
            self._trigger(CaseTransferred, at, queue=queue, by=by)

    def set_attributes(self, values: dict[str, Any], by: str, at: datetime) -> None:
        """Values already checked against their definitions (the caller's job); None removes one."""
        changed = {k: v for k, v in values.items() if self.attributes.get(k) != v}
        if changed:
            self._trigger(CaseAttributesSet, at, values=changed, by=by)

    # The SLA clock: the timer role decides when (it knows the policies and the time); the case
    # makes each transition at most once, so two timers or a retried one record nothing twice.

    def start_sla(self, target: str, policy: str, due_at: datetime, at: datetime) -> None:
        state = self.sla.get(target)
        if state is None or state[0] in ("fulfilled", "breached"):
            self._trigger(SlaStarted, at, target=target, policy=policy, due_at=due_at)

    def retarget_sla(self, target: str, policy: str, due_at: datetime, at: datetime) -> None:
        """A running target measured anew (the case's priority or queue changed): due at `due_at` now."""
        state = self.sla.get(target)
        if state is not None and state[0] == "running" and (state[1], self.sla_policy) != (due_at, policy):
            self._trigger(SlaStarted, at, target=target, policy=policy, due_at=due_at)

    def pause_sla(self, reason: str, at: datetime) -> None:
        if any(state == "running" for state, _ in self.sla.values()):
            self._trigger(SlaPaused, at, reason=reason)

    def resume_sla(self, target: str, due_at: datetime, at: datetime) -> None:
        if self.sla.get(target, ("", None))[0] == "paused":
            self._trigger(SlaResumed, at, target=target, due_at=due_at)

    def fulfil_sla(self, target: str, at: datetime) -> None:
        if self.sla.get(target, ("", None))[0] in ("running", "paused"):
            self._trigger(SlaFulfilled, at, target=target)

    def breach_sla(self, target: str, at: datetime) -> None:
        state = self.sla.get(target)
        if state is not None and state[0] == "running" and state[1] <= at:
            self._trigger(SlaBreached, at, target=target, due_at=state[1])

    def wake(self, at: datetime) -> None:
        if self.status == "snoozed" and self.snoozed_until is not None and self.snoozed_until <= at:
            self._trigger(CaseWoken, at)

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
        self.csat_until = None

    def when_CsatRecorded(self, e: CsatRecorded) -> None:
        self.csat_score = e.score
        if self.csat_until is not None:
            self.csat_answered = True

    def when_CsatRequested(self, e: CsatRequested) -> None:
        self.csat_until = e.until
        self.csat_answered = False

    def when_Transferred(self, e: CaseTransferred) -> None:
        self.queue = e.queue

    def when_AttributesSet(self, e: CaseAttributesSet) -> None:
        for key, value in e.values.items():
            if value is None:
                self.attributes.pop(key, None)
            else:
                self.attributes[key] = value

    def when_SlaStarted(self, e: SlaStarted) -> None:
        self.sla[e.target] = ("running", e.due_at)
        self.sla_policy = e.policy

    def when_SlaPaused(self, e: SlaPaused) -> None:
        for target, (state, due_at) in list(self.sla.items()):
            if state == "running":
                self.sla[target] = ("paused", due_at - e.occurred_at)

    def when_SlaResumed(self, e: SlaResumed) -> None:
        self.sla[e.target] = ("running", e.due_at)

    def when_SlaFulfilled(self, e: SlaFulfilled) -> None:
        self.sla[e.target] = ("fulfilled", None)

    def when_SlaBreached(self, e: SlaBreached) -> None:
        self.sla[e.target] = ("breached", None)

    def when_Classified(self, e: CaseClassified) -> None:
        # Recorded on the case's own stream before classifications had one (`Classifications`).
        self.classified.add(e.interaction_id)

    def when_Woken(self, e: CaseWoken) -> None:
        self.status = "open"
        self.snoozed_until = None


_CLASSIFICATIONS = uuid.UUID("5d0f3c2a-6b7e-4c19-9a8d-3e2f1b0c4d57")


class Classifications(Aggregate):
    """A case's message classifications, on a stream of their own (`stream_of(case_id)`).

    The classifier appends here, never to the case: on the case's stream each `case.Classified`
    took the version the core's next batch meant to write, and the core lost that race over and
    over while a backlog was classified (ingest at a tenth of its rate). Classifications that earlier
    releases recorded on the case's stream stay there (`Case.classified`); the classifier's position
    is past them, so nothing classifies those messages again."""

    EVENTS = (CaseClassified,)

    def __init__(self, id: UUID):
        super().__init__(id)
        self.classified: set[UUID] = set()

    @staticmethod
    def stream_of(case_id: UUID) -> UUID:
        return uuid.uuid5(_CLASSIFICATIONS, str(case_id))

    @property
    def owner_id(self) -> UUID:
        raise AssertionError("a classification names its case's customer")

    def classify(
        self,
        case_id: UUID,
        customer_id: UUID,
        interaction_id: UUID,
        language: str,
        sentiment: str,
        intent: str,
        confidence: float,
        at: datetime,
    ) -> None:
        """Records the classification of a message of case `case_id` (opened for `customer_id`, whose
        key seals it), once per message."""
        assert self.id == self.stream_of(case_id), "the case's own classifications"
        if interaction_id not in self.classified:
            self._trigger(
                CaseClassified,
                at,
                customer_id=customer_id,
                case_id=case_id,
                interaction_id=interaction_id,
                language=language,
                sentiment=sentiment,
                intent=intent,
                confidence=confidence,
            )

    def when_Classified(self, e: CaseClassified) -> None:
        self.classified.add(e.interaction_id)
