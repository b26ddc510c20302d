"""The shared shape of an event-sourced aggregate: commands check rules and trigger events; `apply`
is the only place state changes, so replaying stored events rebuilds exactly the same state."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
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


class UndeclaredEventError(DomainError):
    """An aggregate was handed an event it does not declare: a stream mix-up, never replayed silently."""


class Aggregate:
    """Subclasses declare their events in `EVENTS` and handle each in `when_<Name>` (the part of the
    event's NAME after the dot: `case.Opened` → `when_Opened`), or list it in `STATELESS` when it
    changes no state of theirs. Checked once, when the class is created: a misspelt handler, a
    missing one or a handler for an undeclared event is a TypeError at import, not an event whose
    state is silently dropped on replay."""

    EVENTS: ClassVar[tuple[type[DomainEvent], ...]] = ()
    STATELESS: ClassVar[tuple[type[DomainEvent], ...]] = ()
    # Event class → its handler (None: declared stateless), built by `__init_subclass__`.
    _handlers: ClassVar[dict[type[DomainEvent], Callable[[Any, Any], None] | None]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = handlers_of(cls)

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
        event = cls(
            id=event_id(self.id, version, self._id_prefix),
            stream_id=self.id,
            version=version,
            occurred_at=at,
            customer_id=fields.pop("customer_id", None) or self.owner_id,
            **fields,
        )
        self.apply(event)
        self.pending.append(event)
        return event

    def apply(self, event: DomainEvent) -> None:
        try:
            handler = self._handlers[type(event)]
        except KeyError:
            raise UndeclaredEventError(f"{type(self).__name__} does not handle {event.NAME}") from None
        if handler is not None:
            handler(self, event)
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


def handler_name(event: type[DomainEvent]) -> str:
    return "when_" + event.NAME.split(".", 1)[1]


def handlers_of(cls: type[Aggregate]) -> dict[type[DomainEvent], Callable[[Any, Any], None] | None]:
    """Every declared event of `cls` mapped to its handler; TypeError when the two do not match."""
    declared = {handler_name(event): event for event in cls.EVENTS}
    stateless = set(cls.STATELESS)
    if not stateless <= set(cls.EVENTS):
        names = sorted(e.NAME for e in stateless - set(cls.EVENTS))
        raise TypeError(f"{cls.__name__}.STATELESS lists events it does not declare: {', '.join(names)}")
    handlers: dict[type[DomainEvent], Callable[[Any, Any], None] | None] = {}
    for name, event in declared.items():
        handler = getattr(cls, name, None)
        if event in stateless:
            if handler is not None:
                raise TypeError(f"{cls.__name__}.{name} handles {event.NAME}, which STATELESS says changes nothing")
            handlers[event] = None
        elif handler is None:
            raise TypeError(f"{cls.__name__} declares {event.NAME} but has no {name}")
        else:
            handlers[event] = handler
    strays = sorted(n for n in dir(cls) if n.startswith("when_") and n not in declared)
    if strays:
        raise TypeError(
            f"{cls.__name__} has handlers for no declared event: {', '.join(strays)} "
            f"(misspelt, or the event is missing from EVENTS)"
        )
    return handlers
