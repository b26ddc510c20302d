"""The core's aggregate cache is bounded by bytes, and a customer remembers only its latest ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from events.interactions import Identity, Interaction, interaction_id
from services.core.cache import REWEIGH_EVERY, ByteLRU, approx_bytes
from services.domain.customer import RECENT_INTERACTIONS, Customer, RecentIds

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def sms(n: int) -> Interaction:
    return Interaction(
        id=interaction_id("sms", f"SM{n}"),
        channel="sms",
        direction="inbound",
        occurred_at=T0 + timedelta(seconds=n),
        identities=[Identity("phone", "+447700900123")],
        text="hello",
        provider_message_id=f"SM{n}",
    )


def customer_with(threads: int) -> Customer:
    customer = Customer.register(uuid.uuid4(), T0)
    for n in range(threads):
        customer.record(sms(n), uuid.uuid4(), f"thread-{n}")
    customer.collect()
    return customer


def test_a_heavier_aggregate_weighs_more():
    small, large = customer_with(2), customer_with(200)
    assert approx_bytes(large) > approx_bytes(small) * 10


def test_the_cache_evicts_least_recently_used_entries_once_over_its_byte_budget():
    one = approx_bytes(customer_with(10))
    cache = ByteLRU(max_bytes=one * 3 + one // 2)
    customers = [customer_with(10) for _ in range(5)]
    for c in customers[:3]:
        cache.put(c.id, c)
    assert cache.get(customers[0].id) is customers[0]  # now the most recently used
    cache.put(customers[3].id, customers[3])
    assert customers[1].id not in cache and customers[0].id in cache  # the least recently used went
    assert cache.bytes <= cache.max_bytes and len(cache) == 3
    assert cache.pop(customers[0].id) is customers[0] and len(cache) == 2
    assert cache.bytes == sum(approx_bytes(c) for c in (customers[2], customers[3]))


def test_an_entry_that_grew_is_weighed_again_when_read():
    customer = customer_with(1)
    cache = ByteLRU(max_bytes=10**9)
    cache.put(customer.id, customer)
    before = cache.bytes
    for n in range(1, REWEIGH_EVERY + 50):
        customer.record(sms(n), uuid.uuid4(), f"thread-{n}")
    customer.collect()
    cache.get(customer.id)
    assert cache.bytes == approx_bytes(customer) > before


def test_one_entry_over_the_budget_stays_while_in_use():
    customer = customer_with(10)
    cache = ByteLRU(max_bytes=1)
    cache.put(customer.id, customer)
    assert cache.get(customer.id) is customer


def test_a_customer_keeps_only_its_latest_interaction_ids_and_still_drops_a_recent_redelivery():
    customer = Customer.register(uuid.uuid4(), T0)
    messages = [sms(n) for n in range(RECENT_INTERACTIONS + 10)]
    for m in messages:
        customer.record(m, None, "sms:thread")
    assert len(customer.collect()) == 1 + len(messages)
    assert len(customer.interactions) == RECENT_INTERACTIONS
    assert messages[0].id not in customer.interactions and messages[-1].id in customer.interactions
    customer.record(messages[-1], None, "sms:thread")  # a recent one again: nothing
    assert customer.collect() == []


def test_recent_ids_compare_like_the_set_they_stand_for():
    ids = RecentIds(size=2)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for i in (a, b, c):
        ids.add(i)
    assert ids == {b, c} and list(ids) == [b, c] and a not in ids


def test_new_aggregates_are_weighed_like_the_first_new_one_until_they_grow():
    cache = ByteLRU(max_bytes=10**9)
    first, second = customer_with(0), customer_with(3)
    cache.put(first.id, first, new=True)
    cache.put(second.id, second, new=True)
    assert cache.bytes == 2 * approx_bytes(first)
    for n in range(REWEIGH_EVERY):
        second.record(sms(100 + n), uuid.uuid4(), f"thread-{n}")
    cache.get(second.id)
    assert cache.bytes == approx_bytes(first) + approx_bytes(second)


def test_recent_events_are_bounded_by_bytes_and_served_only_without_gaps():
    from services.platform.eventstore.store import RecentEvents  # noqa: PLC0415

    customer = customer_with(0)
    for n in range(10):
        customer.record(sms(n), None, "sms:thread")
    events = customer.collect()
    recent = RecentEvents(max_bytes=4 * (1000 + RecentEvents.OVERHEAD))
    recent.add(list(range(1, 11)), events, [1000] * 10)
    assert recent.bytes <= recent.max_bytes
    assert [p for p, _ in recent.after(0, 100)] == []  # the oldest went: nothing follows position 0
    assert [p for p, _ in recent.after(6, 100)] == [7, 8, 9, 10]
    recent.add([11], events[:1], [10 * recent.max_bytes])  # one event over the budget alone: not kept
    assert recent.after(10, 100) == [] and recent.bytes == 0
