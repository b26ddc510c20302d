"""Customer snapshots: a customer with a long history loads from its latest snapshot plus the events
after it, instead of replaying (and decrypting) every touchpoint it ever had.

A snapshot is the state of a customer at a stream version, as the replay of its events up to that
version builds it. It holds personal data (identities, profile), so it is sealed with the
customer's own key, like the personal fields of its events: erasing the customer (destroying the
key) makes its snapshot unreadable, and a customer whose snapshot cannot be opened is replayed from
its events, as before. Snapshots are a cache of the event log, never a record: dropping the table
loses nothing.

The core writes one when loading a customer took more than `SNAPSHOT_AFTER` events since the last
one, in the batch's transaction (it describes committed events only, so it stays true whether the
batch commits or not).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.domain.customer import Customer, RecentIds

# Events replayed beyond the last snapshot before a new one is written.
SNAPSHOT_AFTER = 200
_FORMAT = 1


class CustomerState(msgspec.Struct, array_like=True, frozen=True):
    """Every attribute of a Customer (the aggregate's own bookkeeping aside), in a stable shape."""

    registered_at: datetime | None
    identities: list[tuple[str, str]]
    claims: list[tuple[str, str]]
    profile: dict[str, str]
    threads: dict[str, UUID]
    interactions: list[UUID]
    absorbed: list[UUID]
    survivor_id: UUID | None
    suggested: list[UUID]
    erased: bool
    consents: list[tuple[str, str, bool]]  # (purpose, channel, given)
    attributes: dict[str, Any]
    suggestions_resolved: dict[UUID, bool]
    inbound_channels: list[str]


# The aggregate's own bookkeeping, rebuilt by the constructor: not part of a snapshot.
_BOOKKEEPING = {"id", "version", "pending", "_id_prefix"}
STATE_FIELDS = set(CustomerState.__struct_fields__)
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CustomerState)


def covers_every_field() -> bool:
    """Whether CustomerState names every attribute a Customer has (a new one must be added here)."""
    return set(vars(Customer(UUID(int=0)))) - _BOOKKEEPING == STATE_FIELDS


def state_of(customer: Customer) -> bytes:
    return _ENCODER.encode(
        CustomerState(
            registered_at=customer.registered_at,
            identities=sorted(customer.identities),
            claims=sorted(customer.claims),
            profile=customer.profile,
            threads=customer.threads,
            interactions=list(customer.interactions),
            absorbed=customer.absorbed,
            survivor_id=customer.survivor_id,
            suggested=sorted(customer.suggested),
            erased=customer.erased,
            consents=sorted((purpose, channel, given) for (purpose, channel), given in customer.consents.items()),
            attributes=customer.attributes,
            suggestions_resolved=customer.suggestions_resolved,
            inbound_channels=sorted(customer.inbound_channels),
        )
    )


def customer_from(customer_id: UUID, version: int, state: bytes) -> Customer:
    s = _DECODER.decode(state)
    customer = Customer(customer_id)
    customer.version = version
    customer.registered_at = s.registered_at
    customer.identities = {tuple(i) for i in s.identities}  # type: ignore[misc]
    customer.claims = {tuple(c) for c in s.claims}  # type: ignore[misc]
    customer.profile = dict(s.profile)
    customer.threads = dict(s.threads)
    customer.interactions = RecentIds()
    for interaction_id in s.interactions:
        customer.interactions.add(interaction_id)
    customer.absorbed = list(s.absorbed)
    customer.survivor_id = s.survivor_id
    customer.suggested = set(s.suggested)
    customer.erased = s.erased
    customer.consents = {(purpose, channel): given for purpose, channel, given in s.consents}
    customer.attributes = dict(s.attributes)
    customer.suggestions_resolved = dict(s.suggestions_resolved)
    customer.inbound_channels = set(s.inbound_channels)
    return customer


def _aad(customer_id: UUID, version: int) -> bytes:
    return b"snapshot:%d:%s:%d" % (_FORMAT, customer_id.bytes, version)


def seal(customer: Customer, aead: AESGCM) -> bytes:
    nonce = os.urandom(12)
    return nonce + aead.encrypt(nonce, state_of(customer), _aad(customer.id, customer.version))


def open_sealed(customer_id: UUID, version: int, sealed: bytes, aead: AESGCM) -> Customer | None:
    """The customer the snapshot describes, or None when it does not verify (then: replay)."""
    try:
        state = aead.decrypt(sealed[:12], sealed[12:], _aad(customer_id, version))
        return customer_from(customer_id, version, state)
    except (InvalidTag, ValueError, msgspec.DecodeError):
        return None


# -- SQL (the table: services.platform.schema CORE) ----------------------------------------------


def stored(curs: Any, ids: Sequence[UUID]) -> dict[UUID, tuple[int, bytes]]:
    """The latest snapshot (version, sealed state) of each of these customers that has one."""
    curs.execute(
        "SELECT stream_id, version, state FROM sb_snapshots WHERE stream_id = ANY(%s::uuid[])",
        (list(ids),),
        prepare=True,
    )
    return {row["stream_id"]: (row["version"], bytes(row["state"])) for row in curs.fetchall()}


def write(curs: Any, customer_id: UUID, version: int, sealed: bytes) -> None:
    """Keeps the snapshot unless a newer one is already there (two cores may write at once)."""
    curs.execute(
        "INSERT INTO sb_snapshots (stream_id, version, state) VALUES (%s, %s, %s) "
        "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state "
        "WHERE sb_snapshots.version < EXCLUDED.version",
        (customer_id, version, sealed),
        prepare=True,
    )
