"""Domain event ↔ stored event: the one place that decides the bytes the log keeps.

A stored event's topic is the event's stable `NAME`; its state is JSON:

    {"v": VERSION, "d": {clear fields}, "p": nonce ‖ AES-GCM(customer key, personal fields)}

Ids, names, timestamps and positions stay in clear so the log can be indexed, projected and
audited without keys; the personal fields are sealed with the customer's own key, bound to the
event's stream id, version and name as associated data so a ciphertext cannot be moved to another
event. After erasure the key is gone and the personal fields decode as redacted.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from events.base import DomainEvent
from events.registry import REGISTRY, EventRegistry
from services.eventstore.keys import KeyDestroyedError

REDACTED = "[erased]"

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode

_ROW_FIELDS = ("stream_id", "version")


class StoredState(msgspec.Struct, omit_defaults=True):
    v: int
    d: dict[str, Any]
    p: bytes | None = None


_state_decode = msgspec.json.Decoder(StoredState).decode


def _aad(stream_id: UUID, version: int, name: str) -> bytes:
    return b"%s|%d|%s" % (stream_id.bytes, version, name.encode())


def _redacted_value(cls: type[DomainEvent], field: str) -> Any:
    info = msgspec.inspect.type_info(cls)
    for f in info.fields:
        if f.name == field:
            t = f.type
            if isinstance(t, msgspec.inspect.UnionType):
                if any(isinstance(x, msgspec.inspect.NoneType) for x in t.types):
                    return None
                t = t.types[0]
            if isinstance(t, msgspec.inspect.StrType):
                return REDACTED
            if isinstance(t, msgspec.inspect.DictType):
                return {}
            if isinstance(t, msgspec.inspect.ListType):
                return []
    return None


class EventCodec(Mapper):
    """eventsourcing's Mapper, reimplemented for frozen msgspec Structs with sealed personal fields.

    `seal(event, aead)` and `open_(stored, aead)` take the customer's key explicitly; the store
    decides which key (and whether it still exists).
    """

    def __init__(self, registry: EventRegistry = REGISTRY, transcoder: Transcoder | None = None):
        super().__init__(transcoder=transcoder)  # type: ignore[arg-type]
        self.registry = registry
        self._redactions: dict[str, dict[str, Any]] = {}

    # -- writing -------------------------------------------------------------------------------

    def seal(self, event: DomainEvent, aead: AESGCM | None) -> StoredEvent:
        cls = type(event)
        data = msgspec.structs.asdict(event)
        for name in _ROW_FIELDS:
            del data[name]
        data.pop("redacted", None)
        sealed = None
        if cls.PERSONAL:
            personal = {k: data.pop(k) for k in cls.PERSONAL}
            if aead is None:
                raise KeyDestroyedError(str(event.customer_id))
            nonce = os.urandom(12)
            sealed = nonce + aead.encrypt(nonce, _pack(personal), _aad(event.stream_id, event.version, cls.NAME))
        state = _json_encode(StoredState(v=cls.VERSION, d=data, p=sealed))
        return StoredEvent(originator_id=event.stream_id, originator_version=event.version, topic=cls.NAME, state=state)

    # -- reading -------------------------------------------------------------------------------

    def open_fields(self, stored: StoredEvent, aead: AESGCM | None) -> tuple[dict[str, Any], bool]:
        """The event's fields as a dict (current version), and whether personal fields were redacted."""
        state = _state_decode(stored.state)
        data = state.d
        redacted = False
        if state.p is not None:
            if aead is None:
                data.update(self.redactions(stored.topic))
                redacted = True
            else:
                try:
                    data.update(_unpack(aead.decrypt(state.p[:12], state.p[12:], _aad(
                        _as_uuid(stored.originator_id), stored.originator_version, stored.topic))))
                except InvalidTag as exc:
                    raise ValueError(f"sealed fields of {stored.topic} v{stored.originator_version} do not verify") from exc
        if state.v != self.registry.cls(stored.topic).VERSION:
            data = self.registry.upcast(stored.topic, state.v, data)
        data["stream_id"] = stored.originator_id
        data["version"] = stored.originator_version
        return data, redacted

    def open_(self, stored: StoredEvent, aead: AESGCM | None) -> DomainEvent:
        data, _ = self.open_fields(stored, aead)
        return msgspec.convert(data, self.registry.cls(stored.topic), strict=False)

    def customer_of(self, stored: StoredEvent) -> UUID:
        """Whose key seals this event: readable without any key."""
        return UUID(_json_decode(stored.state)["d"]["customer_id"])

    def redactions(self, name: str) -> dict[str, Any]:
        found = self._redactions.get(name)
        if found is None:
            cls = self.registry.cls(name)
            found = self._redactions[name] = {f: _redacted_value(cls, f) for f in cls.PERSONAL}
        return found

    # eventsourcing's Mapper interface, for code that expects one. Keys come from the store, so
    # these work only for events without personal fields.
    def to_stored_event(self, domain_event):  # type: ignore[override]
        return self.seal(domain_event, None)

    def to_domain_event(self, stored_event):  # type: ignore[override]
        return self.open_(stored_event, None)


def _as_uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
