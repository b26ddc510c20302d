"""The shared shape of an event-sourced aggregate: commands check rules and trigger events; `apply`
is the only place state changes, so replaying stored events rebuilds exactly the same state."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, ClassVar, Self, TypeVar
from uuid import UUID, SafeUUID

from events.base import DomainEvent

E = TypeVar("E", bound=DomainEvent)

# Event ids are derived from (stream, version), which the store keeps unique: no randomness in the
# domain, and a retried command that produces the same event produces the same id.
_EVENT_NAMESPACE = uuid.UUID("7f1c2b9e-8a4d-4b1e-9f3a-2c6d5e4f3a21")


_EVENT_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes
_VERSION_5 = ~(0xC000 << 48) & ~(0xF000 << 64)
_new_uuid, _set = object.__new__, object.__setattr__


def event_id(stream_id: UUID, version: int, prefix: bytes | None = None) -> UUID:
    """uuid5(namespace, "stream:version"), spelled out: it runs for every event the core writes.

    `prefix` (the namespace and the stream id, as `_event_id_prefix` makes it) saves formatting the
    stream id again for every event of an aggregate.
    """
    digest = hashlib.sha1((prefix or _event_id_prefix(stream_id)) + b"%d" % version).digest()
    # What UUID(bytes=digest[:16], version=5) does, without its argument checks.
    value = (int.from_bytes(digest[:16], "big") & _VERSION_5) | (0x8000 << 48) | (5 << 76)
    uid = _new_uuid(UUID)
    _set(uid, "int", value)
    _set(uid, "is_safe", SafeUUID.unknown)
    return uid


def _event_id_prefix(stream_id: UUID) -> bytes:
    return b"%s%s:" % (_EVENT_NAMESPACE_BYTES, str(stream_id).encode())


class DomainError(Exception):
    """A command broke a business rule; nothing was recorded."""


class Aggregate:
    # Event class → the name of its `when_…` method (None: the event changes no state here).
    _handlers: ClassVar[dict[type, str | None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = {}

    def __init__(self, id: UUID):
        self.id = id
        self.version = 0
        self.pending: list[DomainEvent] = []
        self._id_prefix = _event_id_prefix(id)

    @property
    def owner_id(self) -> UUID:
        """The customer whose key seals this aggregate's personal data."""
        raise NotImplementedError

    def _trigger(self, cls: type[E], at: datetime, **fields: Any) -> E:
        version = self.version + 1
        event = cls(id=event_id(self.id, version, self._id_prefix), stream_id=self.id, version=version, occurred_at=at,
                    customer_id=fields.pop("customer_id", None) or self.owner_id, **fields)
        self.apply(event)
        self.pending.append(event)
        return event

    def apply(self, event: DomainEvent) -> None:
        cls = type(event)
        try:
            name = self._handlers[cls]
        except KeyError:
            name = "when_" + cls.NAME.split(".", 1)[1]
            name = self._handlers[cls] = name if hasattr(self, name) else None
        if name is not None:
            getattr(self, name)(event)
        self.version = event.version

    def collect(self) -> list[DomainEvent]:
        pending, self.pending = self.pending, []
        return pending

    @classmethod
    def replay(cls, id: UUID, events: list[DomainEvent]) -> Self:
        aggregate = cls(id)
        for event in events:
            aggregate.apply(event)
        return aggregate
