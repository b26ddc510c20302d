"""Events of automation rules: a rule as it was saved, and each time a rule fired.

A rule is a config record (`config_stream_id("automation", name)`): saving the same name again is
the rule's next version, and disabling it is a save with `enabled` false. Each firing is an event
of its own stream (`firing_stream_id(rule, event_id)`, at version 1), so that a second firing of a
rule for one event is a version conflict in the event store, besides the firings table.

These events hold no personal data: a rule's filter and actions are configuration, and a firing
names the rule, the event, the case and the kinds of action it took (never tag values or texts).
The `customer_id` of a rule's events is its stream id; of a firing, the customer of the event.
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from events.base import DomainEvent
from events.config import config_stream_id

_FIRING_NAMESPACE = uuid.UUID("3c8e1f4a-6b2d-4a9e-9f07-5d1c2b3a4e6f")


def automation_stream_id(name: str) -> UUID:
    return config_stream_id("automation", name)


def firing_stream_id(rule: str, event_id: UUID) -> UUID:
    return uuid.uuid5(_FIRING_NAMESPACE, f"{rule}:{event_id}")


class AutomationConfigured(DomainEvent, frozen=True, kw_only=True):
    """A rule as a save left it (the whole rule, each time). `condition` is the raw `if` filter and
    `actions` the raw `then` list, both as validated when saved."""

    NAME = "automation.Configured"
    name: str
    on: str
    condition: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = []
    enabled: bool = True
    by: str = ""


class AutomationFired(DomainEvent, frozen=True, kw_only=True):
    """Rule `rule` (at its `rule_version`) fired for event `event_id` (of type `event_type`), and did
    `actions` (kinds, in order; those that changed nothing included) to case `case_id`. `depth` is
    how many rule firings led to the event (0: nobody's rule caused it)."""

    NAME = "automation.Fired"
    rule: str
    rule_version: int
    event_id: UUID
    event_type: str
    case_id: UUID | None = None
    actions: list[str] = []
    depth: int = 0


AUTOMATION_EVENTS: tuple[type[DomainEvent], ...] = (AutomationConfigured,)
FIRING_EVENTS: tuple[type[DomainEvent], ...] = (AutomationFired,)
