"""The event log is tamper-evident: `verify_chain` finds any row changed, removed or added out of band.

Each tamper case runs on a fresh database holding the same few hundred events written through the
recorder, changes it the way someone with plain database access (but not the chain key) could, and
expects `ChainBreak` at the first position where the chain no longer holds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.sql import SQL, Identifier

from services.platform.embedded import EmbeddedPostgres
from services.platform.eventstore.recorder import ChainBreak, ChainedRecorder, link, verify_chain

pytestmark = pytest.mark.integration

CHAIN_KEY = b"k" * 32
STREAMS = 30
VERSIONS = 10
BATCH = 50  # so the log is written in STREAMS * VERSIONS / BATCH = 6 transactions


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    admin_db: str

    def conninfo(self, dbname: str) -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """SWITCHBOARD_TEST_DATABASE_URL if set, else an embedded PostgreSQL for this module."""
    url = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")
    if url:
        params = conninfo_to_dict(url)
        yield PostgresServer(
            str(params.get("host") or "127.0.0.1"),
            int(params.get("port") or 5432),
            str(params.get("user") or "postgres"),
            str(params.get("password") or ""),
            str(params.get("dbname") or "postgres"),
        )
        return
    tmp = Path(tempfile.mkdtemp(prefix="sb-audit-"))
    embedded = EmbeddedPostgres(tmp / "pgdata", ephemeral=True).start()
    try:
        yield PostgresServer(embedded.host, embedded.port, embedded.user, embedded.password, "postgres")
    finally:
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class ChainedLog:
    conninfo: str
    datastore: PostgresDatastore
    recorder: ChainedRecorder
    positions: list[int]

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=autocommit)

    def verify(self, key: bytes = CHAIN_KEY) -> int:
        with self.connect(autocommit=False) as conn:
            return verify_chain(conn, key)

    def row(self, position: int) -> tuple:
        with self.connect() as conn:
            return conn.execute(
                "SELECT originator_id, originator_version, topic, state, chain FROM sb_events "
                "WHERE notification_id = %s",
                (position,),
            ).fetchone()


def _events() -> list[StoredEvent]:
    streams = [uuid4() for _ in range(STREAMS)]
    return [
        StoredEvent(
            originator_id=stream,
            originator_version=version,
            topic=f"Topic{version % 3}",
            state=b'{"n":%d,"s":"%s"}' % (version, stream.hex[:8].encode()),
        )
        for version in range(1, VERSIONS + 1)
        for stream in streams
    ]


@pytest.fixture
def log(server: PostgresServer) -> Iterator[ChainedLog]:
    """A fresh database with STREAMS * VERSIONS events written through the chained recorder."""
    dbname = f"sb_audit_{uuid4().hex[:16]}"
    admin = server.conninfo(server.admin_db)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(SQL("CREATE DATABASE {0}").format(Identifier(dbname)))
    datastore = PostgresDatastore(dbname, server.host, server.port, user=server.user, password=server.password)
    try:
        recorder = ChainedRecorder(datastore, chain_key=CHAIN_KEY)
        recorder.create_table()
        events = _events()
        positions: list[int] = []
        for start in range(0, len(events), BATCH):
            positions += recorder.insert_events(events[start : start + BATCH])
        yield ChainedLog(server.conninfo(dbname), datastore, recorder, positions)
    finally:
        datastore.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(SQL("DROP DATABASE IF EXISTS {0} WITH (FORCE)").format(Identifier(dbname)))


def test_an_untouched_log_verifies(log: ChainedLog) -> None:
    assert log.positions == list(range(1, STREAMS * VERSIONS + 1))
    assert log.verify() == STREAMS * VERSIONS


@pytest.mark.parametrize("connection", ["autocommit", "transaction", "datastore pool"])
def test_verify_runs_on_any_connection(log: ChainedLog, connection: str) -> None:
    """In autocommit mode too (it opens its own transaction), and on the pool's dict-row connections."""
    if connection == "datastore pool":
        with log.datastore.get_connection() as conn:
            assert verify_chain(conn, CHAIN_KEY) == STREAMS * VERSIONS
        return
    with log.connect(autocommit=connection == "autocommit") as conn:
        assert verify_chain(conn, CHAIN_KEY) == STREAMS * VERSIONS


def test_verify_reads_rows_and_head_from_one_snapshot(log: ChainedLog) -> None:
    """Events appended while a verification runs are neither counted nor reported as a break."""
    appended: list[int] = []

    def append_once(_: int) -> None:
        if not appended:
            appended.extend(log.recorder.insert_events([StoredEvent(uuid4(), 1, "Late", b"{}")]))

    with log.connect(autocommit=False) as conn:
        assert verify_chain(conn, CHAIN_KEY, progress=append_once) == STREAMS * VERSIONS
    assert appended == [STREAMS * VERSIONS + 1]
    assert log.verify() == STREAMS * VERSIONS + 1


def test_a_wrong_key_breaks_at_the_first_row(log: ChainedLog) -> None:
    with pytest.raises(ChainBreak) as broken:
        log.verify(b"w" * 32)
    assert broken.value.position == 1


def test_an_altered_state_breaks_at_that_row(log: ChainedLog) -> None:
    with log.connect() as conn:
        conn.execute("UPDATE sb_events SET state = %s WHERE notification_id = 137", (b'{"n":0}',))
    with pytest.raises(ChainBreak) as broken:
        log.verify()
    assert broken.value.position == 137


def test_a_deleted_row_breaks_at_the_row_after_it(log: ChainedLog) -> None:
    with log.connect() as conn:
        conn.execute("DELETE FROM sb_events WHERE notification_id = 150")
    with pytest.raises(ChainBreak) as broken:
        log.verify()
    assert broken.value.position == 151


def test_a_deleted_newest_row_breaks_at_the_tail(log: ChainedLog) -> None:
    newest = log.positions[-1]
    with log.connect() as conn:
        conn.execute("DELETE FROM sb_events WHERE notification_id = %s", (newest,))
    with pytest.raises(ChainBreak) as broken:
        log.verify()
    assert broken.value.position == newest
    assert "newest rows deleted" in broken.value.reason


def test_a_row_inserted_out_of_band_breaks_at_that_row(log: ChainedLog) -> None:
    with log.connect() as conn:
        forged = conn.execute(
            "INSERT INTO sb_events (originator_id, originator_version, topic, state, chain) "
            "VALUES (%s, 1, 'Forged', %s, %s) RETURNING notification_id",
            (uuid4(), b"{}", os.urandom(32)),
        ).fetchone()[0]
    assert forged == log.positions[-1] + 1
    with pytest.raises(ChainBreak) as broken:
        log.verify()
    assert broken.value.position == forged


def test_a_link_recomputed_with_another_key_breaks_at_that_row(log: ChainedLog) -> None:
    """Someone who recomputes a row's link the way the recorder does, but without our key, is caught."""
    position = 42
    previous_chain = bytes(log.row(position - 1)[4])
    stream_id, version, topic, state, chain = log.row(position)
    forged = link(b"w" * 32, previous_chain, position, UUID(str(stream_id)), version, topic, bytes(state))
    assert forged != bytes(chain)
    with log.connect() as conn:
        conn.execute("UPDATE sb_events SET chain = %s WHERE notification_id = %s", (forged, position))
    with pytest.raises(ChainBreak) as broken:
        log.verify()
    assert broken.value.position == position
