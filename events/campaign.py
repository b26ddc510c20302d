"""Campaigns: one outbound message to every member of a segment, on one channel, each at most once.

A campaign's stream (id: the campaign's own, random) holds its definition, its starts and pauses,
and one event per recipient's outcome (`recipient_id` is the customer's id; the message text is the
campaign's, not personal). Nothing here is sealed: no personal data, only ids and counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from events.base import DomainEvent

CAMPAIGN_CHANNELS = ("sms", "whatsapp", "email")
SkipReason = Literal["no_consent", "no_address"]


class CampaignCreated(DomainEvent, frozen=True, kw_only=True):
    """`text` or `whatsapp_template` ({"name", "language", "components"?}: a Graph API template
    message); `send_at`: not before then; `quiet_hours` {"start": "HH:MM", "end": "HH:MM"} in the
    recipient's own time zone: sends falling inside are deferred to its end."""

    NAME = "campaign.Created"
    name: str
    segment_id: UUID
    channel: str
    text: str | None = None
    whatsapp_template: dict[str, Any] | None = None
    send_at: datetime | None = None
    quiet_hours: dict[str, str] | None = None
    by: str = ""


class CampaignStarted(DomainEvent, frozen=True, kw_only=True):
    NAME = "campaign.Started"
    by: str = ""


class CampaignPaused(DomainEvent, frozen=True, kw_only=True):
    NAME = "campaign.Paused"
    by: str = ""


class CampaignTargeted(DomainEvent, frozen=True, kw_only=True):
    """The segment's members when sending began: how many the campaign is for."""

    NAME = "campaign.Targeted"
    count: int


class CampaignRecipientSkipped(DomainEvent, frozen=True, kw_only=True):
    NAME = "campaign.RecipientSkipped"
    recipient_id: UUID
    reason: SkipReason


class CampaignMessageSent(DomainEvent, frozen=True, kw_only=True):
    """The provider took the message. `message_id` is the message's own id (the outbound ledger's key
    hashed: uuid5), which is also its id on the recipient's timeline; `channel` and `text` (the
    campaign's text, or "template NAME (LANGUAGE)") say what went out, so the timeline needs nothing
    else to show it. Events recorded before these fields existed carry their defaults."""

    NAME = "campaign.MessageSent"
    recipient_id: UUID
    message_id: UUID | None = None
    channel: str = ""
    text: str = ""


class CampaignMessageFailed(DomainEvent, frozen=True, kw_only=True):
    NAME = "campaign.MessageFailed"
    recipient_id: UUID
    reason: str


class CampaignMessageDelivered(DomainEvent, frozen=True, kw_only=True):
    """The provider reported the message delivered (or read) to the recipient: once per recipient,
    however often the provider repeats its callback."""

    NAME = "campaign.MessageDelivered"
    recipient_id: UUID


class CampaignMessageUndelivered(DomainEvent, frozen=True, kw_only=True):
    """The provider took the message but reported it could not be delivered (Twilio `undelivered` or
    `failed`, a WhatsApp `failed` status, an email bounce), with its reason; once per recipient."""

    NAME = "campaign.MessageUndelivered"
    recipient_id: UUID
    reason: str


class CampaignMessageReplied(DomainEvent, frozen=True, kw_only=True):
    """The recipient wrote to us on the campaign's channel within the reply window after the send:
    their first such message only."""

    NAME = "campaign.MessageReplied"
    recipient_id: UUID


class CampaignCompleted(DomainEvent, frozen=True, kw_only=True):
    """Every targeted member has an outcome."""

    NAME = "campaign.Completed"


class CampaignFailed(DomainEvent, frozen=True, kw_only=True):
    """The campaign cannot run, and sends nothing more: `reason` says why (a segment whose filter
    this release refuses, say)."""

    NAME = "campaign.Failed"
    reason: str


CAMPAIGN_EVENTS: tuple[type[DomainEvent], ...] = (
    CampaignCreated,
    CampaignStarted,
    CampaignPaused,
    CampaignTargeted,
    CampaignRecipientSkipped,
    CampaignMessageSent,
    CampaignMessageFailed,
    CampaignCompleted,
    CampaignMessageDelivered,
    CampaignMessageUndelivered,
    CampaignMessageReplied,
    CampaignFailed,
)
