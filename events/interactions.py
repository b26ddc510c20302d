"""The normalized interaction: what every channel adapter publishes on `sb.interactions.<channel>.<direction>`.

A connector of its own may publish these too; `Nats-Msg-Id` must be the interaction `id`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, get_args
from uuid import UUID

import msgspec

# "activity": a business event of the company's other systems (an order, an invoice), carried to the
# core like a message so it is resolved to its customer and recorded exactly once (never a case).
Channel = Literal["email", "sms", "chat", "whatsapp", "messenger", "instagram", "telegram", "activity"]
Direction = Literal["inbound", "outbound"]
IdentityKind = Literal["email", "phone", "messenger", "instagram", "telegram", "chat", "external"]
InteractionKind = Literal["message", "auto_reply", "bounce", "status", "reaction", "location", "media"]

# Kinds written by machines (an out-of-office answer, a mail server's bounce), never by the customer.
MachineKind = Literal["auto_reply", "bounce"]
# What a provider reports about a message we sent; other provider words (queued, sending, ...)
# change nothing. `read` counts as delivered, `undelivered` as failed.
DeliveryStatus = Literal["queued", "sending", "sent", "delivered", "read", "failed", "undelivered"]

# The same names as tuples, for membership checks and listings: spelt once, in the Literals above.
CHANNELS: tuple[Channel, ...] = get_args(Channel)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
IDENTITY_KINDS: tuple[IdentityKind, ...] = get_args(IdentityKind)
INTERACTION_KINDS: tuple[InteractionKind, ...] = get_args(InteractionKind)
MACHINE_KINDS: tuple[MachineKind, ...] = get_args(MachineKind)

# Interaction ids are derived from the provider's own message id, so that a provider's retry of the
# same message carries the same id and is deduplicated by JetStream and by the core.
_NAMESPACE = uuid.UUID("0b1f5c7e-3f5d-4a53-9a0e-5b3c0f1f7a11")


def interaction_id(channel: str, provider_message_id: str) -> UUID:
    return uuid.uuid5(_NAMESPACE, f"{channel}\x1f{provider_message_id}")


class Identity(msgspec.Struct, frozen=True):
    kind: IdentityKind
    value: str
    # Asserted by the channel (an SMS's number, an email's sender) as opposed to typed by a visitor.
    verified: bool = True


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    content_type: str
    size: int
    sha256: str
    # Where the bytes are kept (a `blob:` id in Switchboard's store, or the provider's media URL).
    ref: str | None = None


class Interaction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    id: UUID
    channel: Channel
    direction: Direction
    occurred_at: datetime
    identities: list[Identity] = []
    kind: InteractionKind = "message"
    text: str = ""
    # What the visitor or provider tells us about the person: {"name": ...}. Never used to link.
    profile: dict[str, str] = {}
    # Groups messages of one conversation: an email thread root, a chat session, a number pair.
    thread_key: str | None = None
    provider_message_id: str | None = None
    attachments: list[Attachment] = []
    # For outbound interactions and status updates: the case and reply they belong to.
    case_id: UUID | None = None
    reply_id: UUID | None = None
    # Delivery status for kind == "status": queued, sent, delivered, read, failed.
    status: str | None = None
    # Provider details worth keeping (headers, message ids of the thread); never secrets.
    meta: dict[str, str] = {}
    schema_version: int = 1


INTERACTION_DECODER = msgspec.json.Decoder(Interaction)
ENCODER = msgspec.json.Encoder()


def interaction_subject(channel: str, direction: str, namespace: str = "") -> str:
    return f"{namespace}sb.interactions.{channel}.{direction}"
