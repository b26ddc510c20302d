"""A customer remembers only its latest interaction ids; an older one redelivered is still a
duplicate, because the core checks its processed-interaction records in the store first."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from services.core.processor import CoreProcessor
from services.domain.customer import RECENT_INTERACTIONS, Customer
from tests.fixtures.interactions import sms

pytestmark = pytest.mark.integration


def recorded(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM sb_events WHERE topic = 'customer.InteractionRecorded'").fetchone()[0]


def test_an_interaction_older_than_the_window_redelivered_is_recorded_once(store, database_url):
    phone = f"+44770090{uuid.uuid4().int % 10_000:04d}"
    messages = [sms(phone, n) for n in range(RECENT_INTERACTIONS + 40)]
    processor = CoreProcessor(store)
    for start in range(0, len(messages), 100):
        outcome = processor.process([(m, None) for m in messages[start : start + 100]])
        assert not outcome.poison and not outcome.failed
    before = recorded(database_url)
    first = messages[0]
    [customer] = [a for a in processor._cache._entries.values() if isinstance(a[0], Customer)][:1]
    assert first.id not in customer[0].interactions  # out of the customer's window

    again = processor.process([(first, None)])  # the same (warm) core
    cold = CoreProcessor(store).process([(first, None), (messages[1], None)])  # a core just started
    assert again.duplicates == [first.id] and not again.recorded
    assert cold.duplicates == [first.id, messages[1].id] and not cold.recorded
    assert recorded(database_url) == before
