"""The event store: one object to append, load and read the log, with keys handled inside.

A `Transaction` lets the caller write other rows (identity index, processed-message records,
tracking positions) in the same PostgreSQL transaction as the events, so that either all of a
batch's effects are stored or none are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError as ESIntegrityError
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import PostgresDatastore
from psycopg import errors as pg_errors

from events.base import DomainEvent
from services.platform.eventstore.codec import EventCodec, as_uuid
from services.platform.eventstore.keys import KeyRing, KeyScope, MasterKey
from services.platform.eventstore.recorder import ChainedRecorder

# Stands for "this customer was not erased" where there is no key to hand (an event with nothing sealed).
NOT_ERASED = object()


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
        if not self.keys.prepare({e.customer_id for e in events if type(e).PERSONAL}):
            raise ConcurrencyError("a customer was erased meanwhile: reload and try again")
        seal, writers = self.store.codec.seal, {}
        for event in events:
            aead = None
            if type(event).PERSONAL:
                aead = writers.get(event.customer_id)
                if aead is None:
                    aead = writers[event.customer_id] = self.keys.writer(event.customer_id)
            self.stored.append(seal(event, aead))
        self.events.extend(events)

    def execute(self, query, params: Any = None):
        return self.curs.execute(query, params, prepare=True)


class RecentEvents:
    """The events this process committed lately, by position.

    A projector or relay in the same process as the core reads them from here instead of reading
    and decrypting them back from the table: only a run of positions that follows on without a gap
    is served, so whatever another process wrote (or a rolled-back transaction skipped) is read
    from the table as always.
    """

    # What an event takes in memory beyond its stored bytes: the Struct, its ids and timestamp.
    OVERHEAD = 512

    def __init__(self, size: int = 50_000, max_bytes: int = 64 * 1024 * 1024):
        self.size = size
        self.max_bytes = max_bytes  # settings.recent_events_max_bytes: a few large emails must not pin gigabytes
        self.bytes = 0
        self._events: OrderedDict[int, DomainEvent] = OrderedDict()
        self._weights: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, positions: Sequence[int], events: Sequence[DomainEvent], sizes: Sequence[int] = ()) -> None:
        """`sizes`: the events' stored bytes (their estimated weight is that plus OVERHEAD)."""
        weights = [n + self.OVERHEAD for n in sizes] if sizes else [self.OVERHEAD] * len(positions)
        with self._lock:
            for position, event, weight in zip(positions, events, weights, strict=True):
                self._events[position] = event
                self.bytes += weight - self._weights.get(position, 0)
                self._weights[position] = weight
            held = self._events
            while held and (len(held) > self.size or self.bytes > self.max_bytes):
                position, _ = held.popitem(last=False)  # oldest first
                self.bytes -= self._weights.pop(position)

    def after(self, position: int, limit: int) -> list[tuple[int, DomainEvent]]:
        out = []
        with self._lock:
            events = self._events
            position += 1
            while len(out) < limit and position in events:
                out.append((position, events[position]))
                position += 1
        return out


class EventStore:
    def __init__(
        self,
        datastore: PostgresDatastore,
        master: MasterKey,
        codec: EventCodec | None = None,
        recent_max_bytes: int = 64 * 1024 * 1024,
    ):
        self.datastore = datastore
        self.master = master
        self.recorder = ChainedRecorder(datastore, chain_key=master.chain_key)
        self.codec = codec or EventCodec()
        self.keyring = KeyRing(master)
        self.recent = RecentEvents(max_bytes=recent_max_bytes)

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
        if tx.positions:
            self.recent.add(tx.positions, tx.events, [len(s.state) for s in tx.stored])

    # -- reading -------------------------------------------------------------------------------

    def load(self, stream_id: UUID, after_version: int = 0) -> list[DomainEvent]:
        stored = self.recorder.select_events(stream_id, gt=after_version or None)
        return [event for event, _ in self.open_stored(stored)]

    def read(self, after: int, limit: int = 1000) -> list[tuple[int, DomainEvent, bool]]:
        """Events after a position, oldest first: (position, event, redacted)."""
        recent = self.recent.after(after, limit)
        if recent:
            owners = {e.customer_id for _, e in recent if type(e).PERSONAL}
            if not any(self.keyring.cached(owner) is None for owner in owners):  # nobody erased meanwhile
                return [(position, event, False) for position, event in recent]
        notifications = self.recorder.notifications_after(after, limit)
        return self.open_notifications(notifications)

    def open_notifications(self, notifications: Sequence[Notification]) -> list[tuple[int, DomainEvent, bool]]:
        opened = self.open_stored(notifications)
        return [(n.id, event, redacted) for n, (event, redacted) in zip(notifications, opened, strict=True)]

    def open_stored(self, stored: Sequence[StoredEvent]) -> list[tuple[DomainEvent, bool]]:
        """Stored events as domain events (and whether redacted); the keys they need in one query."""
        if not stored:
            return []
        codec = self.codec
        views = [codec.view(s.state) for s in stored]
        owners = [codec.owner(v) if codec.needs_key(s.topic, v) else None for s, v in zip(stored, views, strict=True)]
        sealed = {o for o, v in zip(owners, views, strict=True) if v.p is not None}
        keys: dict[UUID, Any] = self.keyring.readers(self._key_cursor, sealed)
        unsealed = {o for o in owners if o is not None} - sealed
        if unsealed:  # old events with nothing sealed: only whether the owner was erased matters
            keys.update(self._erased_or_not(unsealed))
        return [
            codec.open_view(
                s.topic,
                as_uuid(s.originator_id),
                s.originator_version,
                view,
                keys[owner] if owner is not None else None,
            )
            for s, view, owner in zip(stored, views, owners, strict=True)
        ]

    def _erased_or_not(self, customer_ids: set[UUID]) -> dict[UUID, Any]:
        """None for an erased customer, else something that is not None (a customer may have no key)."""
        out: dict[UUID, Any] = {}
        missing = []
        for cid in customer_ids:
            cached = self.keyring.cached(cid)
            if cached is False:
                missing.append(cid)
            else:
                out[cid] = cached
        if missing:
            with self._key_cursor() as curs:
                loaded = self.keyring.fetch(curs, missing)
            for cid in missing:
                out[cid] = loaded.get(cid, NOT_ERASED)
        return out

    @contextmanager
    def _key_cursor(self):
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            yield curs

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def erase_keys(self, customer_ids: list[UUID]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self.keyring.destroy(curs, customer_ids)
