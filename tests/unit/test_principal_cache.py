"""The per-process principal cache (services/api/principals.py): bounded, expiring, off while deaf."""

from __future__ import annotations

import pytest

from services.api.auth import Principal
from services.api.principals import PrincipalCache

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _listening(ttl: float = 5.0, max_entries: int = 100) -> tuple[PrincipalCache, Clock]:
    clock = Clock()
    cache = PrincipalCache(ttl=ttl, max_entries=max_entries, clock=clock)
    cache.listening = True
    return cache, clock


AGENT = Principal("bench", "agent", b"a" * 32)


def test_an_entry_is_served_until_its_ttl_and_not_after():
    cache, clock = _listening(ttl=5.0)
    cache.put(AGENT.token_hash, AGENT, cache.generation)
    clock.now += 4.9
    assert cache.get(AGENT.token_hash) is AGENT
    clock.now += 0.2
    assert cache.get(AGENT.token_hash) is None
    assert len(cache) == 0


def test_a_session_is_not_served_past_its_own_end_and_an_ended_one_is_not_kept():
    cache, clock = _listening(ttl=5.0)
    ending = Principal("agent:x", "agent", b"s" * 32, "x", valid_for=1.5)
    cache.put(ending.token_hash, ending, cache.generation)
    clock.now += 1.4
    assert cache.get(ending.token_hash) is ending
    clock.now += 0.2
    assert cache.get(ending.token_hash) is None, "idle or absolute expiry is exact, not a TTL late"
    ended = Principal("agent:y", "agent", b"t" * 32, "y", valid_for=0.0)
    cache.put(ended.token_hash, ended, cache.generation)
    assert len(cache) == 0


def test_nothing_is_cached_or_served_while_no_notice_can_be_heard():
    cache, _ = _listening()
    cache.put(AGENT.token_hash, AGENT, cache.generation)
    cache.listening = False
    assert cache.get(AGENT.token_hash) is None
    cache.put(b"b" * 32, AGENT, cache.generation)
    cache.listening = True
    assert cache.get(b"b" * 32) is None


def test_a_notice_empties_it_and_a_lookup_begun_before_the_notice_is_not_kept():
    cache, _ = _listening()
    cache.put(AGENT.token_hash, AGENT, cache.generation)
    started = cache.generation  # a lookup reads the row here ...
    cache.forget_all()  # ... a revocation is notified ...
    assert cache.get(AGENT.token_hash) is None
    cache.put(AGENT.token_hash, AGENT, started)  # ... and its stale answer arrives
    assert cache.get(AGENT.token_hash) is None


def test_it_holds_at_most_max_entries_expired_ones_going_first():
    cache, clock = _listening(ttl=5.0, max_entries=3)
    cache.put(b"old", AGENT, cache.generation)
    clock.now += 3
    cache.put(b"k1", AGENT, cache.generation)
    cache.put(b"k2", AGENT, cache.generation)
    clock.now += 3  # "old" expired, k1 and k2 live
    cache.put(b"k3", AGENT, cache.generation)
    assert len(cache) == 3 and cache.get(b"k1") is AGENT and cache.get(b"k3") is AGENT
    for i in range(10):
        cache.put(b"n%d" % i, AGENT, cache.generation)
    assert len(cache) == 3


async def test_lookup_asks_only_on_a_miss_and_never_caches_a_refusal():
    cache, _ = _listening()
    asked = []

    async def look_up(answer):
        asked.append(answer)
        return answer

    assert await cache.lookup(b"x", lambda: look_up(None)) is None
    assert await cache.lookup(b"x", lambda: look_up(None)) is None
    assert await cache.lookup(AGENT.token_hash, lambda: look_up(AGENT)) is AGENT
    assert await cache.lookup(AGENT.token_hash, lambda: look_up(AGENT)) is AGENT
    assert asked == [None, None, AGENT]
