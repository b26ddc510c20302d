"""The one sanitiser for free text entering Switchboard, from any channel, connector or API body.

Why: PostgreSQL `text` cannot hold NUL, so a single message with a NUL character would make every
read model that stores its text fail the same batch forever. Other C0 control characters are no
text a person wrote either (they move terminals' cursors, forge log lines, break CSV exports), and a
lone surrogate (what Python's `surrogateescape` makes of undecodable bytes) cannot be encoded as
UTF-8 at all. So text is cleaned once, where it enters:

- NUL and the C0 controls other than tab and newline are removed;
- CR LF and a lone CR become LF (the line breaks of every platform read the same afterwards);
- a lone surrogate becomes U+FFFD, the replacement character (something was there).

Everything else, every letter of every script and emoji included, passes unchanged. `sanitize`
walks strings, lists, tuples, dicts (keys too) and msgspec Structs, and returns its argument itself
when nothing needed cleaning, so clean input costs one regex scan per string and no copies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgspec

T = TypeVar("T")

# Anything `clean_text` would change: C0 controls except TAB (09) and LF (0a), and lone surrogates.
_DIRTY = re.compile("[\x00-\x08\x0b-\x1f\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATES = re.compile("[\ud800-\udfff]")
# In JSON a control character or a surrogate can only appear escaped: `\u0000`, `\b`, `\f`, `\r`.
_JSON_ESCAPES = re.compile(rb"\\[ubfr]")

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """`text` without NUL and C0 controls (tab and newline kept; CR LF and CR become LF) and with
    lone surrogates replaced by U+FFFD."""
    if _DIRTY.search(text) is None:
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub(REPLACEMENT, text)


def is_clean(text: str) -> bool:
    return _DIRTY.search(text) is None


def sanitize(value: T) -> T:
    """`value` with every string in it cleaned (see `clean_text`): strings, and recursively lists,
    tuples, dicts (keys and values) and msgspec Structs. Other values (ids, times, numbers) are
    returned as they are. Returns `value` itself when nothing changed."""
    return cast(T, _sanitize(value))


def _sanitize(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, msgspec.Struct):
        changes = {}
        for name in value.__struct_fields__:
            old = getattr(value, name)
            new = _sanitize(old)
            if new is not old:
                changes[name] = new
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, list | tuple):
        cleaned = [_sanitize(item) for item in value]
        if all(new is old for new, old in zip(cleaned, value, strict=True)):
            return value
        return cleaned if isinstance(value, list) else type(value)(cleaned)
    if isinstance(value, dict):
        changed = False
        out = {}
        for key, item in value.items():
            new_key, new_item = _sanitize(key), _sanitize(item)
            changed = changed or new_key is not key or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    return value


def json_may_need_cleaning(data: bytes) -> bool:
    """False when a JSON document certainly decodes to clean strings (no escape that could stand for
    a control character or a surrogate): lets a hot path skip walking what it decoded."""
    return _JSON_ESCAPES.search(data) is not None


def sanitized_json(value: T, encode: Callable[[Any], bytes]) -> tuple[T, bytes]:
    """`sanitize(value)` and its JSON by `encode` (a msgspec JSON encoder), walking `value` only when
    its JSON shows something to clean: every character `clean_text` changes comes out of msgspec
    escaped (`\\u00XX`, `\\b`, `\\f`, `\\r`), and a lone surrogate does not encode at all. Clean input,
    the usual case, costs one encode and one scan of the bytes."""
    try:
        data = encode(value)
    except UnicodeEncodeError:  # a lone surrogate somewhere
        data = None
    if data is None or json_may_need_cleaning(data):
        value = sanitize(value)
        data = encode(value)
    return value, data
