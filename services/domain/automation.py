"""Automation rules: "when an event of type ON happens and IF holds over it, its case and its
customer, THEN do these things to the case".

Pure domain: no I/O, no clock. Here: the rule's shape and its checks (`parse_rule`, raising
`RuleError` that names the path of what is wrong), the fields a rule's `if` may name for an event
type (`event_fields`), the loop guard (`may_fire`), and the rule as an aggregate (`Automation`,
a config record: a save of the same name is the rule's next version). Whether a named queue, team or
canned response exists is the caller's to check (it needs the store).

Actions, each an object with one key:
- `{"set_queue": "complaints"}`: the case is transferred to that queue;
- `{"add_tags": ["angry", "es"]}`: tags added;
- `{"set_priority": "high"}`: one of low, normal, high, urgent;
- `{"assign_team": "billing"}`: assigned to an online agent of the team with room (the least loaded,
  as routing counts), when there is one;
- `{"reply": {"canned": "ID"}}`: a reply with that canned response, filled for the case;
- `{"webhook": {"url": "https://..."}}`: the event POSTed, signed, to that URL (retried).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import msgspec

from events.automation import (
    AUTOMATION_EVENTS,
    FIRING_EVENTS,
    AutomationConfigured,
    AutomationFired,
    automation_stream_id,
    firing_stream_id,
)
from events.base import DomainEvent
from events.case import PRIORITIES
from events.registry import REGISTRY, UnknownEventError
from services.domain.aggregate import Aggregate, DomainError
from services.domain.filters import FilterError, Group, Kind, automation_fields, parse

ACTIONS = ("set_queue", "add_tags", "set_priority", "assign_team", "reply", "webhook")
CASE_ACTIONS = frozenset(ACTIONS) - {"webhook"}
# A chain of rules (a rule's action is an event that fires another rule, and so on) stops here: an
# event caused by this many firings in a row fires no rule.
MAX_CHAIN = 3
MAX_ACTIONS = 10
MAX_TAGS = 20
MAX_NAME = 100
MAX_URL = 2000
# Rules react to what happens to cases and customers; never to their own firings or to configuration.
ON_PREFIXES = ("case.", "customer.")
# Fields every event has that say nothing a rule could want (ids of the log's bookkeeping).
_BOOKKEEPING = frozenset({"id", "stream_id", "version", "customer_id"})


class RuleError(ValueError):
    """A rule that cannot be saved; `path` names the part (`then[1].set_priority`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    value: Any  # set_queue/assign_team: str; add_tags: tuple[str, ...]; set_priority: str; reply: UUID; webhook: str

    def raw(self) -> dict[str, Any]:
        if self.kind == "reply":
            return {"reply": {"canned": str(self.value)}}
        if self.kind == "webhook":
            return {"webhook": {"url": self.value}}
        if self.kind == "add_tags":
            return {"add_tags": list(self.value)}
        return {self.kind: self.value}


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    on: str
    condition: Group | None
    actions: tuple[Action, ...]
    enabled: bool = True
    version: int = 0
    raw_condition: dict[str, Any] | None = None  # the `if` as written (it parsed to `condition`)

    @property
    def acts_on_case(self) -> bool:
        return any(a.kind in CASE_ACTIONS for a in self.actions)


# ---------------------------------------------------------------------------------------------------
# The fields of an event


def event_type(name: str) -> type[DomainEvent]:
    """The event class a rule's `on` names; RuleError when it is none a rule may react to."""
    try:
        cls = REGISTRY.cls(name)
    except UnknownEventError:
        cls = None
    if cls is None or not name.startswith(ON_PREFIXES):
        raise RuleError("on", f"unknown event type {name[:100]!r}; a case.* or customer.* event type")
    return cls


def _kind(t: msgspec.inspect.Type) -> Kind | None:
    if isinstance(t, msgspec.inspect.UnionType):  # X | None: X's kind
        kinds = {_kind(u) for u in t.types if not isinstance(u, msgspec.inspect.NoneType)}
        return kinds.pop() if len(kinds) == 1 else None
    if isinstance(t, msgspec.inspect.StrType | msgspec.inspect.UUIDType):
        return "text"
    if isinstance(t, msgspec.inspect.LiteralType):
        return "text" if all(isinstance(v, str) for v in t.values) else None
    if isinstance(t, msgspec.inspect.BoolType):
        return "bool"
    if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType | msgspec.inspect.DecimalType):
        return "number"
    if isinstance(t, msgspec.inspect.DateTimeType):
        return "datetime"
    if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.SetType | msgspec.inspect.FrozenSetType):
        return "list" if _kind(t.item_type) == "text" else None
    return None


def event_fields(cls: type[DomainEvent]) -> dict[str, Kind]:
    """The event's own fields a rule's `if` may name bare, with their kinds (nested structures and
    maps left out)."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    out: dict[str, Kind] = {}
    for f in info.fields:
        kind = _kind(f.type)
        if kind is not None and f.name not in _BOOKKEEPING:
            out[f.name] = kind
    return out


def event_has_case(cls: type[DomainEvent]) -> bool:
    """Whether an event of this type belongs to a case: the case's own events, and the customer's
    messages (which name their case)."""
    return cls.NAME.startswith("case.") or "case_id" in event_fields(cls)


def event_case_id(event: DomainEvent) -> UUID | None:
    """The case an event belongs to: the one it names (a message, a classification), else the
    stream of a case's own event."""
    case_id = getattr(event, "case_id", None)
    if isinstance(case_id, UUID):
        return case_id
    return event.stream_id if event.NAME.startswith("case.") else None


# ---------------------------------------------------------------------------------------------------
# Parsing a rule


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not all(c.isalnum() or c in "-_.: " for c in name):
        raise RuleError("name", f"1 to {MAX_NAME} letters, digits, spaces, dots, colons, dashes or underscores")
    if name == "dead-letters":
        raise RuleError("name", "'dead-letters' is taken by the dead-letter list")
    return name


def check_url(url: object, path: str) -> str:
    """http or https with a host, no credentials in it. Private and loopback addresses are allowed:
    rules are written by supervisors and admins, and a deployment's receivers are often internal."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise RuleError(path, f"a URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RuleError(path, "not a valid URL") from None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleError(path, "an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise RuleError(path, "no credentials in the URL (the body is signed instead)")
    if any(ord(c) < 33 or c in '\\<>"{}|^`' for c in url):
        raise RuleError(path, "no spaces or control characters in the URL")
    return url


def _text(value: object, path: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_NAME:
        raise RuleError(path, f"{what}: a string of 1 to {MAX_NAME} characters")
    return value.strip()


def parse_action(raw: object, path: str) -> Action:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RuleError(path, f"an object with one key, one of {', '.join(ACTIONS)}")
    kind, value = next(iter(raw.items()))
    here = f"{path}.{kind}"
    if kind == "set_queue":
        return Action(kind, _text(value, here, "a queue"))
    if kind == "assign_team":
        return Action(kind, _text(value, here, "a team"))
    if kind == "set_priority":
        if value not in PRIORITIES:
            raise RuleError(here, f"one of {', '.join(PRIORITIES)}")
        return Action(kind, value)
    if kind == "add_tags":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_TAGS:
            raise RuleError(here, f"a list of 1 to {MAX_TAGS} tags")
        return Action(kind, tuple(sorted({_text(t, f"{here}[{i}]", "a tag") for i, t in enumerate(value)})))
    if kind == "reply":
        if not isinstance(value, dict) or set(value) != {"canned"}:
            raise RuleError(here, 'expected {"canned": ID}')
        try:
            return Action(kind, UUID(str(value["canned"])))
        except ValueError:
            raise RuleError(f"{here}.canned", "the id of a canned response") from None
    if kind == "webhook":
        if not isinstance(value, dict) or set(value) != {"url"}:
            raise RuleError(here, 'expected {"url": "https://..."}')
        return Action(kind, check_url(value["url"], f"{here}.url"))
    raise RuleError(path, f"unknown action {str(kind)[:40]!r}; one of {', '.join(ACTIONS)}")


def parse_rule(name: str, on: str, condition: object, then: object, *, enabled: bool = True, version: int = 0) -> Rule:
    """The rule, checked: `on` a case or customer event type, `if` a filter over its fields (None:
    always), `then` 1 to MAX_ACTIONS actions. Raises RuleError, or FilterError for the `if`."""
    name = check_name(name)
    cls = event_type(on)
    tree = None
    if condition is not None:
        tree = parse(condition, automation_fields(event_fields(cls)), where="if")
    if not isinstance(then, list) or not 1 <= len(then) <= MAX_ACTIONS:
        raise RuleError("then", f"a list of 1 to {MAX_ACTIONS} actions")
    actions = tuple(parse_action(a, f"then[{i}]") for i, a in enumerate(then))
    if not event_has_case(cls):
        for i, a in enumerate(actions):
            if a.kind in CASE_ACTIONS:
                raise RuleError(f"then[{i}]", f"{on} belongs to no case: only webhook actions apply")
    return Rule(name, on, tree, actions, enabled, version, condition if isinstance(condition, dict) else None)


def rule_of(e: AutomationConfigured) -> Rule:
    """The rule a stored save describes (it was checked when saved)."""
    return parse_rule(e.name, e.on, e.condition, e.actions, enabled=e.enabled, version=e.version)


# ---------------------------------------------------------------------------------------------------
# Loops


def may_fire(rule: str, chain: Sequence[str]) -> bool:
    """Whether `rule` may fire for an event that the firings `chain` led to (oldest first): a rule
    never reacts to what it (or a rule it led to) did, and a chain stops at MAX_CHAIN firings."""
    return rule not in chain and len(chain) < MAX_CHAIN


# ---------------------------------------------------------------------------------------------------
# The rule as a record


class Automation(Aggregate):
    EVENTS = AUTOMATION_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.config: AutomationConfigured | None = None

    @property
    def owner_id(self) -> UUID:
        return self.id

    @staticmethod
    def stream_id(name: str) -> UUID:
        return automation_stream_id(name)

    def configure(self, rule: Rule, by: str, at: datetime) -> None:
        """Saves the rule (checked by `parse_rule`); nothing when it is the same as saved."""
        fields: Mapping[str, Any] = {
            "name": rule.name,
            "on": rule.on,
            "condition": rule.raw_condition,
            "actions": [a.raw() for a in rule.actions],
            "enabled": rule.enabled,
        }
        current = self.config
        if current is not None and all(getattr(current, k) == v for k, v in fields.items()):
            return
        self._trigger(AutomationConfigured, at, by=by, **fields)

    def set_enabled(self, enabled: bool, by: str, at: datetime) -> None:
        current = self.config
        if current is None:
            raise DomainError("no such automation")
        if current.enabled != enabled:
            self._trigger(
                AutomationConfigured,
                at,
                name=current.name,
                on=current.on,
                condition=current.condition,
                actions=current.actions,
                enabled=enabled,
                by=by,
            )

    def when_Configured(self, e: AutomationConfigured) -> None:
        self.config = e


class Firing(Aggregate):
    """One firing of a rule for one event, in the log (a stream of its own, at version 1: a second
    firing for the same event is a version conflict)."""

    EVENTS = FIRING_EVENTS
    STATELESS = FIRING_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.owner: UUID | None = None

    @property
    def owner_id(self) -> UUID:
        return self.owner or self.id

    @classmethod
    def record(
        cls,
        rule: Rule,
        event: DomainEvent,
        case_id: UUID | None,
        actions: Sequence[str],
        depth: int,
        at: datetime,
    ) -> Firing:
        firing = cls(firing_stream_id(rule.name, event.id))
        firing.owner = event.customer_id
        firing._trigger(
            AutomationFired,
            at,
            rule=rule.name,
            rule_version=rule.version,
            event_id=event.id,
            event_type=event.NAME,
            case_id=case_id,
            actions=list(actions),
            depth=depth,
        )
        return firing


__all__ = [
    "ACTIONS",
    "MAX_CHAIN",
    "Action",
    "Automation",
    "FilterError",
    "Firing",
    "Rule",
    "RuleError",
    "event_case_id",
    "event_fields",
    "event_has_case",
    "event_type",
    "may_fire",
    "parse_rule",
    "rule_of",
]
