"""The contact centre's configuration as aggregates: queues, SLA policies, canned responses and
attribute definitions, each a stream of its own (`events.config.config_stream_id`).

Pure domain: no I/O, no clock. Checks here are the ones every writer must pass (a strategy that
exists, a duration that parses); what a value means at run time belongs to routing, the SLA timer
and the reply path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from events.config import (
    ATTRIBUTE_EVENTS,
    ATTRIBUTE_TYPES,
    CANNED_EVENTS,
    QUEUE_EVENTS,
    SEGMENT_EVENTS,
    SLA_POLICY_EVENTS,
    STRATEGIES,
    AttributeDefined,
    CannedResponseCreated,
    CannedResponseDeleted,
    QueueConfigured,
    SegmentDefined,
    SlaPolicyConfigured,
    config_stream_id,
)
from services.domain.aggregate import Aggregate, DomainError
from services.domain.filters import SEGMENT_FIELDS, parse


class _Record(Aggregate):
    @property
    def owner_id(self) -> UUID:
        return self.id


class Queue(_Record):
    EVENTS = QUEUE_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.config: QueueConfigured | None = None

    @staticmethod
    def stream_id(name: str) -> UUID:
        return config_stream_id("queue", name)

    def configure(self, name: str, by: str, at: datetime, **fields: Any) -> None:
        if fields.get("strategy", "manual") not in STRATEGIES:
            raise DomainError(f"strategy must be one of {', '.join(STRATEGIES)}")
        fields["required_skills"] = sorted(set(fields.get("required_skills") or []))
        current = self.config
        if current is not None and all(getattr(current, k) == v for k, v in fields.items()):
            return
        self._trigger(QueueConfigured, at, name=name, by=by, **fields)

    def when_Configured(self, e: QueueConfigured) -> None:
        self.config = e


class SlaPolicy(_Record):
    EVENTS = SLA_POLICY_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.config: SlaPolicyConfigured | None = None

    @staticmethod
    def stream_id(name: str) -> UUID:
        return config_stream_id("sla-policy", name)

    def configure(self, name: str, by: str, at: datetime, **fields: Any) -> None:
        """Fields already parsed and checked (durations, hours, timezone) by the caller."""
        self._trigger(SlaPolicyConfigured, at, name=name, by=by, **fields)

    def when_PolicyConfigured(self, e: SlaPolicyConfigured) -> None:
        self.config = e


class CannedResponse(_Record):
    EVENTS = CANNED_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.shortcut = ""
        self.text = ""
        self.deleted = False

    @classmethod
    def create(cls, id: UUID, shortcut: str, text: str, by: str, at: datetime) -> CannedResponse:
        if not shortcut.strip() or not text.strip():
            raise DomainError("a canned response needs a shortcut and a text")
        canned = cls(id)
        canned._trigger(CannedResponseCreated, at, shortcut=shortcut.strip(), text=text, by=by)
        return canned

    def delete(self, by: str, at: datetime) -> None:
        if not self.deleted:
            self._trigger(CannedResponseDeleted, at, by=by)

    def when_Created(self, e: CannedResponseCreated) -> None:
        self.shortcut, self.text = e.shortcut, e.text

    def when_Deleted(self, e: CannedResponseDeleted) -> None:
        self.deleted = True


class AttributeDefinition(_Record):
    EVENTS = ATTRIBUTE_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.definition: AttributeDefined | None = None

    @staticmethod
    def stream_id(key: str) -> UUID:
        return config_stream_id("attribute", key)

    def define(self, key: str, type: str, applies_to: str, options: list[str], by: str, at: datetime) -> None:
        if type not in ATTRIBUTE_TYPES:
            raise DomainError(f"type must be one of {', '.join(ATTRIBUTE_TYPES)}")
        if applies_to not in ("customer", "case"):
            raise DomainError("applies_to must be customer or case")
        if type == "list" and not options:
            raise DomainError("a list attribute needs options")
        current = self.definition
        if current is not None and (current.type, current.applies_to, current.options) == (type, applies_to, options):
            return
        self._trigger(AttributeDefined, at, key=key, type=type, applies_to=applies_to, options=options, by=by)

    def when_Defined(self, e: AttributeDefined) -> None:
        self.definition = e


class Segment(_Record):
    """A saved filter over the customers, named; a POST of the same name is its next version."""

    EVENTS = SEGMENT_EVENTS
    MAX_NAME = 200

    def __init__(self, id: UUID):
        super().__init__(id)
        self.definition: SegmentDefined | None = None

    @staticmethod
    def stream_id(name: str) -> UUID:
        return config_stream_id("segment", name.strip().casefold())

    def define(self, name: str, filter: dict[str, Any], by: str, at: datetime) -> None:
        """`filter` must parse (services.domain.filters; a FilterError names what is wrong). The same
        definition again records nothing."""
        name = name.strip()
        if not name or len(name) > self.MAX_NAME:
            raise DomainError(f"a segment needs a name of 1 to {self.MAX_NAME} characters")
        parse(filter, SEGMENT_FIELDS)
        current = self.definition
        if current is not None and (current.name, current.filter) == (name, filter):
            return
        self._trigger(SegmentDefined, at, name=name, filter=filter, by=by)

    def when_Defined(self, e: SegmentDefined) -> None:
        self.definition = e
