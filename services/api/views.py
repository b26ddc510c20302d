"""The shapes the agent API answers with, as msgspec Structs: the OpenAPI document declares them,
and a handler's answer is converted into one (`as_view`), so what is documented is what is sent.

A field added to a read model's answer reaches clients only once it is added here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgspec

from events.case import CaseStatus

V = TypeVar("V")


def as_view(value: Any, view: type[V]) -> V:
    """A handler's dict answer as its documented Struct (keys the Struct does not name are dropped)."""
    return msgspec.convert(value, view)


# -- customers --------------------------------------------------------------------------------------


class IdentityView(msgspec.Struct):
    kind: str
    value: str


class Profile(msgspec.Struct):
    """The 360° profile: who the customer is, where and how much they talked to us."""

    id: str
    name: str | None
    identities: list[IdentityView]
    channels: list[str]
    first_seen: datetime | None
    last_seen: datetime | None
    open_cases: int
    interaction_count: int
    claims: list[IdentityView] = []  # what the customer typed about themselves, never verified
    erased: bool = False
    merged_ids: list[str] = []
    attributes: dict[str, Any] = {}


class CustomerSummary(msgspec.Struct):
    id: str
    name: str | None
    last_seen: datetime | None


class CustomerList(msgspec.Struct):
    items: list[CustomerSummary]
    next_cursor: str | None


class AttachmentView(msgspec.Struct):
    name: str
    content_type: str
    size: int
    url: str | None  # GET it with the same bearer token: the bytes; None: the provider keeps them
    sha256: str = ""


class TimelineItem(msgspec.Struct):
    id: str
    occurred_at: datetime
    channel: str
    direction: str
    kind: str
    text: str
    case_id: str | None
    attachments: list[AttachmentView] = []
    # An inbound message's classification (the classifier role's; None until it ran, and for ours):
    language: str | None = None  # ISO 639-1; "" when undetermined
    sentiment: str | None = None  # negative, neutral, positive
    intent: str | None = None  # one of the configured intents, or "other"


class Timeline(msgspec.Struct):
    items: list[TimelineItem]
    next_cursor: str | None


# -- cases ------------------------------------------------------------------------------------------


class Delivery(msgspec.Struct):
    """Where one of our replies stands: requested, sent (the provider took it), delivered, failed."""

    status: str
    updated_at: datetime
    reason: str | None = None  # why it failed


class CaseMessage(msgspec.Struct):
    """One message of the case, oldest first. For our replies `reply_id` and `delivery`; a reply the
    provider has not taken yet (or never did: failed) has no text here yet (`text` null)."""

    id: str
    occurred_at: datetime
    direction: str
    kind: str
    text: str | None
    channel: str | None = None
    attachments: list[AttachmentView] = []
    reply_id: str | None = None
    delivery: Delivery | None = None


class CaseNote(msgspec.Struct):
    id: str
    text: str
    author: str
    created_at: datetime


class LastMessage(msgspec.Struct):
    text: str
    direction: str
    occurred_at: datetime


class CaseSummary(msgspec.Struct):
    """A case as the queues list it."""

    id: str
    customer_id: str
    channel: str
    status: CaseStatus
    priority: str
    assignee: str | None
    queue: str
    tags: list[str]
    sla_due_at: datetime | None
    opened_at: datetime
    updated_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    message_count: int
    sla_breached: bool = False
    sla_state: str | None = None
    csat: int | None = None
    attributes: dict[str, Any] = {}
    # In lists: who, what they said last, and since when they have been waiting for us.
    customer_name: str | None = None
    last_message: LastMessage | None = None
    waiting_since: datetime | None = None


class CaseView(CaseSummary):
    """One case with its messages and notes."""

    messages: list[CaseMessage] = []
    notes: list[CaseNote] = []
    # The classification of the customer's latest classified message (None before any).
    language: str | None = None
    sentiment: str | None = None
    intent: str | None = None


class CaseList(msgspec.Struct):
    items: list[CaseSummary]
    next_cursor: str | None


class CaseChanged(msgspec.Struct):
    """The case after a command, and the log `position` to read it back with (`Sb-Min-Position`)."""

    id: str
    customer_id: str
    channel: str
    status: CaseStatus
    priority: str
    assignee: str | None
    queue: str
    tags: list[str]
    version: int
    position: int
    sla_due_at: datetime | None = None
    messages: list[CaseMessage] = []
    reply_id: str | None = None  # a reply command: the reply's id, as in the messages' `reply_id`
