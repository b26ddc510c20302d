"""Custom attributes: values checked against their definitions before they are recorded.

Pure: the caller loads the definitions (`AttributeDefined`, the last of each key's stream) and
hands them in. A change is all or nothing: the first key that is not defined for that kind of
record, or whose value is not of its type, rejects the whole change, naming the key.

Types and the JSON values they take (None, JSON null, removes a value):
- text: a string (at most `MAX_TEXT` characters);
- number: a JSON number (not a boolean), finite;
- date: an ISO 8601 date or date-time string ("2026-11-26", "2026-11-26T10:00:00+01:00"), kept as
  the normalised ISO text;
- boolean: true or false;
- list: one of the definition's `options`, as a string.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any

from events.config import AttributeDefined
from services.domain.aggregate import DomainError

MAX_TEXT = 2000
KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class InvalidAttribute(DomainError):
    """A value (or key) that its definition does not allow; `key` names it."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"attribute {key!r}: {reason}")
        self.key = key


def valid_key(key: str) -> bool:
    """Keys are short lower-case names: letters, digits, `_`, `.`, `-`, starting with a letter."""
    return bool(KEY.match(key))


def checked_values(
    values: dict[str, Any], definitions: dict[str, AttributeDefined | None], applies_to: str
) -> dict[str, Any]:
    """The values as they are recorded (dates normalised); InvalidAttribute for the first bad one."""
    if not values:
        raise InvalidAttribute("", "no attributes given")
    out: dict[str, Any] = {}
    for key, value in values.items():
        definition = definitions.get(key)
        if definition is None or definition.applies_to != applies_to:
            raise InvalidAttribute(key, f"not defined for {applies_to}s")
        out[key] = None if value is None else checked_value(definition, value)
    return out


def checked_value(definition: AttributeDefined, value: Any) -> Any:
    key, kind = definition.key, definition.type
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidAttribute(key, "must be a string")
        if len(value) > MAX_TEXT:
            raise InvalidAttribute(key, f"longer than {MAX_TEXT} characters")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidAttribute(key, "must be a number")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidAttribute(key, "must be true or false")
        return value
    if kind == "date":
        return _iso_date(key, value)
    if kind == "list":
        if not isinstance(value, str) or value not in definition.options:
            raise InvalidAttribute(key, f"must be one of {', '.join(definition.options)}")
        return value
    raise InvalidAttribute(key, f"unknown type {kind!r}")


def _iso_date(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 40:
        raise InvalidAttribute(key, "must be an ISO 8601 date")
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidAttribute(key, "must be an ISO 8601 date") from None
