"""Token buckets and connection slots of the chat edge, on a clock the test holds."""

from __future__ import annotations

import pytest

from channels.limits import ConnectionSlots, TokenBuckets, retry_after_header

pytestmark = pytest.mark.unit


def test_a_bucket_allows_its_burst_then_refills_at_its_rate():
    buckets = TokenBuckets(rate_per_second=2.0, burst=3)
    assert [buckets.take("ip", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("ip", 0.0) == pytest.approx(0.5)  # one token every half second
    assert buckets.take("ip", 0.25) == pytest.approx(0.25)
    assert buckets.take("ip", 0.5) == 0.0
    assert buckets.take("ip", 0.5) > 0
    assert [buckets.take("ip", 100.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # never above the burst


def test_keys_have_buckets_of_their_own():
    buckets = TokenBuckets(rate_per_second=1.0, burst=1)
    assert buckets.take("a", 0.0) == 0.0 and buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0


def test_memory_is_bounded_by_forgetting_the_least_recently_used_key():
    buckets = TokenBuckets(rate_per_second=1.0, burst=1, max_keys=2)
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    buckets.take("a", 0.0)  # a used again: b is now the oldest
    buckets.take("c", 0.0)
    assert len(buckets) == 2
    assert buckets.take("a", 0.0) > 0  # still remembered, still empty
    assert buckets.take("b", 0.0) == 0.0  # forgotten, back full


def test_a_clock_going_backwards_refills_nothing():
    buckets = TokenBuckets(rate_per_second=1.0, burst=1)
    buckets.take("a", 10.0)
    assert buckets.take("a", 5.0) > 0


def test_retry_after_is_whole_seconds_rounded_up():
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2, 59.9)] == ["1", "1", "2", "60"]


def test_connection_slots_per_client_and_in_all():
    slots = ConnectionSlots(max_total=3, max_per_client=2)
    assert slots.acquire("a") is None and slots.acquire("a") is None
    assert slots.acquire("a") == "client"
    assert slots.acquire("b") is None
    assert slots.acquire("c") == "total"
    slots.release("a")
    assert slots.acquire("c") is None and slots.held_by("a") == 1 and slots.total == 3
    slots.release("nobody")  # releasing what was not held changes nothing
    assert slots.total == 3
