"""The event store: one object to append, load and read the log, with keys handled inside.

A `Transaction` lets the caller write other rows (identity index, processed-message records,
tracking positions) in the same PostgreSQL transaction as the events, so that either all of a
batch's effects are stored or none are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError as ESIntegrityError
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import PostgresDatastore
from psycopg import errors as pg_errors
from psycopg.sql import SQL, Identifier

from events.base import DomainEvent
from services.eventstore.codec import EventCodec
from services.eventstore.keys import SCHEMA as KEYS_SCHEMA
from services.eventstore.keys import KeyDestroyedError, KeyRing, KeyScope, MasterKey
from services.eventstore.recorder import EVENTS_TABLE, ChainedRecorder


class ConcurrencyError(Exception):
    """Another writer got there first (an aggregate version or an identity was taken): retry."""


class Transaction:
    def __init__(self, store: EventStore, curs):
        self.store = store
        self.curs = curs
        self.keys = KeyScope(store.keyring, curs)
        self.stored: list[StoredEvent] = []
        self.events: list[DomainEvent] = []
        self.positions: list[int] = []

    def append(self, events: Sequence[DomainEvent]) -> None:
        for event in events:
            aead = self.keys.writer(event.customer_id) if type(event).PERSONAL else None
            self.stored.append(self.store.codec.seal(event, aead))
            self.events.append(event)

    def execute(self, query, params: Any = None):
        return self.curs.execute(query, params, prepare=True)


class EventStore:
    def __init__(self, datastore: PostgresDatastore, master: MasterKey):
        self.datastore = datastore
        self.master = master
        self.recorder = ChainedRecorder(datastore, chain_key=master.chain_key)
        self.codec = EventCodec()
        self.keyring = KeyRing(master)

    def create_schema(self) -> None:
        self.recorder.create_table()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(KEYS_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Everything written through the yielded Transaction commits together, events last."""
        try:
            with self.datastore.transaction(commit=True) as curs:
                tx = Transaction(self, curs)
                yield tx
                if tx.stored:
                    tx.positions = self.recorder.insert_within(curs, tx.stored)
        except (pg_errors.UniqueViolation, ESIntegrityError) as exc:
            raise ConcurrencyError(str(exc).splitlines()[0]) from exc
        tx.keys.committed()

    # -- reading -------------------------------------------------------------------------------

    def load(self, stream_id: UUID, after_version: int = 0) -> list[DomainEvent]:
        stored = self.recorder.select_events(stream_id, gt=after_version or None)
        if not stored:
            return []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            return [self.codec.open_(s, self._reader(curs, s)) for s in stored]

    def _reader(self, curs, stored: StoredEvent):
        if not self.codec.registry.cls(stored.topic).PERSONAL:
            return None
        try:
            return self.keyring.reader(curs, self.codec.customer_of(stored))
        except KeyDestroyedError:
            return None

    def read(self, after: int, limit: int = 1000) -> list[tuple[int, DomainEvent, bool]]:
        """Events after a position, oldest first: (position, event, redacted)."""
        notifications = self.recorder.select_notifications(after + 1, limit)
        return self.open_notifications(notifications)

    def open_notifications(self, notifications: Sequence[Notification]) -> list[tuple[int, DomainEvent, bool]]:
        if not notifications:
            return []
        out = []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            personal = [n for n in notifications if self.codec.registry.cls(n.topic).PERSONAL]
            self.keyring.load(curs, {self.codec.customer_of(n) for n in personal})
            for n in notifications:
                aead = self._reader(curs, n)
                data, redacted = self.codec.open_fields(n, aead)
                event = self._convert(n.topic, data)
                out.append((n.id, event, redacted or (aead is None and bool(self.codec.registry.cls(n.topic).PERSONAL))))
        return out

    def _convert(self, topic: str, data: dict) -> DomainEvent:
        import msgspec  # noqa: PLC0415

        return msgspec.convert(data, self.codec.registry.cls(topic), strict=False)

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def erase_keys(self, customer_ids: list[UUID]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self.keyring.destroy(curs, customer_ids)

    def table(self) -> Identifier:
        return Identifier(EVENTS_TABLE)

    def sql(self, text: str) -> SQL:
        return SQL(text)
