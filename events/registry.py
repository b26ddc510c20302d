"""Stored name → event class, and the upcasters that lift old stored versions to the current one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from events.agent import AGENT_EVENTS, TEAM_EVENTS
from events.automation import AUTOMATION_EVENTS, FIRING_EVENTS
from events.base import DomainEvent
from events.campaign import CAMPAIGN_EVENTS
from events.case import CASE_EVENTS, CaseOpened, CaseTagged, ReplySent, upcast_case_opened_v1
from events.config import CONFIG_EVENTS
from events.customer import CUSTOMER_EVENTS, InteractionRecorded

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventError(LookupError):
    pass


class EventRegistry:
    def __init__(self) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[DomainEvent]) -> None:
        existing = self._classes.get(cls.NAME)
        if existing is not None and existing is not cls:
            raise ValueError(f"event name {cls.NAME!r} is taken by {existing.__qualname__}")
        self._classes[cls.NAME] = cls

    def upcaster(self, cls: type[DomainEvent], from_version: int, fn: Upcaster) -> None:
        self._upcasters[(cls.NAME, from_version)] = fn

    def cls(self, name: str) -> type[DomainEvent]:
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownEventError(name) from None

    def upcast(self, name: str, version: int, state: dict[str, Any]) -> dict[str, Any]:
        current = self.cls(name).VERSION
        while version < current:
            fn = self._upcasters.get((name, version))
            if fn is None:
                raise UnknownEventError(f"no upcaster for {name} v{version}")
            state = fn(state)
            version += 1
        return state

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __iter__(self) -> Iterator[type[DomainEvent]]:
        return iter(self._classes.values())


REGISTRY = EventRegistry()
for _cls in (*CUSTOMER_EVENTS, *CASE_EVENTS, *AGENT_EVENTS, *TEAM_EVENTS, *CONFIG_EVENTS, *CAMPAIGN_EVENTS):
    REGISTRY.register(_cls)
for _cls in (*AUTOMATION_EVENTS, *FIRING_EVENTS):
    REGISTRY.register(_cls)
REGISTRY.upcaster(CaseOpened, 1, upcast_case_opened_v1)


def sealed_more_fields(state: dict[str, Any]) -> dict[str, Any]:
    """A version that only moved fields from clear to sealed: the fields themselves are the same.

    The version still changes, so that an old event read after erasure takes the upcasting path and
    its once-clear fields read redacted like the rest (the stored bytes keep them: the log is never
    rewritten).
    """
    return state


for _cls in (InteractionRecorded, CaseTagged, ReplySent):
    REGISTRY.upcaster(_cls, 1, sealed_more_fields)
