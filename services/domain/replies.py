"""What happens to a reply we sent: sent, then delivered or failed, as the provider reports it.

A provider's status callback names the message by the provider's own id; our relay reports on a
reply by its case and reply ids. `delivered` and `read` mean delivered; `failed` and `undelivered`
mean failed (with the provider's error, if any); every other word (`queued`, `sending`, `sent`)
changes nothing. A bounce is a mail server's way of saying a reply failed: it names the message it
returns, and a bounce naming nothing we can identify changes nothing (the mailer daemon is never
registered as a customer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from events.interactions import Interaction
from services.domain.aggregate import DomainError
from services.domain.case import Case
from services.domain.customer import Customer

DELIVERED_STATUSES = frozenset({"delivered", "read"})
FAILED_STATUSES = frozenset({"failed", "undelivered"})

DeliveryOutcome = Literal["delivered", "failed"]


class StatusWithoutMessageId(DomainError):
    """A provider status that names no message: nothing to report on, ever."""


@dataclass(frozen=True)
class StatusReport:
    """What a status callback or a bounce says about one message we sent."""

    interaction_id: UUID  # the status (or bounce) itself
    channel: str
    provider_message_id: str | None  # the provider's id of the message it reports on
    status: str | None
    error: str | None
    occurred_at: datetime
    # Set when our own relay reports on a reply: no provider id needed to find it.
    case_id: UUID | None = None
    reply_id: UUID | None = None

    @property
    def from_relay(self) -> bool:
        return self.case_id is not None and self.reply_id is not None


def status_report(status: Interaction) -> StatusReport:
    """A status interaction as a report; StatusWithoutMessageId if it names no message at all."""
    report = StatusReport(
        interaction_id=status.id,
        channel=status.channel,
        provider_message_id=status.provider_message_id,
        status=status.status,
        error=status.meta.get("error"),
        occurred_at=status.occurred_at,
        case_id=status.case_id,
        reply_id=status.reply_id,
    )
    if not report.from_relay and not report.provider_message_id:
        raise StatusWithoutMessageId("status without a provider message id")
    return report


def bounce_report(bounce: Interaction) -> StatusReport | None:
    """The bounce as the `failed` status of the message it returns; None if it names none."""
    bounced = bounce.meta.get("bounced_message_id", "").strip().strip("<>")
    if not bounced:
        return None
    reason = "bounced" + (f" ({bounce.meta['bounce_status']})" if bounce.meta.get("bounce_status") else "")
    return StatusReport(
        interaction_id=bounce.id,
        channel=bounce.channel,
        provider_message_id=bounced,
        status="failed",
        error=reason,
        occurred_at=bounce.occurred_at,
        case_id=bounce.case_id,
        reply_id=bounce.reply_id,
    )


def delivery_outcome(status: str | None) -> DeliveryOutcome | None:
    """What a provider's status word means for our reply; None: nothing yet."""
    if status in DELIVERED_STATUSES:
        return "delivered"
    if status in FAILED_STATUSES:
        return "failed"
    return None


def record_delivery_status(case: Case, reply_id: UUID, report: StatusReport) -> DeliveryOutcome | None:
    """Records on `case` what `report` says about its reply `reply_id`; returns the outcome."""
    outcome = delivery_outcome(report.status)
    if outcome == "delivered":
        case.reply_delivered(reply_id, report.occurred_at)
    elif outcome == "failed":
        reason = report.error if report.error is not None else (report.status or "failed")
        case.reply_failed(reply_id, reason, report.occurred_at)
    return outcome


def record_outbound(case: Case, customer: Customer, outbound: Interaction) -> None:
    """Our message went out (a relayed reply, or one written on the provider's own console):
    it joins the case and the customer's timeline; a relayed reply is now sent."""
    at = outbound.occurred_at
    case.add_message(outbound.id, "outbound", outbound.channel, at)
    if outbound.reply_id is not None:
        case.reply_sent(outbound.reply_id, outbound.provider_message_id, at)
    customer.record(outbound, case.id, case.thread_key)
