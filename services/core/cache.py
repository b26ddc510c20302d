"""The core's aggregate cache, bounded by (estimated) bytes rather than by a count of entries.

A count says nothing about memory: one customer with thousands of threads weighs as much as
hundreds of fresh ones. Each entry is weighed when it is put and again when it is read after it has
grown by `REWEIGH_EVERY` events (weighing costs microseconds; weighing on every read would cost a
noticeable share of the core's time), and the least recently used entries go once the total is
over the budget (`core_cache_max_bytes`).

The weight is an estimate (`approx_bytes`): the object, its attribute dict and every attribute's own
size, with containers weighed by their length times the mean size of a few sampled items. It errs
on the low side by the allocator's overheads; the bench's `memory:` line shows how RSS follows it.
"""

from __future__ import annotations

import itertools
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

REWEIGH_EVERY = 16  # events an entry may gain between two weighings
_SAMPLE = 8
_getsizeof = sys.getsizeof


def _item_bytes(item: Any) -> int:
    size = _getsizeof(item)
    if isinstance(item, tuple):
        size += sum(_getsizeof(x) for x in item)
    return size


def _value_bytes(value: Any) -> int:
    size = _getsizeof(value)
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return size
    if isinstance(value, dict):
        n = len(value)
        if n:
            sample = list(itertools.islice(value.items(), _SAMPLE))
            size += n * sum(_item_bytes(k) + _item_bytes(v) for k, v in sample) // len(sample)
        return size
    if isinstance(value, (set, frozenset, list, tuple)):
        n = len(value)
        if n:
            sample = list(itertools.islice(value, _SAMPLE))
            size += n * sum(_item_bytes(x) for x in sample) // len(sample)
        return size
    inner = getattr(value, "_ids", None)  # services.domain.customer.RecentIds
    if isinstance(inner, dict):
        return size + _value_bytes(inner)
    return size


def approx_bytes(obj: Any) -> int:
    """An estimate of what `obj` and the values it holds take in memory (see the module's doc)."""
    attributes = getattr(obj, "__dict__", None)
    if attributes is None:
        return _value_bytes(obj)
    return _getsizeof(obj) + _getsizeof(attributes) + sum(_value_bytes(v) for v in attributes.values())


class ByteLRU:
    """Least recently used entries leave first once the weights add up to more than `max_bytes`.

    Values are aggregates (they have a `version`: the events they hold, which says when to weigh
    them again)."""

    def __init__(self, max_bytes: int, weigh: Callable[[Any], int] = approx_bytes):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._weigh = weigh
        self._entries: OrderedDict[Hashable, tuple[Any, int, int]] = OrderedDict()  # value, weight, version
        self._new_weights: dict[type, int] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        """The keys held, least recently used first (a copy: forgetting while iterating is fine)."""
        return iter(list(self._entries))

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """The value, without counting it as used."""
        entry = self._entries.get(key)
        return default if entry is None else entry[0]

    def get(self, key: Hashable, default: Any = None) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return default
        value, _, version = entry
        self._entries.move_to_end(key)
        if value.version - version >= REWEIGH_EVERY:
            self._set(key, value)
            self._shrink()
        return value

    def put(self, key: Hashable, value: Any, *, new: bool = False) -> None:
        """`new`: an aggregate just created, weighed as the first new one of its type was (they are
        all about the same size, and the core creates thousands a second); it is weighed for real
        once it has grown by REWEIGH_EVERY events."""
        if new:
            weight = self._new_weights.get(type(value))
            if weight is None:
                weight = self._new_weights[type(value)] = self._weigh(value)
            self._set(key, value, weight)
        else:
            self._set(key, value)
        self._entries.move_to_end(key)
        self._shrink()

    def pop(self, key: Hashable, default: Any = None) -> Any:
        entry = self._entries.pop(key, None)
        if entry is None:
            return default
        self.bytes -= entry[1]
        return entry[0]

    def _set(self, key: Hashable, value: Any, weight: int | None = None) -> None:
        old = self._entries.get(key)
        if old is not None:
            self.bytes -= old[1]
        if weight is None:
            weight = self._weigh(value)
        self._entries[key] = (value, weight, value.version)
        self.bytes += weight

    def _shrink(self) -> None:
        # The newest entry stays even when it alone is over budget: it is the one in use.
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            _, (_, weight, _) = self._entries.popitem(last=False)
            self.bytes -= weight
