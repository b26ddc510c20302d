"""The log opened for `projections rebuild` by worker processes, page by page, in order.

Why. Opening an event (its JSON, base64 and AES-GCM of the sealed fields, msgpack, splicing the
clear and the personal fields into one JSON text) was more than half of a rebuild's time, all on
one core while the other waited. Here a thread reads raw pages (short keyset statements, as
`LogReader` does), a pool of processes opens them, and the rebuild's own process only decodes each
event's finished JSON text into its class (msgspec, a fraction of the cost) and folds it. The text
is what `LogReader` decodes in-process: the same fields, redactions and tamper checks. An event
stored at an older version comes back as None and is opened in the parent by the store itself (the
codec's upcasting path); there are few.

Keys. The parent looks up the data keys as the store does (sb_customer_keys, unwrapped with the
master key, cached for the keyring's time to live) and sends each page the keys of the customers
whose sealed fields it holds: a worker never sees the master key, and holds a key only while it
opens that page.

A worker that dies (killed, out of memory) breaks the pool; the page waiting for it raises
`WorkerDied`, and the rebuild stops with nothing swapped.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from uuid import UUID

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import StoredEvent
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from projections.base import Item
from services.platform.eventstore.codec import EventCodec
from services.platform.eventstore.keys import MissingKeyError

_json_encode = msgspec.json.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode

Row = tuple[int, str, int, str, bytes]  # position, stream id (text), stream version, topic, state
Opened = tuple[bytes | None, bool]  # the event's JSON text (None: an older version), redacted


_DIED = "a process opening the log's pages ended before answering (killed, or out of memory?)"


class WorkerDied(RuntimeError):
    """A process opening the log's pages ended before answering."""


# -- in the workers -----------------------------------------------------------------------------------


@functools.cache
def _codec() -> EventCodec:
    return EventCodec()


def sealed(state: bytes) -> bool:
    """Whether a stored state has sealed fields, without parsing it: the codec writes
    `{"v":…,"d":{…},"p":"BASE64"}`, `p` last, and base64 holds no quote (a key named `p` inside `d`
    is followed by more than the closing `"}`)."""
    i = state.rfind(b',"p":"')
    return i > 0 and state.find(b'"', i + 6) == len(state) - 2


def owner_of(codec: EventCodec, state: bytes) -> bytes:
    """The customer whose key sealed this state, as its 36 characters of text."""
    return codec.owner_text(state) or str(codec.owner(codec.view(state))).encode()


def event_json(
    codec: EventCodec, stream_text: bytes, stream_id: UUID, version: int, topic: str, view, aead: AESGCM | None
) -> Opened:
    """The whole event at its current version as one JSON text (stream id and version, clear fields,
    personal fields opened or redacted), and whether it was redacted; (None, False) for an event stored
    at an older version, which only the codec's upcasting path opens."""
    if view.v != codec.registry.cls(topic).VERSION:
        return None, False
    parts = [b'{"stream_id":"%s","version":%d' % (stream_text, version)]
    clear = bytes(view.d)
    if len(clear) > 2:
        parts.append(clear[1:-1])
    redacted = False
    if view.p is not None:
        packed, redacted = codec._personal(topic, stream_id, version, view, aead)
        personal = codec.redactions_json(topic) if redacted else _json_encode(_unpack(packed))
        if len(personal) > 2:
            parts.append(personal[1:-1])
    return b",".join(parts) + b"}", redacted


def open_page(rows: list[tuple[str, int, str, bytes]], keys: dict[bytes, bytes | None]) -> list[Opened]:
    """Run in a worker: a page of raw rows (stream id, version, topic, state) → their events' JSON."""
    codec = _codec()
    aeads = {owner: None if key is None else AESGCM(key) for owner, key in keys.items()}
    out = []
    for stream_text, version, topic, state in rows:
        view = codec.view(state)
        aead = aeads[owner_of(codec, state)] if view.p is not None else None
        out.append(event_json(codec, stream_text.encode(), UUID(stream_text), version, topic, view, aead))
    return out


# -- in the rebuild's process -------------------------------------------------------------------------


class ParallelPages:
    """The log from the start, page by page in order, opened by `workers` processes.

    Iterating yields lists of (position, event, redacted) up to the first page that is not full: what
    was appended after that is read by the rebuild's catch-up. `lookahead` pages are read and opened
    ahead of the one being folded.
    """

    def __init__(self, store, conn, workers: int, batch_size: int, lookahead: int | None = None):
        self.store = store
        self.conn = conn
        self.batch_size = batch_size
        self.workers = workers
        self.lookahead = lookahead or 2 * workers + 1
        schema, table = store.datastore.schema, store.recorder.events_table_name
        self.query = SQL(
            "SELECT notification_id, originator_id::text, originator_version, topic, state FROM {0}.{1} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(Identifier(schema), Identifier(table))
        # Forked, all at once, here on the calling thread before this object's own thread starts and
        # while the folds are still small: a spawned worker would start a new interpreter and import
        # the parent's main module again (the whole CLI, seconds under load). A forked one runs only
        # `open_page` (msgspec, cryptography), never the connections or threads it was copied with.
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        self.pool.submit(os.getpid).result()  # forks every worker now (fork: all at the first submit)
        self._keys: dict[bytes, tuple[bytes | None, float]] = {}
        self._ttl = store.keyring.ttl
        self._pages: queue.Queue = queue.Queue(self.lookahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def a_worker_pid(self) -> int:
        """The process id of one of the workers (started if none was yet)."""
        return self.pool.submit(os.getpid).result()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a reader waiting for room
                    self._pages.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._keys.clear()

    def __iter__(self) -> Iterator[list[Item]]:
        self._thread = threading.Thread(target=self._read, name="rebuild-read", daemon=True)
        self._thread.start()
        while (page := self._pages.get()) is not None:
            if isinstance(page, BrokenProcessPool):  # found broken when the next page was handed over
                raise WorkerDied(_DIED) from page
            if isinstance(page, BaseException):
                raise page
            rows, future = page
            yield self._finish(rows, future)

    # The reading thread: raw pages in, their opening submitted, handed over in order.
    def _read(self) -> None:
        try:
            after = 0
            while not self._stop.is_set():
                with self.conn.cursor(binary=True, row_factory=tuple_row) as curs:
                    rows: list[Row] = curs.execute(self.query, (after, self.batch_size)).fetchall()
                if not rows:
                    break
                keys = self._keys_for(rows)
                future = self.pool.submit(open_page, [r[1:] for r in rows], keys)
                self._put((rows, future))
                after = rows[-1][0]
                if len(rows) < self.batch_size:
                    break
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 — handed to the iterating thread, which raises it
            self._put(exc)

    def _put(self, page) -> None:
        while not self._stop.is_set():
            try:
                self._pages.put(page, timeout=0.1)
                return
            except queue.Full:
                continue

    def _keys_for(self, rows: list[Row]) -> dict[bytes, bytes | None]:
        codec = self.store.codec
        owners = {owner_of(codec, r[4]) for r in rows if sealed(r[4])}
        now = time.monotonic()
        missing = [o for o in owners if (k := self._keys.get(o)) is None or k[1] < now]
        if missing:
            ids = {UUID(o.decode()): o for o in missing}
            with self.store._key_cursor() as curs:
                loaded = self.store.keyring.unwrapped(curs, list(ids))
            for cid, owner in ids.items():
                if cid not in loaded:
                    raise MissingKeyError(str(cid))
                self._keys[owner] = (loaded[cid], now + self._ttl)
        return {o: self._keys[o][0] for o in owners}

    def _finish(self, rows: list[Row], future: Future) -> list[Item]:
        try:
            opened = future.result()
        except BrokenProcessPool as exc:
            raise WorkerDied(_DIED) from exc
        codec = self.store.codec
        cls_of, decoder = codec.registry.cls, codec._decoder
        items: list[Item] = []
        for row, (text, redacted) in zip(rows, opened, strict=True):
            position, stream_text, version, topic, state = row
            if text is None:  # stored at an older version: the store's own path, with its upcasters
                stored = StoredEvent(
                    originator_id=UUID(stream_text), originator_version=version, topic=topic, state=state
                )
                event, redacted = self.store.open_stored([stored])[0]
                items.append((position, event, redacted))
            else:
                items.append((position, decoder(cls_of(topic))(text), redacted))
        return items
