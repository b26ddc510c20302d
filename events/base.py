"""The base of every domain event.

Fields that identify or describe a person are listed in `PERSONAL`; the event store encrypts them
with the customer's own key (crypto-shredding) and keeps every other field in clear.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

import msgspec


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True):
    NAME: ClassVar[str]
    VERSION: ClassVar[int] = 1
    # Fields encrypted with the customer's key. Everything else is stored in clear.
    PERSONAL: ClassVar[frozenset[str]] = frozenset()

    id: UUID  # the event's own id: Nats-Msg-Id on SB_EVENTS
    stream_id: UUID  # the aggregate (customer or case) the event belongs to
    version: int  # position within that aggregate's stream, from 1
    occurred_at: datetime
    # The customer whose key seals this event's personal fields (the customer itself, or a case's).
    customer_id: UUID


def personal(*names: str) -> frozenset[str]:
    return frozenset(names)
