"""What a customer said yes and no to and what they did, folded from their own events: the values of
the filter fields `consent.PURPOSE.CHANNEL`, `activities.TYPE.count` and `activities.amount.sum`
(services.domain.filters SEGMENT_FIELDS) for one customer, with the meaning segments give them
(services/segments/members.py):

- `consent.PURPOSE.CHANNEL`: the customer's recorded word (`customer.ConsentChanged`; a merge
  carries the absorbed customer's word over as the survivor's own event), else the consent policy
  (`services.domain.consent.allowed`: under `implied`, having written to us on that channel);
- `activities.TYPE.count`: how many activities of that type (none: 0);
- `activities.amount.sum`: the sum of every activity's amount, all types and currencies (none: 0).

A merged customer's figures are the family's (`combine`): the survivor's consent, the channels and
activities of everyone in it. Pure: the caller loads the events (automation rules read a customer
this way, from the log, so that a rule sees the very event that triggered it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from events.base import DomainEvent
from events.customer import (
    ActivityRecorded,
    ConsentChanged,
    CustomerAbsorbed,
    CustomerErased,
    CustomerMerged,
    InteractionRecorded,
)
from services.domain import consent


@dataclass
class CustomerFacts:
    consents: dict[tuple[str, str], bool] = field(default_factory=dict)  # (purpose, channel) → given
    wrote_on: set[str] = field(default_factory=set)  # channels the customer wrote to us on
    activity_counts: dict[str, int] = field(default_factory=dict)  # activity type → how many
    amount_sum: Decimal = Decimal(0)
    absorbed: list[UUID] = field(default_factory=list)
    survivor_id: UUID | None = None
    erased: bool = False


def fold(events: Iterable[DomainEvent]) -> CustomerFacts:
    """One customer's facts from their stream's events, oldest first."""
    facts = CustomerFacts()
    for event in events:
        if isinstance(event, ConsentChanged):
            facts.consents[(event.purpose, event.channel)] = event.granted
        elif isinstance(event, InteractionRecorded):
            # as proj_customer_inbound_channels: an inbound message, not a provider's status report
            if event.direction == "inbound" and event.kind != "status":
                facts.wrote_on.add(event.channel)
        elif isinstance(event, ActivityRecorded):
            facts.activity_counts[event.type] = facts.activity_counts.get(event.type, 0) + 1
            facts.amount_sum += event.amount or 0
        elif isinstance(event, CustomerMerged):
            facts.absorbed.append(event.absorbed_id)
        elif isinstance(event, CustomerAbsorbed):
            facts.survivor_id = event.survivor_id
        elif isinstance(event, CustomerErased):
            facts.erased = True
    return facts


def combine(family: Sequence[CustomerFacts]) -> CustomerFacts:
    """A merged family's facts: `family[0]` the survivor (its consent stands), then the absorbed."""
    survivor = family[0]
    out = CustomerFacts(
        consents=dict(survivor.consents),
        absorbed=list(survivor.absorbed),
        survivor_id=survivor.survivor_id,
        erased=survivor.erased,
    )
    for member in family:
        out.wrote_on |= member.wrote_on
        for kind, count in member.activity_counts.items():
            out.activity_counts[kind] = out.activity_counts.get(kind, 0) + count
        out.amount_sum += member.amount_sum
    return out


def value_of(facts: CustomerFacts, field_name: str, policy: consent.Policy) -> object:
    """The value of a `consent.*` or `activities.*` filter field; None for any other field or an
    erased customer (a missing value: a condition holds only with `ne`, as in segments, which leave
    erased customers out)."""
    if facts.erased:
        return None
    prefix, _, rest = field_name.partition(".")
    if prefix == "consent":
        purpose, _, channel = rest.partition(".")
        return consent.allowed(facts.consents.get((purpose, channel)), channel in facts.wrote_on, policy)
    if field_name == "activities.amount.sum":
        return facts.amount_sum
    if prefix == "activities" and rest.endswith(".count"):
        return facts.activity_counts.get(rest.removesuffix(".count"), 0)
    return None


def reads(field_name: str) -> bool:
    """Is this customer field one of those read from the customer's events (see `value_of`)?"""
    return field_name.startswith(("consent.", "activities."))
