"""Business activities from the company's other systems (an order placed, an invoice paid, a delivery
late): how one becomes an interaction for the core, and back.

An activity travels to the core as an interaction on channel "activity", so the core resolves its
customer (creating one for an identity it does not know) and records it exactly once, as it does
every message: its id derives from `type` + `reference`, the interaction's exactly-once key. The
fields ride in `meta`; `data` (free-form, sealed with the customer's key) as JSON text.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from uuid import UUID

import msgspec

from events.customer import activity_summary
from events.interactions import Identity, IdentityKind, Interaction
from events.sanitize import sanitize
from services.domain.identity import InvalidIdentity, normalize

_NAMESPACE = uuid.UUID("0c9d7f64-3b1a-4e8e-a2d5-6f7b8c9d0e1f")


class BadActivity(ValueError):
    pass


MAX_DATA_BYTES = 8 * 1024
ActivityType = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9_]{1,32}(\.[a-z0-9_]{1,32}){0,3}$",
        max_length=100,
        description='what happened, lower-case words joined by dots: "order.placed", "invoice.paid"',
    ),
]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=128, description="its id in that system")]
Source = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,40}$")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217")]


class ActivityIdentity(msgspec.Struct, forbid_unknown_fields=True):
    kind: IdentityKind
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]


class ActivityBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/v1/activities` and `sb.activities.<source>`: what another system reports."""

    customer: ActivityIdentity
    type: ActivityType
    occurred_at: datetime
    reference: Reference
    amount: Decimal | None = None
    currency: Currency | None = None
    data: dict[str, Any] | None = None
    source: Source = "api"


def checked(body: ActivityBody, source: str | None = None) -> Interaction:
    """The activity's interaction, sanitised; BadActivity saying what is wrong with the body."""
    body = sanitize(body)
    if body.occurred_at.tzinfo is None:
        raise BadActivity("occurred_at needs a time zone offset")
    if body.amount is not None and (not body.amount.is_finite() or abs(body.amount) >= Decimal("1e15")):
        raise BadActivity("amount must be a finite number below 10^15")
    if body.currency is not None and body.amount is None:
        raise BadActivity("currency without an amount")
    if body.data is not None and len(msgspec.json.encode(body.data)) > MAX_DATA_BYTES:
        raise BadActivity(f"data is larger than {MAX_DATA_BYTES} bytes")
    try:
        identity = normalize(Identity(body.customer.kind, body.customer.value))
    except InvalidIdentity as exc:
        raise BadActivity(f"customer: {exc}") from None
    return as_interaction(
        identity,
        body.type,
        body.reference,
        body.occurred_at,
        source or body.source,
        amount=body.amount,
        currency=body.currency,
        data=body.data,
    )


def activity_id(type_: str, reference: str) -> UUID:
    """The one id of this activity, whichever path (HTTP, NATS) and however often it arrives."""
    return uuid.uuid5(_NAMESPACE, f"{type_}\x1f{reference}")


def as_interaction(
    identity: Identity,
    type_: str,
    reference: str,
    occurred_at: datetime,
    source: str,
    amount: Decimal | None = None,
    currency: str | None = None,
    data: dict[str, Any] | None = None,
) -> Interaction:
    meta = {"type": type_, "reference": reference, "source": source}
    if amount is not None:
        meta["amount"] = str(amount)
    if currency:
        meta["currency"] = currency
    if data:
        meta["data"] = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Interaction(
        id=activity_id(type_, reference),
        channel="activity",
        direction="inbound",
        occurred_at=occurred_at,
        identities=[Identity(identity.kind, identity.value, verified=True)],
        kind="message",
        text=activity_summary(type_, reference, amount, currency),
        meta=meta,
    )


def fields_of(interaction: Interaction) -> dict[str, Any]:
    """The ActivityRecorded fields an activity interaction carries (BadActivity if it carries none)."""
    meta = interaction.meta
    if not meta.get("type") or not meta.get("reference"):
        raise BadActivity("an activity needs a type and a reference")
    if interaction.id != activity_id(meta["type"], meta["reference"]):
        raise BadActivity("an activity's id must derive from its type and reference")
    amount = None
    if meta.get("amount"):
        try:
            amount = Decimal(meta["amount"])
        except InvalidOperation:
            raise BadActivity("amount is not a number") from None
        if not amount.is_finite():
            raise BadActivity("amount is not a finite number")
    try:
        data = json.loads(meta["data"]) if meta.get("data") else {}
    except ValueError:
        raise BadActivity("data is not JSON") from None
    if not isinstance(data, dict):
        raise BadActivity("data must be an object")
    return {
        "type": meta["type"],
        "reference": meta["reference"],
        "source": meta.get("source", ""),
        "amount": amount,
        "currency": meta.get("currency") or None,
        "data": data,
    }
