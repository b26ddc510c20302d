"""A customer with a long history loads from its sealed snapshot plus the events after it."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from events.interactions import Interaction
from services.core import snapshots
from services.core.processor import CoreProcessor
from services.domain.customer import Customer
from tests.fixtures.interactions import sms as inbound_sms

pytestmark = pytest.mark.integration

HISTORY = 10_000


def sms(phone: str, n: int) -> Interaction:
    return inbound_sms(phone, n, profile={"name": "Ann"})


def state(customer: Customer) -> dict:
    return {k: v for k, v in vars(customer).items() if k != "pending"}


class Counting:
    """Counts the events a processor opens from the store (the real store does the work)."""

    def __init__(self, processor: CoreProcessor, monkeypatch):
        self.opened = 0
        real = processor.store.open_stored

        def open_stored(stored):
            self.opened += len(stored)
            return real(stored)

        monkeypatch.setattr(processor.store, "open_stored", open_stored)


def snapshot_row(database_url: str, customer_id: uuid.UUID):
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT version, state FROM sb_snapshots WHERE stream_id = %s", (customer_id,)).fetchone()


def test_snapshots_cover_every_attribute_of_a_customer():
    assert snapshots.covers_every_field()


def test_a_customer_with_ten_thousand_events_loads_from_its_snapshot(store, database_url, monkeypatch):
    phone = "+447700900555"
    assert CoreProcessor(store).process([(sms(phone, 0), None)]).recorded
    with psycopg.connect(database_url) as conn:
        [(customer_id,)] = conn.execute("SELECT DISTINCT customer_id FROM sb_identities").fetchall()
    # A long history, appended straight to the customer's stream (the core would take a while).
    customer = Customer.replay(customer_id, store.load(customer_id))
    for n in range(1, HISTORY + 1):
        customer.record(sms(phone, n), None, f"sms:thread-{n % 7}")
        if n % 2_000 == 0:
            with store.transaction() as tx:
                tx.append(customer.collect())
    assert customer.version > HISTORY

    # The first core to load it replays everything once, and leaves a snapshot behind.
    first = CoreProcessor(store)
    assert first.process([(sms(phone, HISTORY + 1), None)]).recorded
    version, sealed = snapshot_row(database_url, customer_id)
    assert version == customer.version
    assert b"+447700900555" not in bytes(sealed) and b"Ann" not in bytes(sealed)  # sealed, not in clear

    # The next one (cold cache) reads the snapshot and the few events after it.
    second = CoreProcessor(store)
    counting = Counting(second, monkeypatch)
    assert second.process([(sms(phone, HISTORY + 2), None)]).recorded
    assert counting.opened < 50
    loaded = second._cache.get(customer_id)
    replayed = Customer.replay(customer_id, store.load(customer_id))
    assert state(loaded) == state(replayed) and loaded.version == replayed.version > HISTORY


def test_an_erased_customers_snapshot_is_not_used(store, database_url):
    phone = "+447700900556"
    processor = CoreProcessor(store)
    processor.process([(sms(phone, n), None) for n in range(snapshots.SNAPSHOT_AFTER + 5)])
    with psycopg.connect(database_url) as conn:
        [(customer_id,)] = conn.execute("SELECT DISTINCT customer_id FROM sb_identities").fetchall()
    CoreProcessor(store).process([(sms(phone, 999), None)])  # a cold core: loads, writes a snapshot
    assert snapshot_row(database_url, customer_id) is not None
    with store.transaction() as tx:
        assert CoreProcessor(store)._open_snapshots(tx, [customer_id])
    store.erase_keys([customer_id])
    with store.transaction() as tx:
        assert CoreProcessor(store)._open_snapshots(tx, [customer_id]) == {}
