"""The shared shape of an event-sourced aggregate: commands check rules and trigger events; `apply`
is the only place state changes, so replaying stored events rebuilds exactly the same state."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from events.base import DomainEvent

E = TypeVar("E", bound=DomainEvent)

# Event ids are derived from (stream, version), which the store keeps unique: no randomness in the
# domain, and a retried command that produces the same event produces the same id.
_EVENT_NAMESPACE = uuid.UUID("7f1c2b9e-8a4d-4b1e-9f3a-2c6d5e4f3a21")


def event_id(stream_id: UUID, version: int) -> UUID:
    return uuid.uuid5(_EVENT_NAMESPACE, f"{stream_id}:{version}")


class DomainError(Exception):
    """A command broke a business rule; nothing was recorded."""


class Aggregate:
    def __init__(self, id: UUID):
        self.id = id
        self.version = 0
        self.pending: list[DomainEvent] = []

    @property
    def owner_id(self) -> UUID:
        """The customer whose key seals this aggregate's personal data."""
        raise NotImplementedError

    def _trigger(self, cls: type[E], at: datetime, **fields: Any) -> E:
        event = cls(id=event_id(self.id, self.version + 1), stream_id=self.id, version=self.version + 1,
                    occurred_at=at, customer_id=fields.pop("customer_id", None) or self.owner_id, **fields)
        self.apply(event)
        self.pending.append(event)
        return event

    def apply(self, event: DomainEvent) -> None:
        handler = getattr(self, "when_" + event.NAME.split(".", 1)[1], None)
        if handler is not None:
            handler(event)
        self.version = event.version

    def collect(self) -> list[DomainEvent]:
        pending, self.pending = self.pending, []
        return pending

    @classmethod
    def replay(cls, id: UUID, events: list[DomainEvent]):
        aggregate = cls(id)
        for event in events:
            aggregate.apply(event)
        return aggregate
