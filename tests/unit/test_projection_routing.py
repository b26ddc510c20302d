"""Each read model is handed only the events it says it looks at (projections/base.py: `events`,
`routed`), and says so for every kind of event its module refers to."""

from __future__ import annotations

import sys

from events.base import DomainEvent
from events.registry import REGISTRY
from projections.base import routed
from projections.runner import all_projections


class _Event:
    def __init__(self, name: str):
        self.NAME = name


class _Wants:
    def __init__(self, *names: str):
        self.events = frozenset(names)


class _WantsAll:
    pass


def _items(*names: str) -> list:
    return [(position, _Event(name), False) for position, name in enumerate(names, start=1)]


def test_each_projection_gets_its_events_in_log_order_and_one_without_events_gets_all() -> None:
    items = _items("a", "b", "a", "c", "b")
    wants_a, wants_ab, wants_none, wants_all = _Wants("a"), _Wants("a", "b"), _Wants("z"), _WantsAll()
    shares = routed([wants_a, wants_ab, wants_none, wants_all], items)
    assert [[p for p, _, _ in share] for share in shares] == [[1, 3], [1, 2, 3, 5], [], [1, 2, 3, 4, 5]]
    assert shares[3] is items  # nothing copied for a projection that takes everything


def test_two_projections_wanting_the_same_event_each_get_it() -> None:
    items = _items("a", "b")
    first, second = routed([_Wants("a"), _Wants("a")], items)
    assert first == second == items[:1]
    assert first is not second


def test_every_event_class_a_projection_module_refers_to_is_in_its_events() -> None:
    """A projection that starts to handle another kind of event imports it (or names it): forgetting to
    add it to `events` would hand it none of them, silently. Here that fails."""
    names = set(REGISTRY.names())
    declared = [p for p in all_projections() if getattr(p, "events", None) is not None]
    assert len(declared) >= 10, [p.name for p in declared]
    for projection in declared:
        module = vars(sys.modules[type(projection).__module__])
        referred = {
            value.NAME
            for value in module.values()
            if isinstance(value, type) and issubclass(value, DomainEvent) and value is not DomainEvent
        } | {value for value in module.values() if isinstance(value, str) and value in names}
        assert referred, projection.name
        assert referred <= projection.events, (projection.name, referred - projection.events)
        assert projection.events <= names, (projection.name, projection.events - names)
