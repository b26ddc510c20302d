"""eventsourcing's `Transcoder`, with msgspec doing the JSON.

Drop-in for `JSONTranscoder`: the same `register(transcoding)` API and the same stored bytes
(`{"_type_": name, "_data_": ...}` envelopes, compact separators, UTF-8 unescaped; only floats in
exponent form are spelled differently, 1e16 for 1e+16), so either reads what the other wrote.
Where `JSONTranscoder` silently loses a type, this one keeps it: tuples (`tuple_as_list`, registered
by default) and dict/list/str/int/float subclasses with a registered transcoding come back as what
went in; unregistered subclasses are written as their builtin base, as `json` does. Not carried,
since they are not JSON: NaN and infinities (msgspec writes null, and cannot read json's `NaN`),
and bool or None dict keys (a TypeError).

Why there is still a Python walk in front of msgspec: msgspec encodes UUIDs, datetimes, Decimals,
tuples, enums and dict/list subclasses natively, without calling `enc_hook`, so an enc_hook alone
would write a UUID as a bare string and it would decode as `str`. The walk is copy-on-write: a
subtree made only of exact dicts, lists and scalars is handed to msgspec as it is, not rebuilt.
Decoding skips the walk entirely when the bytes cannot contain an envelope.
"""

from __future__ import annotations

from typing import Any

import msgspec
from eventsourcing.persistence import Transcoder, Transcoding, TranscodingNotRegisteredError

# Exact types msgspec writes exactly as `json` does; subclasses are not in here on purpose.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_TYPE_KEY = "_type_"
_DATA_KEY = "_data_"
# An envelope's key as it appears in JSON. A `\u` escape could spell it differently, so data with
# any `\u` escape takes the slow path too (only data written with ensure_ascii=True has those).
_ENVELOPE_MARK = b'"_type_"'
_UNICODE_ESCAPE = b"\\u"


class TupleAsList(Transcoding):
    type = tuple
    name = "tuple_as_list"

    def encode(self, obj: tuple[Any, ...]) -> list[Any]:
        return list(obj)

    def decode(self, data: list[Any]) -> tuple[Any, ...]:
        return tuple(data)


class MsgspecTranscoder(Transcoder):
    def __init__(self) -> None:
        self.types: dict[type, Transcoding] = {}
        self.names: dict[str, Transcoding] = {}
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()
        self.register(TupleAsList())

    def register(self, transcoding: Transcoding) -> None:
        """Registers given transcoding with the transcoder."""
        self.types[transcoding.type] = transcoding
        self.names[transcoding.name] = transcoding

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(self._prepare(obj))

    def _prepare(self, obj: Any) -> Any:
        """`obj` as exact dicts, lists and scalars; the same object when it already is."""
        cls = type(obj)
        if cls in _SCALARS:
            return obj
        if cls is dict:
            return self._prepare_dict(obj)
        if cls is list:
            return self._prepare_list(obj)
        return self._prepare_other(obj)

    def _prepare_dict(self, obj: dict[Any, Any]) -> dict[Any, Any]:
        copy: dict[Any, Any] | None = None
        for key, value in obj.items():
            cls = type(value)
            if cls in _SCALARS:
                continue
            if cls is dict:
                prepared = self._prepare_dict(value)
            elif cls is list:
                prepared = self._prepare_list(value)
            else:
                prepared = self._prepare_other(value)
            if prepared is not value:
                if copy is None:
                    copy = obj.copy()  # the caller's object is never changed
                copy[key] = prepared
        return obj if copy is None else copy

    def _prepare_list(self, obj: list[Any]) -> list[Any]:
        # A long list of scalars is common (ids, amounts); checking it in C is ~3x a Python loop.
        if _SCALARS.issuperset(map(type, obj)):
            return obj
        copy: list[Any] | None = None
        for index, value in enumerate(obj):
            cls = type(value)
            if cls in _SCALARS:
                continue
            if cls is dict:
                prepared = self._prepare_dict(value)
            elif cls is list:
                prepared = self._prepare_list(value)
            else:
                prepared = self._prepare_other(value)
            if prepared is not value:
                if copy is None:
                    copy = obj.copy()
                copy[index] = prepared
        return obj if copy is None else copy

    def _prepare_other(self, obj: Any) -> Any:
        transcoding = self.types.get(type(obj))
        if transcoding is not None:
            return {_TYPE_KEY: transcoding.name, _DATA_KEY: self._prepare(transcoding.encode(obj))}
        return self._prepare_unregistered(obj)

    def _prepare_unregistered(self, obj: Any) -> Any:
        # What `json` (and so JSONTranscoder) does with a subclass nobody registered: write it as
        # its builtin base. A tuple subclass (a namedtuple) still comes back as a tuple.
        if isinstance(obj, dict):
            return self._prepare_dict(dict(obj))
        if isinstance(obj, list):
            return self._prepare_list(list(obj))
        if isinstance(obj, tuple):
            return self._prepare(tuple(obj))
        # The base class's own conversion, not the subclass's (a str-mixin Enum's __str__ is
        # "Cls.NAME"; json writes its value).
        if isinstance(obj, str):
            return str.__str__(obj)
        if isinstance(obj, int):
            return int.__int__(obj)
        if isinstance(obj, float):
            return float.__float__(obj)
        msg = (
            f"Object of type {type(obj)} is not "
            "serializable. Please define and register "
            "a custom transcoding for this type."
        )
        raise TranscodingNotRegisteredError(msg)

    # -- decoding ------------------------------------------------------------------------------

    def decode(self, data: bytes) -> Any:
        obj = self._decoder.decode(data)
        if _ENVELOPE_MARK not in data and _UNICODE_ESCAPE not in data:
            return obj
        return self._restore(obj)

    def _restore(self, obj: Any) -> Any:
        cls = type(obj)
        if cls is dict:
            return self._restore_dict(obj)
        if cls is list:
            return self._restore_list(obj)
        return obj

    def _restore_dict(self, obj: dict[str, Any]) -> Any:
        # Bottom-up, like json's object_hook: a transcoding's decode sees its data already decoded.
        for key, value in obj.items():
            cls = type(value)
            if cls is dict:
                obj[key] = self._restore_dict(value)
            elif cls is list:
                obj[key] = self._restore_list(value)
        if len(obj) == 2 and _TYPE_KEY in obj and _DATA_KEY in obj:
            return self._decode_envelope(obj[_TYPE_KEY], obj[_DATA_KEY])
        return obj

    def _restore_list(self, obj: list[Any]) -> list[Any]:
        if _SCALARS.issuperset(map(type, obj)):
            return obj
        for index, value in enumerate(obj):
            cls = type(value)
            if cls is dict:
                obj[index] = self._restore_dict(value)
            elif cls is list:
                obj[index] = self._restore_list(value)
        return obj

    def _decode_envelope(self, name: Any, data: Any) -> Any:
        try:
            transcoding = self.names[name]
        except (KeyError, TypeError) as exc:
            msg = (
                f"Data serialized with name '{name}' is not "
                "deserializable. Please register a "
                "custom transcoding for this type."
            )
            raise TranscodingNotRegisteredError(msg) from exc
        return transcoding.decode(data)
