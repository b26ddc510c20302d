"""Who a touchpoint belongs to: register, link, merge or only suggest a merge.

The identity index says which customer holds each verified identity of an interaction; from that
alone this module decides, on in-memory aggregates:

- nobody holds any of them: a new customer is registered and holds them all;
- one customer holds some: it is theirs, and the identities nobody held are linked to them;
- several hold them: they are merged into the oldest (first registered; ties by id, so every core
  picks the same one), unless two of them have different `external` ids (two company-side
  accounts are two people): then a merge is only suggested, both ways, and the data stays apart;
- an `external` id nobody holds yet never gives a customer a second one: the touchpoint registers
  a customer of its own, suggested for merging with the one it would have joined.

Claims (what a chat visitor types, an email sender nobody vouched for) are recorded as claims and
never link or merge anyone. The caller loads what the index names, calls `resolve_customer`, then
writes the index rows and merges this returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from events.interactions import Identity, Interaction
from services.domain.customer import Customer

DIFFERENT_EXTERNAL_IDS = "different external ids"

_CUSTOMER_NS = uuid.UUID("3d0c5f3e-6b0a-4a8e-8f55-0d9b7f0c2e10")


def new_customer_id(interaction_id: UUID) -> UUID:
    """The id of the customer an interaction registers: derived from it, so a retry registers the same one."""
    return uuid.uuid5(_CUSTOMER_NS, str(interaction_id))


@dataclass
class Resolution:
    """What resolving one interaction decided; the aggregates carry the events."""

    customer: Customer  # whose touchpoint this is
    registered: Customer | None = None  # a customer this interaction registered (also `customer`)
    merges: list[tuple[UUID, UUID]] = field(default_factory=list)  # (absorbed, survivor), in order
    newly_held: list[Identity] = field(default_factory=list)  # verified identities nobody held: now `customer`'s


def survivor_among(customers: Sequence[Customer]) -> Customer:
    """The customer who survives when these merge: the first registered (ties by id)."""
    return min(customers, key=lambda c: (c.registered_at is None, c.registered_at, str(c.id)))


def profile_is_verified(channel: str, verified: Sequence[Identity]) -> bool:
    """What the sender calls themselves is as verified as the sender: a verified sender on a channel
    that asserts it, or a chat visitor the company's website signed for (`external`). A chat
    visitor's typed name, or an unverified From's display name, is a claim."""
    return (channel != "chat" and bool(verified)) or any(i.kind == "external" for i in verified)


def resolve_customer(
    interaction: Interaction, identities: Sequence[Identity], owners: Mapping[Identity, Customer], new_customer_id: UUID
) -> Resolution:
    """Decides and records whose touchpoint `interaction` is, linking, claiming and updating the profile.

    `identities` are the interaction's identities, normalized; `owners` maps each verified one the
    index holds to its owner's survivor (loaded, current). `new_customer_id` is the id a customer
    registered here gets (derived from the interaction, so a retry registers the same one).
    """
    at = interaction.occurred_at
    verified = [i for i in identities if i.verified]
    resolution = _resolve(interaction.id, at, verified, owners, new_customer_id)
    customer = resolution.customer
    # Who holds each identity once the merges above are made.
    moved = dict(resolution.merges)
    newly: set[Identity] = set()
    for identity in verified:
        owner = owners.get(identity)
        if owner is None:
            if identity not in newly:
                newly.add(identity)
                resolution.newly_held.append(identity)
        elif moved.get(owner.id, owner.id) != customer.id:
            continue  # held by a customer that could not be merged in (a suggested merge): stays theirs
        customer.link(identity.kind, identity.value, at)
    for identity in identities:
        if not identity.verified:
            customer.claim(identity.kind, identity.value, at)
    if interaction.profile:
        customer.update_profile(interaction.profile, profile_is_verified(interaction.channel, verified), at)
    return resolution


def _resolve(
    interaction_id: UUID,
    at: datetime,
    verified: list[Identity],
    owners: Mapping[Identity, Customer],
    new_customer_id: UUID,
) -> Resolution:
    unheld_external = {i.value for i in verified if i.kind == "external" and i not in owners}
    resolution = _merge_owners(interaction_id, at, verified, owners, new_customer_id)
    customer = resolution.customer
    if not customer.would_hold_two_external_ids(unheld_external):
        return resolution
    separate = Customer.register(new_customer_id, at)
    separate.suggest_merge(customer.id, DIFFERENT_EXTERNAL_IDS, at, interaction_id)
    customer.suggest_merge(separate.id, DIFFERENT_EXTERNAL_IDS, at, interaction_id)
    resolution.customer = resolution.registered = separate
    return resolution


def _merge_owners(
    interaction_id: UUID,
    at: datetime,
    verified: list[Identity],
    owners: Mapping[Identity, Customer],
    new_customer_id: UUID,
) -> Resolution:
    # In the order of the identities: the channel's own sender identity comes first, and decides
    # whose touchpoint this is when a merge is not allowed.
    customers: list[Customer] = []
    for identity in verified:
        owner = owners.get(identity)
        if owner is not None and all(owner.id != c.id for c in customers):
            customers.append(owner)
    if not customers:
        registered = Customer.register(new_customer_id, at)
        return Resolution(customer=registered, registered=registered)
    primary = customers[0]
    if len(customers) == 1:
        return Resolution(customer=primary)
    survivor = survivor_among(customers)
    merges: list[tuple[UUID, UUID]] = []
    for other in customers:
        if other is survivor:
            continue
        if survivor.can_merge_with(other):
            survivor.absorb(other, at, interaction_id)
            merges.append((other.id, survivor.id))
        else:
            # Two different company-side ids: a supervisor decides, the data stays apart.
            survivor.suggest_merge(other.id, DIFFERENT_EXTERNAL_IDS, at, interaction_id)
            other.suggest_merge(survivor.id, DIFFERENT_EXTERNAL_IDS, at, interaction_id)
    absorbed = {absorbed_id for absorbed_id, _ in merges}
    customer = survivor if primary is survivor or primary.id in absorbed else primary
    return Resolution(customer=customer, merges=merges)
