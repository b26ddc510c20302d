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
    NAME = "campaign.MessageSent"
    recipient_id: UUID


class CampaignMessageFailed(DomainEvent, frozen=True, kw_only=True):
    NAME = "campaign.MessageFailed"
    recipient_id: UUID
    reason: str


class CampaignCompleted(DomainEvent, frozen=True, kw_only=True):
    """Every targeted member has an outcome."""

    NAME = "campaign.Completed"


CAMPAIGN_EVENTS: tuple[type[DomainEvent], ...] = (
    CampaignCreated,
    CampaignStarted,
    CampaignPaused,
    CampaignTargeted,
    CampaignRecipientSkipped,
    CampaignMessageSent,
    CampaignMessageFailed,
    CampaignCompleted,
)
