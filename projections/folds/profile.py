"""The profile fold: customers and their identities, each row written once."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from events.base import DomainEvent
from events.customer import (
    CustomerAbsorbed,
    CustomerAttributesSet,
    CustomerErased,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    ProfileUpdated,
)
from projections.folds.common import (
    Columns,
    Correction,
    Order,
    RawJson,
    Rows,
    _encode,
    storable,
)

# -- profile ------------------------------------------------------------------------------------

CUSTOMER_COLUMNS: Columns = (
    ("id", "uuid"),
    ("name", "text"),
    ("name_verified", "bool"),
    ("attributes", "jsonb"),
    ("first_seen", "timestamptz"),
    ("last_seen", "timestamptz"),
    ("interaction_count", "int8"),
    ("channels", "text[]"),
    ("merged_into", "uuid"),
    ("erased", "bool"),
    ("custom_attributes", "jsonb"),
)
IDENTITY_COLUMNS: Columns = (("customer_id", "uuid"), ("kind", "text"), ("value", "text"), ("verified", "bool"))


class _Customer:
    __slots__ = (
        "name",
        "name_verified",
        "attributes",
        "first_seen",
        "last_seen",
        "count",
        "channels",
        "merged_into",
        "erased",
        "custom",
    )

    def __init__(self, at):
        self.name: str | None = None
        self.name_verified = False
        self.attributes: dict[str, Any] = {}
        self.first_seen = self.last_seen = at
        self.count = 0
        self.channels: set[str] = set()
        self.merged_into: UUID | None = None
        self.erased = False
        self.custom: dict[str, Any] = {}


class ProfileFold:
    """proj_customers and proj_identities."""

    name = "profile"
    streamed: tuple[str, Columns] | None = None

    def __init__(self) -> None:
        self.customers: dict[UUID, _Customer] = {}
        self.identities: dict[UUID, dict[tuple[str, str], bool]] = {}
        self.followers: dict[UUID, set[UUID]] = {}  # merged_into → the customers with that merged_into

    def _merged_into(self, customer_id: UUID, survivor: UUID) -> None:
        c = self.customers[customer_id]
        if c.merged_into is not None:
            self.followers[c.merged_into].discard(customer_id)
        c.merged_into = survivor
        self.followers.setdefault(survivor, set()).add(customer_id)

    def apply(self, position: int, event: DomainEvent, redacted: bool) -> None:
        kind = type(event)
        customers = self.customers
        if kind is InteractionRecorded:
            storable(event.channel)  # what the database is sent fails, whether a row matches or not
            c = customers.get(event.stream_id)
            if c is not None:
                c.count += 1
                if event.occurred_at > c.last_seen:
                    c.last_seen = event.occurred_at
                c.channels.add(event.channel)
        elif kind is CustomerRegistered:
            if event.stream_id not in customers:
                customers[event.stream_id] = _Customer(event.occurred_at)
        elif kind is IdentityLinked or kind is IdentityClaimed:
            storable(event.kind, event.value)
            held = self.identities.setdefault(event.stream_id, {})
            key = (event.kind, event.value)
            held[key] = held.get(key, False) or kind is IdentityLinked
        elif kind is ProfileUpdated:
            storable(event.attributes)
            c = customers.get(event.stream_id)
            if c is not None:
                c.attributes.update(event.attributes)
                name = event.attributes.get("name")
                if name is not None and (event.verified or c.name is None or not c.name_verified):
                    c.name = name
                c.name_verified = c.name_verified or (name is not None and event.verified)
        elif kind is CustomerMerged:
            survivor, absorbed = event.stream_id, event.absorbed_id
            s, a = customers.get(survivor), customers.get(absorbed)
            if s is not None and a is not None:
                s.count += a.count
                s.first_seen = min(s.first_seen, a.first_seen)
                s.last_seen = max(s.last_seen, a.last_seen)
                s.channels |= a.channels
            theirs = self.identities.get(absorbed)
            if theirs:
                mine = self.identities.setdefault(survivor, {})
                for key, verified in theirs.items():
                    mine.setdefault(key, verified)
            for customer_id in [absorbed, *self.followers.get(absorbed, ())]:
                if customer_id in customers:
                    self._merged_into(customer_id, survivor)
        elif kind is CustomerAttributesSet:
            storable(event.values)
            c = customers.get(event.stream_id)
            if c is not None:
                for key, value in event.values.items():
                    if value is None:
                        c.custom.pop(key, None)
                    else:
                        c.custom[key] = value
        elif kind is CustomerAbsorbed:
            if event.stream_id in customers:
                self._merged_into(event.stream_id, event.survivor_id)
        elif kind is CustomerErased:
            erased = {event.stream_id, *self.followers.get(event.stream_id, ())}
            for customer_id in erased:
                c = customers.get(customer_id)
                if c is not None:
                    c.name, c.name_verified, c.attributes, c.erased = None, False, {}, True
                    c.custom = {}
                self.identities.pop(customer_id, None)

    def array_values(self) -> set[str]:
        return set().union(*(c.channels for c in self.customers.values()))

    def rows(self, order: Order) -> Rows:
        customers = [
            (
                i,
                c.name,
                c.name_verified,
                RawJson(_encode(c.attributes)),
                c.first_seen,
                c.last_seen,
                c.count,
                order(c.channels),
                c.merged_into,
                c.erased,
                RawJson(_encode(c.custom)),
            )
            for i, c in self.customers.items()
        ]
        identities = [
            (i, kind, value, verified)
            for i, held in self.identities.items()
            for (kind, value), verified in held.items()
        ]
        return {"proj_customers": (CUSTOMER_COLUMNS, customers), "proj_identities": (IDENTITY_COLUMNS, identities)}

    def corrections(self) -> list[Correction]:
        return []
