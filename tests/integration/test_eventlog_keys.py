"""Per-customer keys on a real PostgreSQL: created in bulk, shared by concurrent writers, and, once an
erasure destroyed them, never used again by a process that still had them cached."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from events.customer import IdentityLinked, InteractionRecorded
from services.platform.eventstore.keys import KeyDestroyedError
from services.platform.eventstore.store import ConcurrencyError, EventStore

pytestmark = pytest.mark.integration

AT = datetime(2024, 6, 1, tzinfo=UTC)


def _linked(customer: uuid.UUID, version: int, value: str) -> IdentityLinked:
    return IdentityLinked(
        id=uuid.uuid4(),
        stream_id=customer,
        version=version,
        occurred_at=AT,
        customer_id=customer,
        kind="email",
        value=value,
    )


def _second_process(store: EventStore) -> EventStore:
    """Another process on the same database: its own key cache."""
    return EventStore(store.datastore, store.master)


def test_keys_of_many_new_customers_are_made_in_one_go(store: EventStore, settings) -> None:
    customers = [uuid.uuid4() for _ in range(300)]
    with store.transaction() as tx:
        tx.append([_linked(c, 1, f"c{i}@example.org") for i, c in enumerate(customers)])
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM sb_customer_keys WHERE wrapped IS NOT NULL").fetchone()[0] == 300
    other = _second_process(store)
    assert [other.load(c)[0].value for c in customers[:3]] == ["c0@example.org", "c1@example.org", "c2@example.org"]


def test_a_key_destroyed_by_another_process_is_not_used_from_the_cache(store: EventStore) -> None:
    customer = uuid.uuid4()
    with store.transaction() as tx:
        tx.append([_linked(customer, 1, "ana@example.org")])
    assert store.keyring.cached(customer) not in (None, False)  # this process holds the key
    _second_process(store).erase_keys([customer])  # the erasure, elsewhere
    late = InteractionRecorded(
        id=uuid.uuid4(),
        stream_id=customer,
        version=2,
        occurred_at=AT,
        customer_id=customer,
        interaction_id=uuid.uuid4(),
        channel="sms",
        direction="inbound",
        kind="message",
        case_id=None,
        text="written after the erasure",
    )
    with pytest.raises(ConcurrencyError), store.transaction() as tx:
        tx.append([late])
    with pytest.raises(KeyDestroyedError), store.transaction() as tx:  # the retry: the key is gone
        tx.append([late])
    assert [e.version for e in store.load(customer)] == [1]
    assert store.load(customer)[0].value == "[erased]"


def test_two_writers_creating_one_customers_key_agree_on_it(store: EventStore) -> None:
    customer = uuid.uuid4()
    other = _second_process(store)
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            with other.transaction() as tx:
                tx.append([_linked(customer, 2, "second@example.org")])  # waits for the first's key
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with store.transaction() as tx:
        tx.append([_linked(customer, 1, "first@example.org")])
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.3)  # the second writer is now blocked on the first's uncommitted key
    thread.join(10)
    assert not errors, errors
    assert [e.value for e in _second_process(store).load(customer)] == ["first@example.org", "second@example.org"]


def test_an_erasure_waits_for_a_writer_using_the_key(store: EventStore) -> None:
    """No event is sealed with a key after the erasure destroyed it: the erasure waits for the writer."""
    customer = uuid.uuid4()
    with store.transaction() as tx:
        tx.append([_linked(customer, 1, "ana@example.org")])
    erased = threading.Event()

    def erase() -> None:
        _second_process(store).erase_keys([customer])
        erased.set()

    with store.transaction() as tx:
        tx.append([_linked(customer, 2, "ana@work.example.org")])
        thread = threading.Thread(target=erase)
        thread.start()
        assert not erased.wait(0.3)  # blocked by this transaction's hold on the key
    thread.join(10)
    assert erased.is_set()
    assert [e.value for e in _second_process(store).load(customer)] == ["[erased]", "[erased]"]
