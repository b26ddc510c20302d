"""Events of the contact centre's configuration: queues, SLA policies, canned responses and custom
attribute definitions. Each record is an aggregate of its own whose stream id is derived from its
name (`config_stream_id`), so a PUT of the same name is the next version of one record, and every
change of configuration is in the log like everything else.

These events hold no personal data; their `customer_id` (the key owner, unused) is the stream id.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, get_args
from uuid import UUID

import msgspec

from events.base import DomainEvent

Strategy = Literal["manual", "round_robin", "least_loaded"]
AttributeType = Literal["text", "number", "date", "boolean", "list"]
AppliesTo = Literal["customer", "case"]
SlaTarget = Literal["first_response", "next_response", "resolution"]

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
ATTRIBUTE_TYPES: tuple[AttributeType, ...] = get_args(AttributeType)
SLA_TARGETS: tuple[SlaTarget, ...] = get_args(SlaTarget)

_CONFIG_NAMESPACE = uuid.UUID("9e4b2d6f-7a1c-4f3e-b5d8-0c2a6e8f1b3d")


def config_stream_id(kind: str, name: str) -> UUID:
    """`kind` is "queue", "sla-policy", "canned", "attribute" or "segment"."""
    return uuid.uuid5(_CONFIG_NAMESPACE, f"{kind}:{name}")


class QueueConfigured(DomainEvent, frozen=True, kw_only=True):
    """A queue as a PUT left it (the whole configuration, each time)."""

    NAME = "queue.Configured"
    name: str
    strategy: Strategy = "manual"
    team: str | None = None
    required_skills: list[str] = []
    sla_policy: str | None = None
    csat: bool = False
    by: str = ""


class BusinessHours(msgspec.Struct, frozen=True, kw_only=True):
    timezone: str  # an IANA name, "Europe/Madrid"
    week: dict[str, list[str]]  # "mon" → ["09:00-14:00", "15:00-18:00"]
    holidays: list[str] = []  # ISO dates, in the policy's timezone


class SlaPolicyConfigured(DomainEvent, frozen=True, kw_only=True):
    """Targets per priority as ISO 8601 durations ("PT15M"), counted in business hours when given."""

    NAME = "sla.PolicyConfigured"
    name: str
    first_response: dict[str, str] = {}
    next_response: dict[str, str] = {}
    resolution: dict[str, str] = {}
    business_hours: BusinessHours | None = None
    by: str = ""


class CannedResponseCreated(DomainEvent, frozen=True, kw_only=True):
    NAME = "canned.Created"
    shortcut: str
    text: str
    by: str = ""


class CannedResponseDeleted(DomainEvent, frozen=True, kw_only=True):
    NAME = "canned.Deleted"
    by: str = ""


class AttributeDefined(DomainEvent, frozen=True, kw_only=True):
    NAME = "attribute.Defined"
    key: str
    type: AttributeType
    applies_to: AppliesTo
    options: list[str] = []
    by: str = ""


class SegmentDefined(DomainEvent, frozen=True, kw_only=True):
    """A segment: a saved filter over the customers (`{"all" | "any": [...]}`, as the API took it,
    already checked). Its members are found when asked (services.segments.members), never stored."""

    NAME = "segment.Defined"
    name: str
    filter: dict[str, Any]
    by: str = ""


QUEUE_EVENTS: tuple[type[DomainEvent], ...] = (QueueConfigured,)
SLA_POLICY_EVENTS: tuple[type[DomainEvent], ...] = (SlaPolicyConfigured,)
CANNED_EVENTS: tuple[type[DomainEvent], ...] = (CannedResponseCreated, CannedResponseDeleted)
ATTRIBUTE_EVENTS: tuple[type[DomainEvent], ...] = (AttributeDefined,)
SEGMENT_EVENTS: tuple[type[DomainEvent], ...] = (SegmentDefined,)
CONFIG_EVENTS: tuple[type[DomainEvent], ...] = (
    QUEUE_EVENTS + SLA_POLICY_EVENTS + CANNED_EVENTS + ATTRIBUTE_EVENTS + SEGMENT_EVENTS
)
