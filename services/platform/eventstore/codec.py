"""Domain event ↔ stored event: the one place that decides the bytes the log keeps.

A stored event's topic is the event's stable `NAME`; its state is JSON:

    {"v": VERSION, "d": {clear fields}, "p": base64(nonce ‖ AES-GCM(customer key, msgpack(personal fields)))}

Ids, names, timestamps and positions stay in clear so the log can be indexed, projected and
audited without keys; the personal fields are sealed with the customer's own key, bound to the
event's stream id, version and name as associated data so a ciphertext cannot be moved to another
event (a moved or altered one fails loudly, `TamperedEventError`). After erasure the key is gone and
the personal fields decode as redacted values (`REDACTED` for text, None, empty lists and maps).

The stored bytes are never rewritten: an event stored at an older `VERSION` is lifted to the
current one on every read by the upcasters of `events.registry`.
"""

from __future__ import annotations

import binascii
import functools
import os
from typing import Any
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from events.base import DomainEvent
from events.registry import REGISTRY, EventRegistry
from services.platform.eventstore.keys import KeyDestroyedError

REDACTED = "[erased]"

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode

_ROW_FIELDS = ("stream_id", "version")


class StoredState(msgspec.Struct, omit_defaults=True):
    """What `state` holds; written with `d` as a dict."""

    v: int
    d: dict[str, Any]
    p: bytes | None = None


class StoredView(msgspec.Struct):
    """`state` as read: the clear fields stay undecoded JSON, so they are parsed at most once, typed.

    `p` stays base64 text until there is a key to open it with (binascii decodes it ~3x faster).
    """

    v: int
    d: msgspec.Raw
    p: str | None = None


class _Owner(msgspec.Struct):
    customer_id: UUID


_view_decode = msgspec.json.Decoder(StoredView).decode
_OWNER_KEY = b'"customer_id":"'
_OWNER_END = len(_OWNER_KEY) + 36
_owner_decode = msgspec.json.Decoder(_Owner).decode


def _aad(stream_id: UUID, version: int, name: str) -> bytes:
    return b"%s|%d|%s" % (stream_id.bytes, version, name.encode())


def _join_objects(*objects: bytes | msgspec.Raw) -> bytes:
    """JSON objects (bytes) merged into one, keys in order; `{}`s are skipped."""
    inner = [memoryview(o)[1:-1] for o in objects if len(o) > 2]
    return b"{" + b",".join(inner) + b"}"


@functools.cache
def _personal_fields(cls: type[DomainEvent]) -> tuple[str, ...]:
    """The personal fields in declaration order (a frozenset's order changes from process to process)."""
    unknown = cls.PERSONAL - set(cls.__struct_fields__)
    if unknown:
        raise TypeError(f"{cls.__qualname__}.PERSONAL names no field {', '.join(sorted(unknown))}")
    return tuple(f for f in cls.__struct_fields__ if f in cls.PERSONAL)


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


class TamperedEventError(ValueError):
    """Sealed fields that do not decrypt with their customer's key: the row was altered or moved."""


class EventCodec(Mapper):
    """eventsourcing's Mapper, reimplemented for frozen msgspec Structs with sealed personal fields.

    `seal(event, aead)` and `open_(stored, aead)` take the customer's key explicitly; the store
    decides which key (and whether it still exists).
    """

    def __init__(self, registry: EventRegistry = REGISTRY, transcoder: Transcoder | None = None):
        super().__init__(transcoder=transcoder)  # type: ignore[arg-type]
        self.registry = registry
        self._redactions: dict[str, dict[str, Any]] = {}
        self._redactions_json: dict[str, bytes] = {}
        self._decoders: dict[type, Any] = {}

    # -- writing -------------------------------------------------------------------------------

    def seal(self, event: DomainEvent, aead: AESGCM | None) -> StoredEvent:
        cls = type(event)
        data = msgspec.structs.asdict(event)
        for name in _ROW_FIELDS:
            del data[name]
        data.pop("redacted", None)
        sealed = None
        if cls.PERSONAL:
            personal = {k: data.pop(k) for k in _personal_fields(cls)}
            if aead is None:
                raise KeyDestroyedError(str(event.customer_id))
            nonce = os.urandom(12)
            sealed = nonce + aead.encrypt(nonce, _pack(personal), _aad(event.stream_id, event.version, cls.NAME))
        state = _json_encode(StoredState(v=cls.VERSION, d=data, p=sealed))
        return StoredEvent(originator_id=event.stream_id, originator_version=event.version, topic=cls.NAME, state=state)

    # -- reading -------------------------------------------------------------------------------
    #
    # The hot path (replay, projections, loading aggregates) never builds a dict of the clear fields:
    # the stored JSON of `d` is spliced with the JSON of the personal fields and decoded once, typed,
    # straight into the event class (or written out as the replay payload). Only an event stored at
    # an older version takes the dict path, through the upcasters.

    @staticmethod
    def view(state: bytes) -> StoredView:
        return _view_decode(state)

    @staticmethod
    def owner(view: StoredView) -> UUID:
        """Whose key seals this event: readable without any key."""
        return _owner_decode(view.d).customer_id

    @staticmethod
    def owner_text(state: bytes) -> bytes | None:
        """`owner` for the hot path: the customer id's 36 characters, found without parsing.

        `seal` writes `{"v":…,"d":{"id":…,"occurred_at":…,"customer_id":…` (the base fields come
        first, and a quote inside any JSON string is escaped), so the first such key is the owner.
        """
        i = state.find(_OWNER_KEY)
        if i < 0 or state[i + _OWNER_END : i + _OWNER_END + 1] != b'"':
            return None
        return state[i + len(_OWNER_KEY) : i + _OWNER_END]

    def customer_of(self, stored: StoredEvent) -> UUID:
        return self.owner(self.view(stored.state))

    def needs_key(self, topic: str, view: StoredView) -> bool:
        """Whether reading this event depends on its owner's key: it has sealed fields, or it was stored
        at an older version, before some of its fields were sealed (those read redacted after erasure)."""
        if view.p is not None:
            return True
        cls = self.registry.cls(topic)
        return bool(cls.PERSONAL) and view.v != cls.VERSION

    def _personal(
        self, topic: str, stream_id: UUID, version: int, view: StoredView, aead: AESGCM | None
    ) -> tuple[bytes | None, bool]:
        """The personal fields as msgpack (None when redacted), and whether they were redacted.

        `aead` None means the owner was erased. For an event with nothing sealed, the caller passes
        None only when it looked the owner up (`needs_key`) and found the key destroyed.
        """
        if view.p is None:
            return None, aead is None and self.needs_key(topic, view)
        if aead is None:
            return None, True
        try:
            sealed = binascii.a2b_base64(view.p, strict_mode=True)
            if len(sealed) < 28:  # a nonce and a tag at least
                raise InvalidTag
            return aead.decrypt(sealed[:12], sealed[12:], _aad(stream_id, version, topic)), False
        except (InvalidTag, binascii.Error) as exc:
            raise TamperedEventError(
                f"sealed fields of {topic} (stream {stream_id} v{version}) do not verify: altered, moved to "
                "another event, or sealed with another key"
            ) from exc

    def payload(
        self, topic: str, stream_id: UUID, version: int, view: StoredView, aead: AESGCM | None
    ) -> tuple[bytes, bool]:
        """The event's fields (current version, without stream id and version) as a JSON object."""
        packed, redacted = self._personal(topic, stream_id, version, view, aead)
        if view.v != self.registry.cls(topic).VERSION:
            data = self._upcast_fields(topic, view, packed, redacted)
            return _json_encode(data), redacted
        if redacted:
            return _join_objects(view.d, self.redactions_json(topic)), True
        if packed is None:
            return bytes(view.d), False
        return _join_objects(view.d, _json_encode(_unpack(packed))), False

    def open_view(
        self, topic: str, stream_id: UUID, version: int, view: StoredView, aead: AESGCM | None
    ) -> tuple[DomainEvent, bool]:
        """The domain event (current version), and whether its personal fields were redacted."""
        cls = self.registry.cls(topic)
        packed, redacted = self._personal(topic, stream_id, version, view, aead)
        if view.v != cls.VERSION:
            data = self._upcast_fields(topic, view, packed, redacted)
            data["stream_id"], data["version"] = stream_id, version
            return msgspec.convert(data, cls, strict=False), redacted
        row = b'{"stream_id":"%s","version":%d}' % (str(stream_id).encode(), version)
        if redacted:
            personal = self.redactions_json(topic)
        elif packed is not None:
            personal = _json_encode(_unpack(packed))
        else:
            personal = b"{}"
        return self._decoder(cls)(_join_objects(row, view.d, personal)), redacted

    def open_(self, stored: StoredEvent, aead: AESGCM | None) -> DomainEvent:
        return self.open_view(
            stored.topic, as_uuid(stored.originator_id), stored.originator_version, self.view(stored.state), aead
        )[0]

    def open_fields(self, stored: StoredEvent, aead: AESGCM | None) -> tuple[dict[str, Any], bool]:
        """The event's fields as a dict (current version), and whether personal fields were redacted."""
        stream_id = as_uuid(stored.originator_id)
        payload, redacted = self.payload(
            stored.topic, stream_id, stored.originator_version, self.view(stored.state), aead
        )
        data = _json_decode(payload)
        data["stream_id"] = stored.originator_id
        data["version"] = stored.originator_version
        return data, redacted

    def _upcast_fields(self, topic: str, view: StoredView, packed: bytes | None, redacted: bool) -> dict[str, Any]:
        data = _json_decode(view.d)
        if redacted:
            data.update(self.redactions(topic))
        elif packed is not None:
            data.update(_unpack(packed))
        return self.registry.upcast(topic, view.v, data)

    def _decoder(self, cls: type[DomainEvent]):
        found = self._decoders.get(cls)
        if found is None:
            found = self._decoders[cls] = msgspec.json.Decoder(cls).decode
        return found

    def redactions(self, name: str) -> dict[str, Any]:
        """What the personal fields of this event type read as once the key is gone."""
        found = self._redactions.get(name)
        if found is None:
            cls = self.registry.cls(name)
            found = self._redactions[name] = {f: _redacted_value(cls, f) for f in _personal_fields(cls)}
        return found

    def redactions_json(self, name: str) -> bytes:
        found = self._redactions_json.get(name)
        if found is None:
            found = self._redactions_json[name] = _json_encode(self.redactions(name))
        return found

    # eventsourcing's Mapper interface, for code that expects one. Keys come from the store, so
    # these work only for events without personal fields.
    def to_stored_event(self, domain_event):  # type: ignore[override]
        return self.seal(domain_event, None)

    def to_domain_event(self, stored_event):  # type: ignore[override]
        return self.open_(stored_event, None)


def as_uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
