"""Events of the customer aggregate: one stream per customer, every touchpoint on it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from events.base import DomainEvent, personal
from events.interactions import Attachment


class CustomerRegistered(DomainEvent, frozen=True, kw_only=True):
    NAME = "customer.Registered"


class IdentityLinked(DomainEvent, frozen=True, kw_only=True):
    """A verified identity now resolves to this customer."""

    NAME = "customer.IdentityLinked"
    PERSONAL = personal("value")
    kind: str
    value: str


class IdentityClaimed(DomainEvent, frozen=True, kw_only=True):
    """Something the visitor typed about themselves: kept on the profile, never used to link."""

    NAME = "customer.IdentityClaimed"
    PERSONAL = personal("value")
    kind: str
    value: str


class ProfileUpdated(DomainEvent, frozen=True, kw_only=True):
    NAME = "customer.ProfileUpdated"
    PERSONAL = personal("attributes")
    attributes: dict[str, str]
    verified: bool = True


class InteractionRecorded(DomainEvent, frozen=True, kw_only=True):
    """A touchpoint: one message (or status) on one channel, in or out.

    Version 2: `provider_message_id` is sealed too. Provider ids embed the person: a WhatsApp wamid
    encodes the phone number, a Telegram id starts with the user's chat id, a chat id carries the
    session and the visitor's `client_id`, an email Message-ID names the sender's host. Version 1
    stored it in clear (same fields; see `events.registry`).
    """

    NAME = "customer.InteractionRecorded"
    VERSION = 2
    PERSONAL = personal("text", "attachments", "thread_key", "meta", "provider_message_id")
    interaction_id: UUID
    channel: str
    direction: str
    kind: str
    case_id: UUID | None
    text: str
    provider_message_id: str | None = None
    thread_key: str | None = None
    attachments: list[Attachment] = []
    meta: dict[str, str] = {}
    reply_id: UUID | None = None


class CustomerMerged(DomainEvent, frozen=True, kw_only=True):
    """This customer (the survivor) absorbed another: both histories are now this customer's."""

    NAME = "customer.Merged"
    absorbed_id: UUID
    interaction_id: UUID | None = None
    by: str = ""  # who merged them by hand (a supervisor); empty for the core's own merges


class CustomerAbsorbed(DomainEvent, frozen=True, kw_only=True):
    """This customer was merged into another; its id keeps resolving to the survivor."""

    NAME = "customer.Absorbed"
    survivor_id: UUID


class MergeSuggested(DomainEvent, frozen=True, kw_only=True):
    """Evidence says two customers are one, but a rule forbids merging them automatically."""

    NAME = "customer.MergeSuggested"
    other_id: UUID
    reason: str
    interaction_id: UUID | None = None


class ConsentChanged(DomainEvent, frozen=True, kw_only=True):
    """Consent to contact the customer for `purpose` on `channel` given or withdrawn. `source` says
    how: "api:<who>", "keyword:STOP" (an SMS or WhatsApp keyword), "unsubscribe-link"."""

    NAME = "customer.ConsentChanged"
    channel: str
    granted: bool
    purpose: str = "marketing"
    source: str = ""


class ActivityRecorded(DomainEvent, frozen=True, kw_only=True):
    """A business event from the company's other systems (ERP, shop, billing): an order placed, an
    invoice paid, a delivery late. Once per `type` + `reference` (`interaction_id` derives from them).
    Its `occurred_at` is when it happened in that system, as an interaction's is."""

    NAME = "customer.ActivityRecorded"
    PERSONAL = personal("data")
    interaction_id: UUID
    type: str
    reference: str
    source: str
    amount: Decimal | None = None
    currency: str | None = None
    data: dict[str, Any] = {}


class CustomerAttributesSet(DomainEvent, frozen=True, kw_only=True):
    """Custom attribute values (checked against their definitions before); None removes a value."""

    NAME = "customer.AttributesSet"
    PERSONAL = personal("values")
    values: dict[str, Any]
    by: str


class MergeSuggestionResolved(DomainEvent, frozen=True, kw_only=True):
    """A supervisor accepted (then the merge follows) or rejected a suggested merge with `other_id`."""

    NAME = "customer.MergeSuggestionResolved"
    other_id: UUID
    accepted: bool
    by: str


class CustomerErased(DomainEvent, frozen=True, kw_only=True):
    """The customer's key was destroyed: every personal field of every event now reads redacted."""

    NAME = "customer.Erased"
    requested_by: str


def activity_summary(type_: str, reference: str, amount: Decimal | None, currency: str | None) -> str:
    """The timeline's text of an activity: `order.placed ORD-1 (42.50 EUR)`."""
    if amount is None:
        return f"{type_} {reference}"
    return f"{type_} {reference} ({amount} {currency})" if currency else f"{type_} {reference} ({amount})"


CUSTOMER_EVENTS: tuple[type[DomainEvent], ...] = (
    CustomerRegistered,
    IdentityLinked,
    IdentityClaimed,
    ProfileUpdated,
    InteractionRecorded,
    CustomerMerged,
    CustomerAbsorbed,
    MergeSuggested,
    ConsentChanged,
    CustomerAttributesSet,
    MergeSuggestionResolved,
    CustomerErased,
    ActivityRecorded,
)
