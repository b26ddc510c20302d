"""eventsourcing's PostgreSQL process recorder, with a tamper-evident hash chain.

Every stored event carries `chain = HMAC(chain key, previous chain ‖ position ‖ stream id ‖ version
‖ name ‖ stored bytes)`. Inserts are serialised (so positions commit in order: a reader never passes
a position that a slower transaction fills in later); under that lock we read the head of the chain,
allocate positions, and write each row with its link. The chain covers ciphertext, so erasing a customer (destroying a key) leaves it
intact, while any row changed, deleted or inserted out of band breaks it. The chain key is derived
from the master key: without it nobody can forge a link, not even someone with the database.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, Notification, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg import pq
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from services.platform.schema import event_store_ddl

EVENTS_TABLE = "sb_events"
TRACKING_TABLE = "sb_tracking"
GENESIS = b"\x00" * 32
_COPY_TYPES = ("int8", "uuid", "int8", "text", "bytea", "bytea")


def link(key: bytes, previous: bytes, position: int, stream_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    # One-shot HMAC over the joined parts: the same bytes as updating part by part, at a third of the cost.
    return hmac.digest(
        key,
        b"".join((previous, struct.pack(">qq", position, version), stream_id.bytes, topic.encode(), b"\x00", state)),
        "sha256",
    )


class ChainedRecorder(PostgresProcessRecorder):
    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        chain_key: bytes,
        events_table_name: str = EVENTS_TABLE,
        tracking_table_name: str = TRACKING_TABLE,
    ):
        super().__init__(datastore, events_table_name=events_table_name, tracking_table_name=tracking_table_name)
        self.chain_key = chain_key
        t = Identifier(self.datastore.schema), Identifier(self.events_table_name)
        self.head_table = Identifier(f"{self.events_table_name}_head")
        # The DDL is in services.platform.schema; the library runs it (create_table) in its order.
        events_table, after = event_store_ddl(self.datastore.schema, self.events_table_name)
        self.sql_create_statements[self.create_table_statement_index] = events_table
        self.sql_create_statements.extend(after)
        self.select_head = SQL("SELECT position, chain FROM {0}.{1} WHERE id = 1").format(
            Identifier(self.datastore.schema), self.head_table
        )
        self.upsert_head = SQL(
            "INSERT INTO {0}.{1} (id, position, chain, seal) VALUES (1, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET position = EXCLUDED.position, chain = EXCLUDED.chain, "
            "seal = EXCLUDED.seal"
        ).format(Identifier(self.datastore.schema), self.head_table)
        # Appends are serialised by a transaction-level advisory lock, not by the library's `LOCK TABLE
        # ... IN EXCLUSIVE MODE`: that mode conflicts with the lock VACUUM and ANALYZE take, so every
        # autovacuum of the log stopped all appends until PostgreSQL cancelled it (deadlock_timeout,
        # 1 s: a 1.4 s p99 in the ingest bench), a manual VACUUM stopped them for as long as it ran,
        # and an anti-wraparound one (never cancelled) would. ROW EXCLUSIVE, taken before the positions
        # are allocated, is what the insert takes anyway and lets VACUUM and ANALYZE run beside it; it
        # still waits for, and holds off, a process of an earlier release that locks the table
        # EXCLUSIVE, so the two kinds never interleave positions during a rolling upgrade. One round
        # trip for the three.
        self.qualified_table = f"{self.datastore.schema}.{self.events_table_name}"
        key = int.from_bytes(
            hashlib.sha256(f"sb append {self.qualified_table}".encode()).digest()[:8], "big", signed=True
        )
        self.lock_append = SQL(
            "SET LOCAL lock_timeout = '{0}s'; SELECT pg_advisory_xact_lock({1}); "
            "LOCK TABLE {2}.{3} IN ROW EXCLUSIVE MODE"
        ).format(self.datastore.lock_timeout, key, *t)
        # One round trip and one row, however many events: safe because every insert allocates
        # under that lock (so nothing else moves the sequence in between).
        self.allocate_positions = SQL(
            "SELECT setval(pg_get_serial_sequence(%(table)s, 'notification_id'), "
            "nextval(pg_get_serial_sequence(%(table)s, 'notification_id')) + %(n)s - 1) AS last"
        )
        self.copy_chained = SQL(
            "COPY {0}.{1} (notification_id, originator_id, originator_version, topic, state, chain) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(*t)
        # What the projector and the followers read: the columns they use, as tuples (the library's
        # `select_notifications` reads every column into a dict per row, a tenth of the projector's time).
        self.select_after = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {0}.{1} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(*t)

    def _lock_table(self, curs) -> None:
        curs.execute(self.lock_append)  # several statements: the simple protocol, not prepared

    def head_seal(self, position: int, chain: bytes) -> bytes:
        return hmac.new(self.chain_key, b"head" + struct.pack(">q", position) + chain, hashlib.sha256).digest()

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        # Always this path, never the base class's database function (it inserts rows without a
        # link). The datastore's enable_db_functions flag is shared by every thread and recorder on
        # the datastore, so it is not switched off and back here: that raced, and left it off.
        notification_ids = None
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)  # the tracking record, if any
            if stored_events:
                notification_ids = self._insert_stored_events(curs, stored_events, **kwargs)
        return notification_ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def notifications_after(self, after: int, limit: int) -> list[Notification]:
        """The stored events after a position, oldest first (as `select_notifications(after + 1, limit)`)."""
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self.select_after, (after, limit), prepare=True)
            return [
                Notification(id=r[0], originator_id=r[1], originator_version=r[2], topic=r[3], state=bytes(r[4]))
                for r in curs.fetchall()
            ]

    def _insert_stored_events(self, curs, stored_events: Sequence[StoredEvent], **_: Any) -> list[int]:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self.select_head, prepare=True)
        head = curs.fetchone()
        previous = bytes(head["chain"]) if head else GENESIS
        curs.execute(self.allocate_positions, {"table": self.qualified_table, "n": len(stored_events)}, prepare=True)
        last = curs.fetchone()["last"]
        positions = list(range(last - len(stored_events) + 1, last + 1))
        rows = []
        for position, event in zip(positions, stored_events, strict=True):
            stream_id = event.originator_id if isinstance(event.originator_id, UUID) else UUID(str(event.originator_id))
            previous = link(
                self.chain_key, previous, position, stream_id, event.originator_version, event.topic, event.state
            )
            rows.append((position, stream_id, event.originator_version, event.topic, event.state, previous))
        curs.execute(self.upsert_head, (positions[-1], previous, self.head_seal(positions[-1], previous)), prepare=True)
        # Binary COPY: an order of magnitude less client CPU than binding arrays for unnest().
        with curs.copy(self.copy_chained) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        return positions

    def insert_within(self, curs, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Inserts in the caller's transaction (so other writes commit atomically with the events)."""
        if not stored_events:
            return []
        return self._insert_stored_events(curs, stored_events)


class ChainBreak(Exception):
    def __init__(self, position: int, reason: str):
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason


def verify_chain(conn, chain_key: bytes, table: str = EVENTS_TABLE, batch: int = 10_000, progress=None) -> int:
    """Recomputes the whole chain; returns the count of intact events or raises ChainBreak.

    Rows and head are read from one snapshot, so events appended meanwhile are not a break: in a
    REPEATABLE READ transaction of its own (autocommit connections included), or else in the
    caller's open transaction, whose isolation level then decides.
    """
    own_transaction = conn.info.transaction_status == pq.TransactionStatus.IDLE
    with conn.transaction():
        if own_transaction:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _verify_chain(conn, chain_key, table, batch, progress)


def _verify_chain(conn, chain_key: bytes, table: str, batch: int, progress) -> int:
    previous = GENESIS
    count = 0
    last_position = 0
    # Tuples whatever the connection's row factory (the datastore's pool hands out dict rows).
    with conn.cursor(name="sb_audit_verify", row_factory=tuple_row) as curs:
        curs.itersize = batch
        curs.execute(
            SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state, chain "
                "FROM {0} ORDER BY notification_id"
            ).format(Identifier(table))
        )
        for position, stream_id, version, topic, state, chain in curs:
            expected = link(chain_key, previous, position, stream_id, version, topic, bytes(state))
            if not hmac.compare_digest(expected, bytes(chain)):
                reason = (
                    "row altered, inserted out of band, or the row before it deleted"
                    if count
                    else "first row altered, inserted or an earlier row deleted"
                )
                raise ChainBreak(position, reason)
            previous = expected
            last_position = position
            count += 1
            if progress is not None:
                progress(1)
    head = (
        conn.cursor(row_factory=tuple_row)
        .execute(SQL("SELECT position, chain, seal FROM {0} WHERE id = 1").format(Identifier(f"{table}_head")))
        .fetchone()
    )
    if head is None:
        if count:
            raise ChainBreak(last_position, "chain head missing")
        return 0
    position, chain, seal = head[0], bytes(head[1]), bytes(head[2])
    expected_seal = hmac.new(chain_key, b"head" + struct.pack(">q", position) + chain, hashlib.sha256).digest()
    if not hmac.compare_digest(seal, expected_seal):
        raise ChainBreak(position, "chain head altered")
    if position != last_position or chain != previous:
        raise ChainBreak(
            min(position, last_position) + 1 if position > last_position else last_position,
            "newest rows deleted" if position > last_position else "rows appended out of band",
        )
    return count
