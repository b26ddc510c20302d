"""Appends to the log are serialised by an advisory lock and take the table in ROW EXCLUSIVE mode
(services/platform/eventstore/recorder.py), so VACUUM and ANALYZE of the log never stop them. With the
library's EXCLUSIVE table lock they did: every autovacuum of `sb_events` held appends back until
PostgreSQL cancelled it a second later. An append still waits for a process of an earlier release,
which locks the table EXCLUSIVE, so the two never interleave positions during a rolling upgrade.

The appends go through the log's own recorder, on connections that give up waiting for a lock after a
second (`lock_timeout`): an append that waits for a lock says so by failing, so nothing here polls.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import OperationalError, StoredEvent

from services.platform.database import parse_database_url
from services.platform.eventstore.recorder import ChainedRecorder

pytestmark = pytest.mark.integration


@pytest.fixture
def impatient(store, settings) -> Iterator[ChainedRecorder]:
    """The log's recorder, on a pool whose appends give up waiting for a lock after a second."""
    datastore = parse_database_url(settings.database_url).datastore(pool_size=1, lock_timeout=1)
    try:
        yield ChainedRecorder(datastore, chain_key=store.recorder.chain_key)
    finally:
        datastore.close()


def _append(recorder: ChainedRecorder) -> list[int]:
    event = StoredEvent(originator_id=uuid4(), originator_version=1, topic="test.Appended", state=b"{}")
    with recorder.datastore.transaction(commit=True) as curs:
        return recorder._insert_stored_events(curs, [event])


def test_an_append_goes_on_while_the_log_is_vacuumed(store, settings, impatient) -> None:
    before = store.max_position()
    with psycopg.connect(settings.database_url) as vacuum:
        vacuum.execute("LOCK TABLE sb_events IN SHARE UPDATE EXCLUSIVE MODE")  # what VACUUM and ANALYZE hold
        assert _append(impatient) == [before + 1]  # it did not wait for VACUUM: no lock timeout
        vacuum.rollback()


def test_an_append_waits_for_a_writer_of_an_earlier_release(store, settings, impatient) -> None:
    before = store.max_position()
    with psycopg.connect(settings.database_url) as earlier:
        earlier.execute("LOCK TABLE sb_events IN EXCLUSIVE MODE")  # how an earlier release appended
        with pytest.raises(OperationalError, match="lock timeout"):
            _append(impatient)  # it waited for that writer, until its lock_timeout
        assert store.max_position() == before
        earlier.rollback()
    assert _append(impatient) == [before + 1]
    assert store.max_position() == before + 1
