"""The event store's pool checks a connection before lending it only when the connection has
something to say (`check_unless_quiet`).

The check used to be an empty query before every transaction of every role: a round trip each
(issue 13). Now a connection with nothing to read is lent at once, and one the server dropped (a
terminated backend, a restart: the server says so and closes the socket) is still found out and
replaced before anyone uses it.
"""

from __future__ import annotations

import psycopg
import pytest

from services.platform.database import parse_database_url

pytestmark = pytest.mark.integration


@pytest.fixture
def datastore(database_url):
    # One connection, so every `get_connection` lends the same one and runs the check on it.
    store = parse_database_url(database_url).datastore(pool_size=1, max_overflow=0, pre_ping=True)
    yield store
    store.close()


def traced(conn, path, action) -> str:
    """What the client sent and received (libpq's protocol trace) while `action()` ran."""
    with open(path, "w") as f:
        conn.pgconn.trace(f.fileno())
        try:
            action()
        finally:
            conn.pgconn.untrace()
    return path.read_text()


def test_a_quiet_connection_is_lent_without_a_round_trip(datastore, tmp_path):
    with datastore.get_connection() as conn:
        conn.execute("SELECT 1")
        lent_before = conn

    def lend_and_query() -> None:
        with datastore.get_connection() as again:
            assert again is lent_before
            again.execute("SELECT 42")

    # Tracing the connection while it sits in the pool: the check happens inside `get_connection`.
    trace = traced(lent_before, tmp_path / "trace", lend_and_query)
    sent = [line for line in trace.splitlines() if "\tF\t" in line]
    assert sent, trace  # the trace works: the query is in it
    assert "SELECT 42" in sent[0], sent  # and it is the first thing sent: no empty query before it


def test_a_connection_whose_backend_was_terminated_is_replaced_before_it_is_used(datastore, pg_admin_url):
    with datastore.get_connection() as conn:
        dead_pid = conn.info.backend_pid
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        # With a timeout, pg_terminate_backend returns once the backend is gone (false if it is not).
        assert admin.execute("SELECT pg_terminate_backend(%s, 30000)", (dead_pid,)).fetchone()[0]

    # No error reaches the caller: the check read the server's goodbye and the pool reconnected.
    with datastore.transaction(commit=True) as curs:
        row = curs.execute("SELECT pg_backend_pid() AS pid").fetchone()
    assert row["pid"] != dead_pid
