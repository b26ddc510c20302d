"""The one filter language of segments and automations: `{"all" | "any": [condition | group, ...]}`.

A condition is `{"field", "op", "value"}`. `parse` checks a raw (decoded JSON) filter against the
fields a context knows, and returns a typed tree with its values normalised, or raises a
`FilterError` naming the path of the first thing wrong (`filter.all[2].op: ...`). What a field
means is the context's business: segments compile the tree to SQL over their read models,
automations evaluate it here (`evaluate`) over an event, its case and its customer.

Patterns (`matches`) are RE2 syntax and run on RE2 (google-re2): matching time grows linearly with
the text whatever the pattern, so a hostile pattern cannot stall a rule. Segments run the same
pattern in PostgreSQL (`~`): `parse` keeps to the subset both engines read alike and hands on the
pattern in the form both run (services.domain.patterns), so a filter means the same in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal, cast

import msgspec
import re2

from services.domain.patterns import PatternError, portable

Kind = Literal["text", "number", "datetime", "bool", "list"]
FieldResolver = Callable[[str], "Kind | None"]

OPS: dict[str, frozenset[Kind]] = {
    "eq": frozenset({"text", "number", "datetime", "bool", "list"}),
    "ne": frozenset({"text", "number", "datetime", "bool", "list"}),
    "in": frozenset({"text", "number"}),
    "contains": frozenset({"text", "list"}),
    "gt": frozenset({"number", "datetime"}),
    "gte": frozenset({"number", "datetime"}),
    "lt": frozenset({"number", "datetime"}),
    "lte": frozenset({"number", "datetime"}),
    "before": frozenset({"datetime"}),
    "after": frozenset({"datetime"}),
    "matches": frozenset({"text"}),
}

MAX_CONDITIONS = 50
MAX_DEPTH = 4
MAX_TEXT = 500
MAX_IN = 100
MAX_PATTERN = 200
_NAME_PART = re2.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 1 << 20
_RE2_OPTIONS.log_errors = False  # a bad pattern is the caller's 400, not a line on stderr
_RE2_OPTIONS.dot_nl = True  # `.` matches a newline too, as in PostgreSQL (services.domain.patterns)


class FilterError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Ago:
    """A point relative to the moment of evaluation: "P30D" is thirty days before now."""

    delta: timedelta

    def at(self, now: datetime) -> datetime:
        return now - self.delta


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: str
    value: object  # Decimal | str | bool | datetime | Ago | tuple[...]: normalised for `kind`
    kind: Kind


@dataclass(frozen=True, slots=True)
class Group:
    mode: Literal["all", "any"]
    items: tuple[Condition | Group, ...]

    def conditions(self) -> list[Condition]:
        out: list[Condition] = []
        for item in self.items:
            out.extend(item.conditions() if isinstance(item, Group) else [item])
        return out


# ---------------------------------------------------------------------------------------------------
# Fields of the contexts

_SEGMENT_PLAIN: dict[str, Kind] = {
    "name": "text",
    "channels": "list",
    "first_seen": "datetime",
    "last_seen": "datetime",
    "open_cases": "number",
    "interaction_count": "number",
    "csat_avg": "number",
    "tags": "list",
    "activities.amount.sum": "number",
}

CASE_FIELDS: dict[str, Kind] = {
    "status": "text",
    "priority": "text",
    "queue": "text",
    "assignee": "text",
    "team": "text",
    "channel": "text",
    "tags": "list",
    "created_at": "datetime",
    "sentiment": "text",
    "intent": "text",
    "language": "text",
}


def _dotted(field: str, parts: int) -> list[str] | None:
    pieces = field.split(".")
    if len(pieces) != parts or not all(_NAME_PART.match(p) for p in pieces[1:]):
        return None
    return pieces


def SEGMENT_FIELDS(field: str) -> Kind | None:  # noqa: N802 - a resolver used like a constant
    """The contract's segment fields: `attributes.KEY`, `consent.PURPOSE.CHANNEL`,
    `activities.TYPE.count` besides the plain ones."""
    if field in _SEGMENT_PLAIN:
        return _SEGMENT_PLAIN[field]
    if field.startswith("attributes.") and _dotted(field, 2):
        return "text"
    if field.startswith("consent.") and _dotted(field, 3):
        return "bool"
    if field.startswith("activities.") and field.endswith(".count"):
        pieces = field.split(".")
        # an activity type has dots itself ("order.placed"): everything between is the type
        if len(pieces) >= 3 and all(_NAME_PART.match(p) for p in pieces[1:-1]):
            return "number"
    return None


def automation_fields(event_fields: Mapping[str, Kind]) -> FieldResolver:
    """Bare names are the event's own fields; `case.FIELD` its case; `customer.FIELD` as segments."""

    def resolve(field: str) -> Kind | None:
        if field.startswith("case."):
            return CASE_FIELDS.get(field[5:])
        if field.startswith("customer."):
            return SEGMENT_FIELDS(field[9:])
        return event_fields.get(field)

    return resolve


# ---------------------------------------------------------------------------------------------------
# Parsing


def parse(raw: object, fields: FieldResolver, *, where: str = "filter") -> Group:
    counter = [0]
    return _group(raw, fields, where, 1, counter)


def _group(raw: object, fields: FieldResolver, path: str, depth: int, counter: list[int]) -> Group:
    if depth > MAX_DEPTH:
        raise FilterError(path, f"groups nest at most {MAX_DEPTH} deep")
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("all", "any"):
        raise FilterError(path, 'expected an object with exactly one key, "all" or "any"')
    mode = cast(Literal["all", "any"], next(iter(raw)))
    items = raw[mode]
    path = f"{path}.{mode}"
    if not isinstance(items, list) or not items:
        raise FilterError(path, "expected a non-empty list of conditions")
    out: list[Condition | Group] = []
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        if isinstance(item, dict) and ("all" in item or "any" in item):
            out.append(_group(item, fields, here, depth + 1, counter))
        else:
            counter[0] += 1
            if counter[0] > MAX_CONDITIONS:
                raise FilterError(here, f"at most {MAX_CONDITIONS} conditions in a filter")
            out.append(_condition(item, fields, here))
    return Group(mode, tuple(out))


def _condition(raw: object, fields: FieldResolver, path: str) -> Condition:
    if not isinstance(raw, dict):
        raise FilterError(path, 'expected {"field", "op", "value"}')
    unknown = set(raw) - {"field", "op", "value"}
    if unknown:
        raise FilterError(path, f"unknown key {sorted(unknown)[0]!r}")
    field, op = raw.get("field"), raw.get("op")
    if not isinstance(field, str) or not field:
        raise FilterError(f"{path}.field", "expected a field name")
    kind = fields(field) if len(field) <= 200 else None
    if kind is None:
        raise FilterError(f"{path}.field", f"unknown field {field[:200]!r}")
    if not isinstance(op, str) or op not in OPS:
        raise FilterError(f"{path}.op", f"unknown op {str(op)[:40]!r}; one of {', '.join(OPS)}")
    if kind not in OPS[op]:
        raise FilterError(f"{path}.op", f"{op!r} does not apply to {kind} field {field!r}")
    if "value" not in raw:
        raise FilterError(f"{path}.value", "missing")
    value = _value(raw["value"], kind, op, f"{path}.value")
    return Condition(field, op, value, kind)


def _value(raw: object, kind: Kind, op: str, path: str) -> object:
    if op == "in":
        if not isinstance(raw, list) or not raw or len(raw) > MAX_IN:
            raise FilterError(path, f"'in' takes a list of 1 to {MAX_IN} values")
        return tuple(_scalar(v, kind, f"{path}[{i}]") for i, v in enumerate(raw))
    if op == "matches":
        if not isinstance(raw, str) or not raw or len(raw) > MAX_PATTERN:
            raise FilterError(path, f"'matches' takes a pattern of 1 to {MAX_PATTERN} characters")
        try:
            re2.compile(raw, _RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise FilterError(path, f"not a valid pattern (RE2 syntax): {reason}") from None
        try:
            return portable(raw)
        except PatternError as exc:
            raise FilterError(path, f"not a portable pattern: {exc}") from None
    if kind == "list":  # eq/ne compare a member's presence the way contains does: one item
        return _scalar(raw, "text", path)
    return _scalar(raw, kind, path)


def _scalar(raw: object, kind: Kind, path: str) -> object:
    if kind == "text":
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise FilterError(path, "expected a string")
        text = str(raw)
        if len(text) > MAX_TEXT or "\x00" in text:
            raise FilterError(path, f"a string of at most {MAX_TEXT} characters, no NUL")
        return text
    if kind == "number":
        if isinstance(raw, bool):
            raise FilterError(path, "expected a number")
        try:
            number = Decimal(str(raw)) if isinstance(raw, int | float | str) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or abs(number) >= Decimal("1e15"):
            raise FilterError(path, "expected a finite number")
        return number
    if kind == "bool":
        if not isinstance(raw, bool):
            raise FilterError(path, "expected true or false")
        return raw
    if kind == "datetime":
        return _moment(raw, path)
    raise FilterError(path, f"no value applies to a {kind} field")  # pragma: no cover


def _moment(raw: object, path: str) -> datetime | Ago:
    message = 'expected a date ("2026-01-31"), a timestamp, or an ISO 8601 duration ago ("P30D")'
    if not isinstance(raw, str) or len(raw) > 40:
        raise FilterError(path, message)
    if raw.startswith(("P", "-P")):
        try:
            delta = msgspec.convert(raw, timedelta)
        except msgspec.ValidationError:
            raise FilterError(path, message) from None
        if delta < timedelta(0) or delta > timedelta(days=36600):
            raise FilterError(path, "a duration between zero and a hundred years")
        return Ago(delta)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise FilterError(path, message) from None
    if len(raw) == 10:  # a bare date: its midnight, UTC
        return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------
# Evaluation


def evaluate(tree: Group, value_of: Callable[[str], object], now: datetime) -> bool:
    results = (
        evaluate(item, value_of, now) if isinstance(item, Group) else _holds(item, value_of(item.field), now)
        for item in tree.items
    )
    return all(results) if tree.mode == "all" else any(results)


def _holds(c: Condition, actual: object, now: datetime) -> bool:
    if actual is None:
        return c.op == "ne"
    want = c.value
    if c.kind == "list":
        items = [str(v) for v in actual] if isinstance(actual, list | tuple | set | frozenset) else [str(actual)]
        present = str(want) in items
        return not present if c.op == "ne" else present
    if c.kind == "datetime":
        return _compare_moment(c.op, actual, want, now)
    if c.kind == "number":
        number = _as_number(actual)
        if number is None:
            return c.op == "ne"
        return _compare(c.op, number, want)
    if c.kind == "bool":
        truth = actual if isinstance(actual, bool) else str(actual).lower() in ("true", "1", "yes")
        return (truth == want) if c.op == "eq" else (truth != want)
    text = str(actual)
    if c.op == "contains":
        return str(want).casefold() in text.casefold()
    if c.op == "matches":
        return re2.search(str(want), text, _RE2_OPTIONS) is not None
    if c.op == "in":
        return text in cast(tuple[str, ...], want)
    return (text == want) if c.op == "eq" else (text != want)


def _as_number(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value)) if isinstance(value, int | float | str | Decimal) else None
    except InvalidOperation:
        return None
    return number if number is not None and number.is_finite() else None


def _compare(op: str, actual: Decimal, want: object) -> bool:
    if op == "in":
        return actual in cast(tuple[Decimal, ...], want)
    w = cast(Decimal, want)
    return {
        "eq": actual == w,
        "ne": actual != w,
        "gt": actual > w,
        "gte": actual >= w,
        "lt": actual < w,
        "lte": actual <= w,
    }[op]


def _compare_moment(op: str, actual: object, want: object, now: datetime) -> bool:
    if isinstance(actual, str):
        try:
            actual = datetime.fromisoformat(actual)
        except ValueError:
            return op == "ne"
    if not isinstance(actual, datetime):
        return op == "ne"
    if actual.tzinfo is None:
        actual = actual.replace(tzinfo=UTC)
    point = want.at(now) if isinstance(want, Ago) else cast(datetime, want)
    return {
        "eq": actual == point,
        "ne": actual != point,
        "gt": actual > point,
        "after": actual > point,
        "gte": actual >= point,
        "lt": actual < point,
        "before": actual < point,
        "lte": actual <= point,
    }[op]
