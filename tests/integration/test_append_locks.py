"""Appends to the log are serialised by an advisory lock and take the table in ROW EXCLUSIVE mode
(services/platform/eventstore/recorder.py), so VACUUM and ANALYZE of the log never stop them. With the
library's EXCLUSIVE table lock they did: every autovacuum of `sb_events` held appends back until
PostgreSQL cancelled it a second later. An append still waits for a process of an earlier release,
which locks the table EXCLUSIVE, so the two never interleave positions during a rolling upgrade.

Events are written by the real core into the real event store.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from services.core.processor import CoreProcessor
from tests.fixtures.interactions import sms

pytestmark = pytest.mark.integration


def _appending(store, phone: str) -> tuple[threading.Thread, dict]:
    """One message recorded by the core on a thread of its own: (the thread, what it recorded)."""
    done: dict = {}

    def run() -> None:
        done["outcome"] = CoreProcessor(store).process([(sms(phone, 1), None)])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def _until_an_append_waits_for_the_log(settings) -> None:
    deadline = time.monotonic() + 60
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while not conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'sb_events'::regclass AND NOT granted"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "no append waited for the log's lock"
            time.sleep(0.02)


def test_an_append_goes_on_while_the_log_is_vacuumed(store, settings) -> None:
    with psycopg.connect(settings.database_url) as vacuum:
        vacuum.execute("LOCK TABLE sb_events IN SHARE UPDATE EXCLUSIVE MODE")  # what VACUUM and ANALYZE hold
        thread, done = _appending(store, "+447700900301")
        thread.join(60)
        assert not thread.is_alive(), "the append waited for VACUUM"
        assert len(done["outcome"].recorded) == 1
        vacuum.rollback()


def test_an_append_waits_for_a_writer_of_an_earlier_release(store, settings) -> None:
    before = store.max_position()
    with psycopg.connect(settings.database_url) as earlier:
        earlier.execute("LOCK TABLE sb_events IN EXCLUSIVE MODE")  # how an earlier release appended
        thread, done = _appending(store, "+447700900302")
        _until_an_append_waits_for_the_log(settings)
        assert thread.is_alive() and store.max_position() == before
        earlier.rollback()
    thread.join(60)
    assert len(done["outcome"].recorded) == 1
    assert store.max_position() > before
