"""`projections rebuild`: new read models built beside the live ones, then swapped in.

Why this shape. Applying a whole log with the live projections' UPDATEs inside one transaction is
quadratic: a busy customer's row is updated thousands of times, and every version stays alive (the
transaction that made it is still running), so each UPDATE walks a longer chain of dead versions
(1.03M events did not finish in 23 minutes). Committing in chunks would fix the chains but not the
cost of one UPDATE per event, and readers would meanwhile see half-built views. So:

1. Build. The projections' tables are created afresh in a schema of their own (`sb_rebuild`) by
   their own DDL, without indexes. The log streams past once (keyset pages, short statements: no
   snapshot is held open, so the live projector's updates are cleaned up as usual) into in-memory
   folds (projections/folds.py) that write each row once, by binary COPY; the timeline's rows go
   out while the log is read, the rest at the end. Then a few set-based corrections, the indexes,
   ANALYZE. Cost: linear in the log. A projection without a fold is built by its own `apply`, one
   committed transaction per batch, into the new tables (linear too, only slower).
2. Catch up. Events appended meanwhile are applied to the new tables by the projections' own
   `apply` (they now have their indexes), batch by batch, until the head is reached.
3. Swap. In one short transaction that holds the projector's batch lock: the last few events are
   applied, the old tables are dropped, the new ones moved into their place, and the position is
   set. The live projector keeps serving (and updating) the old tables until then and carries on
   from the new position afterwards; readers see either the old views or the new ones.

An event that a projection cannot apply goes to one seam, `on_failure(projection, item, error)`.
By default the event is set aside and the rebuild goes on without it, as the live projector does;
at the swap, in the same transaction, the rebuilt projections' quarantine (services/quarantine.py)
is replaced by what this rebuild set aside. `fail_on_event` instead stops the rebuild (nothing is
swapped), naming the event's position.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent, Tracking
from psycopg import errors as pg_errors
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.copy import QueuedLibpqWriter
from psycopg.pq import Format
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from projections.base import BATCH_LOCK_KEY, Item, Projection, forget_staging, routed
from projections.folds import FOLDS, Columns, RawJson
from projections.rebuild_workers import ParallelPages, WorkerDied, event_json, owner_of
from services.platform import quarantine
from services.platform.logs import get_logger

log = get_logger(__name__)

SHADOW = "sb_rebuild"
REBUILD_LOCK_KEY = 0x5B_7072_6F72  # "sb pror": one rebuild at a time per database
READ_BATCH = 5000
# A log at least this long is opened by worker processes (projections/rebuild_workers.py); below it,
# starting them costs more than they save.
PARALLEL_FROM = 100_000

OnFailure = Callable[[str, Item, Exception], None]  # (projection name, the event, what it raised)


class RebuildError(Exception):
    """The rebuild stopped; the live read models are as they were."""


def fail_on_event(projection: str, item: Item, error: Exception) -> None:
    """The default `on_failure`: stop, naming the event (ids, never personal data)."""
    position, event, _redacted = item
    raise RebuildError(
        f"projection {projection!r} could not apply the event at position {position} "
        f"({type(event).NAME}, stream {event.stream_id}): {type(error).__name__}; "
        "the read models were left as they were"
    ) from error


class _RawJsonbDumper(Dumper):
    """jsonb in a binary COPY from JSON text already encoded (version byte 1, then the text)."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: bytes) -> bytes:
        return b"\x01" + obj


class LogReader:
    """The log after a position, decrypted, in pages of short statements (keyset pagination).

    Built for one pass over millions of events: the next page is fetched on a thread of its own
    while this one is decoded (psycopg waits for the server without holding the GIL), and an event
    at its type's current version is decoded as `EventCodec.open_view` does, in one piece (the same
    fields, the same redactions and tamper checks; older versions take the codec's upcasting path).
    """

    def __init__(self, store, conn, prefetch: bool = True):
        self.store = store
        self.conn = conn
        schema, table = store.datastore.schema, store.recorder.events_table_name
        self.query = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {0}.{1} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(Identifier(schema), Identifier(table))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rebuild-read") if prefetch else None
        self._ahead: tuple[int, int, Future] | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # the connection goes back to the pool idle

    def _fetch(self, after: int, limit: int) -> list[tuple]:
        with self.conn.cursor(binary=True, row_factory=tuple_row) as curs:
            return curs.execute(self.query, (after, limit)).fetchall()

    def read(self, after: int, limit: int = READ_BATCH) -> list[Item]:
        ahead, self._ahead = self._ahead, None
        rows = ahead[2].result() if ahead is not None else None
        if ahead is None or ahead[:2] != (after, limit):
            rows = self._fetch(after, limit)
        # Positions commit in order (the log's table lock), so a full page fetched early stays
        # true; a short one is only used once: the next read asks the table again.
        if self._pool is not None and len(rows) == limit:
            following = rows[-1][0]
            self._ahead = (following, limit, self._pool.submit(self._fetch, following, limit))
        return self._open(rows) if rows else []

    def _open(self, rows: list[tuple]) -> list[Item]:
        codec = self.store.codec
        view, cls_of, decoder = codec.view, codec.registry.cls, codec._decoder
        views = [view(row[4]) for row in rows]
        owners = [owner_of(codec, row[4]) if v.p is not None else None for row, v in zip(rows, views, strict=True)]
        ids = {o: UUID(o.decode()) for o in set(owners) if o is not None}
        by_id = self.store.keyring.readers(self.store._key_cursor, set(ids.values()))
        keys = {o: by_id[i] for o, i in ids.items()}
        out = []
        for row, v, o in zip(rows, views, owners, strict=True):
            position, stream_id, version, topic, state = row
            aead = keys[o] if o is not None else None
            text, redacted = event_json(codec, str(stream_id).encode(), stream_id, version, topic, v, aead)
            if text is None:  # stored at an older version: the store's own path, with its upcasters
                stored = StoredEvent(originator_id=stream_id, originator_version=version, topic=topic, state=state)
                out.append((position, *self.store.open_stored([stored])[0]))
            else:
                out.append((position, decoder(cls_of(topic))(text), redacted))
        return out


APPLY_BATCH = 25_000
INDEX_CONNECTIONS = 3  # indexes built at once at the end of a rebuild


class _Applier:
    """Applies the projections without a fold, as the build reads the log, in batches on a thread and
    a connection of its own; at most one batch is being applied while the next one gathers. It gathers
    only the events they look at (`events`). What a batch raised (a `fail_on_event`, the database
    gone) is raised here at the next `add` or `finish`."""

    def __init__(self, rebuild: Rebuild, projections: list[Projection]):
        self.rebuild = rebuild
        self.projections = projections
        self.gathered: list[Item] = []
        self.running: Future | None = None
        wanted = [getattr(p, "events", None) for p in projections]
        self.wanted: frozenset[str] | None = None if None in wanted else frozenset().union(*wanted)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Applier:
        self.conn = self._stack.enter_context(self.rebuild.store.datastore.get_connection())
        self.thread = self._stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="rebuild-apply"))
        return self

    def __exit__(self, *exc_info) -> None:
        if self.running is not None:
            self.running.cancel()
            with contextlib.suppress(Exception):  # already failing: the first error is the one raised
                self.running.result()
        self._stack.close()

    def add(self, items: list[Item]) -> None:
        wanted = self.wanted
        self.gathered.extend(items if wanted is None else [i for i in items if i[1].NAME in wanted])
        if len(self.gathered) >= APPLY_BATCH:
            self._submit()

    def finish(self) -> None:
        if self.gathered:
            self._submit()
        self._wait()

    def _wait(self) -> None:
        running, self.running = self.running, None
        if running is not None:
            running.result()

    def _submit(self) -> None:
        self._wait()
        batch, self.gathered = self.gathered, []
        self.running = self.thread.submit(self._apply, batch)

    def _apply(self, items: list[Item]) -> None:
        with self.conn.transaction():
            self.rebuild._search_shadow(self.conn)
            self.rebuild._apply(self.conn, self.projections, items)


class Rebuild:
    def __init__(
        self,
        runner,
        progress: Callable[[int], None] | None = None,
        on_failure: OnFailure | None = None,
        batch_size: int = READ_BATCH,
        folds: dict[str, Callable[..., Any]] | None = None,
        workers: int | None = None,
    ):
        self.runner = runner
        self.store = runner.store
        self.projections: list[Projection] = list(runner.projections)
        self.progress = progress
        self.on_failure = on_failure or self._set_aside
        self.set_aside: list[tuple[str, int, Any, Exception]] = []  # quarantined at the swap
        self.batch_size = batch_size
        self.folds = FOLDS if folds is None else folds
        # Processes opening the log's pages while this one folds; None: one per CPU on a long log.
        self.workers = workers
        self.pages: ParallelPages | None = None
        self.seconds: dict[str, float] = {}  # wall-clock time of each phase, logged at the end
        self.live_schema = "public"
        self.tables = [t for p in self.projections for t in p.tables]
        # Constraints and indexes of folded tables, made once the rows are in: (table, SQL, a primary key?).
        self.deferred: list[tuple[str, str, bool]] = []

    # -- the whole run --------------------------------------------------------------------------

    def run(self) -> int:
        # The folds hold hundreds of thousands of long-lived objects and make no reference cycles;
        # every full cyclic collection walks all of them, so with the default thresholds collecting
        # cost more than the rebuild's own work, and more the bigger the log (measured: 35 us of CPU
        # per event at 300,000 events with it, 15 without). Reference counting frees the rest.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._locked_run()
        finally:
            if collecting:
                gc.enable()

    def _locked_run(self) -> int:
        datastore = self.store.datastore
        with datastore.get_connection() as lock_conn:
            got = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (REBUILD_LOCK_KEY,), prepare=False).fetchone()
            if not list(got.values())[0]:
                raise RebuildError("another rebuild of this database is running; try again when it has finished")
            try:
                with datastore.get_connection() as conn, datastore.get_connection() as read_conn:
                    reader = LogReader(self.store, read_conn)
                    try:
                        return self._run(conn, reader)
                    finally:
                        reader.close()
                        conn.rollback()
                        with conn.transaction():
                            conn.execute(SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(Identifier(SHADOW)))
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", (REBUILD_LOCK_KEY,))

    def _run(self, conn, reader: LogReader) -> int:
        self._create_shadow(conn)
        folded = [p for p in self.projections if p.name in self.folds]
        applied = [p for p in self.projections if p.name not in self.folds]
        position, total = self._build(conn, reader, folded, applied)
        # Catch up with what was appended meanwhile, in the new tables, as the live projector does.
        with self._timed("catch_up"):
            while items := reader.read(position, self.batch_size):
                with conn.transaction():
                    self._search_shadow(conn)
                    self._apply(conn, self.projections, items)
                position = items[-1][0]
                total += len(items)
                self._progressed(len(items))
        with self._timed("swap"):
            return total + self._swap(conn, reader, position)

    # -- 1. build -------------------------------------------------------------------------------

    def _create_shadow(self, conn) -> None:
        """The projections' tables, empty, in the shadow schema, made by their own DDL."""
        with conn.transaction():
            row = conn.execute(
                "SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(%s)",
                (self.tables[0],),
            ).fetchone()
            if row is None:
                row = conn.execute("SELECT current_schema() AS schema").fetchone()
            self.live_schema = row["schema"]
            conn.execute(SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(Identifier(SHADOW)))
            conn.execute(SQL("CREATE SCHEMA {0}").format(Identifier(SHADOW)))
            self._search_shadow(conn)
            for p in self.projections:
                conn.execute(p.schema)
            # Tables another projection owns (the alias table) stay the live ones for reading.
            made = [
                r["tablename"] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (SHADOW,))
            ]
            for table in made:
                if table not in self.tables:
                    conn.execute(SQL("DROP TABLE {0}.{1}").format(Identifier(SHADOW), Identifier(table)))
            for p in self.projections:
                if p.name in self.folds:
                    for table in p.tables:
                        self._defer_indexes(conn, table)

    def _defer_indexes(self, conn, table: str) -> None:
        """Drops the table's constraints and indexes, remembering how to make them again at the end:
        building an index once over all rows is much cheaper than keeping it up to date row by row."""
        qualified = f"{SHADOW}.{table}"
        for r in conn.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid) AS def FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'x')",
            (qualified,),
        ).fetchall():
            conn.execute(
                SQL("ALTER TABLE {0}.{1} DROP CONSTRAINT {2}").format(
                    Identifier(SHADOW), Identifier(table), Identifier(r["conname"])
                )
            )
            self.deferred.append(
                (
                    table,
                    SQL("ALTER TABLE {0}.{1} ADD CONSTRAINT {2} ")
                    .format(Identifier(SHADOW), Identifier(table), Identifier(r["conname"]))
                    .as_string(conn)
                    + r["def"],
                    r["contype"] == "p",
                )
            )
        for r in conn.execute(
            "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def "
            "FROM pg_index WHERE indrelid = %s::regclass",
            (qualified,),
        ).fetchall():
            conn.execute(f"DROP INDEX {r['name']}")
            self.deferred.append((table, r["def"], False))

    def _build(self, conn, reader: LogReader, folded: list[Projection], applied: list[Projection]) -> tuple[int, int]:
        with contextlib.ExitStack() as stack:
            folds = []
            for p in folded:
                fold_class = self.folds[p.name]
                if fold_class.streamed:
                    # Its rows go out while the log is read, on a connection of their own.
                    stream_conn = stack.enter_context(self.store.datastore.get_connection())
                    stack.enter_context(stream_conn.transaction())
                    copy = stack.enter_context(self._copy(stream_conn.cursor(), *fold_class.streamed, queued=True))
                    folds.append(fold_class(copy.write_row))
                else:
                    folds.append(fold_class())
            # The projections without a fold are applied on a thread and a connection of their own, in
            # batches of APPLY_BATCH events: their statements' round trips overlap the folding here.
            applier = stack.enter_context(_Applier(self, applied)) if applied else None
            stack.enter_context(self._timed("read_and_fold"))
            position = total = 0
            for items in self._pages(reader, stack):
                for fold in folds:
                    self._fold(fold, items)
                if applier is not None:
                    applier.add(items)
                position = items[-1][0]
                total += len(items)
                self._progressed(len(items))
            if applier is not None:
                applier.finish()
        # The streamed rows are committed; now the rest of the rows, corrections and indexes.
        with conn.transaction():
            self._search_shadow(conn)
            with self._timed("rows"):
                order = self._collation_order(conn, set().union(*(f.array_values() for f in folds)))
                for fold in folds:
                    for table, (columns, rows) in fold.rows(order).items():
                        with self._copy(conn.cursor(), table, columns) as copy:
                            for row in rows:
                                copy.write_row(row)
            # Before the indexes: a pass over each table, with no index to keep up to date.
            with self._timed("corrections"):
                for fold in folds:
                    for statement, params, staged in fold.corrections():
                        self._correct(conn, statement, params, staged)
        # Committed: the shadow tables stay invisible to readers until the swap, and a failure from
        # here on still drops them. Now the indexes and statistics, on connections of their own.
        with self._timed("indexes"):
            self._indexes({f.streamed[0]: f.duplicates for f in folds if f.streamed})
        return position, total

    def _indexes(self, duplicates: dict[str, str]) -> None:
        """The deferred constraints and indexes, then ANALYZE, several statements at a time (one
        connection each; PostgreSQL builds one index on one core). Three rounds, because a table's
        constraint locks it whole and its ANALYZE waits for its index builds: constraints (a table at a
        time each), every plain index, every table's statistics. Each round biggest table first."""
        constraints: dict[str, list[tuple[str, bool]]] = {}
        for table, statement, primary_key in self.deferred:
            if statement.startswith("ALTER TABLE"):
                constraints.setdefault(table, []).append((statement, primary_key))
        indexes = [(t, s) for t, s, _ in self.deferred if not s.startswith("ALTER TABLE")]
        with self.store.datastore.get_connection() as conn:
            sizes = self._sizes(conn)

        def keyed(table: str) -> int:
            return -sizes.get(table, 0)

        def constrain(table: str) -> None:
            for statement, primary_key in constraints[table]:
                self._in_shadow(statement, duplicates.get(table) if primary_key else None)

        rounds = [
            [functools.partial(constrain, t) for t in sorted(constraints, key=keyed)],
            [functools.partial(self._in_shadow, s) for _, s in sorted(indexes, key=lambda i: keyed(i[0]))],
            [
                functools.partial(self._in_shadow, SQL("ANALYZE {0}.{1}").format(Identifier(SHADOW), Identifier(t)))
                for t in sorted(self.tables, key=keyed)
            ],
        ]
        with ThreadPoolExecutor(INDEX_CONNECTIONS, thread_name_prefix="rebuild-index") as pool:
            for tasks in rounds:
                for done in [pool.submit(task) for task in tasks]:
                    done.result()

    def _sizes(self, conn) -> dict[str, int]:
        rows = conn.execute(
            "SELECT c.relname AS name, pg_relation_size(c.oid) AS size FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (SHADOW,),
        ).fetchall()
        return {r["name"]: r["size"] for r in rows}

    def _in_shadow(self, statement, duplicates: str | None = None) -> None:
        """One statement in a transaction of its own, with the shadow schema first on the path (the
        indexes' expressions name functions of the live schema unqualified)."""
        with self.store.datastore.get_connection() as conn:
            with conn.transaction():
                self._search_shadow(conn)
                if duplicates is None:
                    conn.execute(statement)
                    return
                # Streamed rows were not checked against each other: live processing keeps the
                # first row of a key seen twice (ON CONFLICT DO NOTHING), and so do we.
                try:
                    with conn.transaction():
                        conn.execute(statement)
                    return
                except pg_errors.UniqueViolation:
                    conn.execute(duplicates)
                conn.execute(statement)

    def _pages(self, reader: LogReader, stack: contextlib.ExitStack) -> Iterator[list[Item]]:
        """The log from the start, page by page: opened by worker processes when there are any, else
        here (a page that is not full ends the first; the catch-up reads on from there)."""
        workers = self.workers
        if workers is None:
            workers = (os.cpu_count() or 1) if self.store.max_position() >= PARALLEL_FROM else 0
        if not workers:
            position = 0
            while items := reader.read(position, self.batch_size):
                yield items
                position = items[-1][0]
            return
        self.pages = ParallelPages(self.store, reader.conn, workers, self.batch_size)
        stack.callback(self.pages.close)
        try:
            yield from self.pages
        except WorkerDied as exc:
            raise RebuildError(f"{exc}; the read models were left as they were") from exc

    def _fold(self, fold, items: Sequence[Item]) -> None:
        """The seam where a rebuild applies one event to a fold: a failure goes to `on_failure`."""
        apply = fold.apply
        for item in items:
            try:
                apply(*item)
            except Exception as exc:  # noqa: BLE001 — handed to on_failure, which raises or records it
                self.on_failure(fold.name, item, exc)

    def _apply(self, conn, projections: Sequence[Projection], items: Sequence[Item]) -> None:
        """Applies a batch with the projections' own `apply` (in the caller's transaction); if the
        batch fails, event by event, so that `on_failure` learns which event it was. The database
        being unreachable is nobody's event: that stops the rebuild."""
        curs = conn.cursor()
        for p, share in zip(projections, routed(projections, items), strict=True):
            if not share:
                continue
            try:
                with conn.transaction():  # a savepoint
                    p.apply(curs, share)
                continue
            except quarantine.INFRASTRUCTURE_ERRORS:
                raise
            except Exception:  # noqa: BLE001 — narrowed down to the event just below
                forget_staging(conn)  # staging tables made in the savepoint went with it
            for item in share:
                try:
                    with conn.transaction():
                        p.apply(curs, [item])
                except quarantine.INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 — handed to on_failure, which raises or records it
                    forget_staging(conn)
                    self.on_failure(p.name, item, exc)

    def _set_aside(self, projection: str, item: Item, error: Exception) -> None:
        """The default `on_failure`: the event is left out, and quarantined at the swap."""
        position, event, _redacted = item
        self.set_aside.append((projection, position, event, error))
        log.warning(
            "rebuild_event_set_aside",
            projection=projection,
            position=position,
            event_type=type(event).NAME,
            error=type(error).__name__,
        )

    @staticmethod
    def _correct(conn, statement: str, params: tuple, staged: tuple[Columns, list[tuple]] | None) -> None:
        if staged is None:
            conn.execute(statement, params)
            return
        columns, rows = staged
        definition = ", ".join(f"{name} {pg_type}" for name, pg_type in columns)
        conn.execute(f"CREATE TEMP TABLE stage ({definition}) ON COMMIT DROP")
        with conn.cursor().copy("COPY stage FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([pg_type for _, pg_type in columns])
            for row in rows:
                copy.write_row(row)
        conn.execute("ANALYZE stage")
        conn.execute(statement, params)
        conn.execute("DROP TABLE stage")

    # -- 3. swap --------------------------------------------------------------------------------

    def _swap(self, conn, reader: LogReader, position: int) -> int:
        tail = 0
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (BATCH_LOCK_KEY,))
            self._search_shadow(conn)
            while items := reader.read(position, self.batch_size):
                self._apply(conn, self.projections, items)
                position = items[-1][0]
                tail += len(items)
                self._progressed(len(items))
            conn.execute(SQL("SET LOCAL search_path = {0}").format(Identifier(self.live_schema)))
            for table in self.tables:
                conn.execute(
                    SQL("DROP TABLE IF EXISTS {0}.{1}").format(Identifier(self.live_schema), Identifier(table))
                )
                conn.execute(
                    SQL("ALTER TABLE {0}.{1} SET SCHEMA {2}").format(
                        Identifier(SHADOW), Identifier(table), Identifier(self.live_schema)
                    )
                )
            recorder = self.runner.recorder
            curs = conn.cursor()
            for p in self.projections:
                curs.execute(
                    f"DELETE FROM {recorder.tracking_table_name} WHERE application_name = %s",
                    (self.runner.tracking_name(p),),
                )
                if position:
                    recorder._insert_tracking(curs, Tracking(self.runner.tracking_name(p), position))
            # What the old views had set aside is replaced by what this rebuild set aside.
            quarantine.clear(curs, [self.runner.tracking_name(p) for p in self.projections])
            for name, at, event, error in self.set_aside:
                quarantine.record(curs, f"projection:{name}", at, event, error)
        log.info(
            "projections_rebuilt",
            projections=[p.name for p in self.projections],
            position=position,
            workers=self.pages.workers if self.pages is not None else 0,
            seconds=self.seconds,
        )
        return tail

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _collation_order(conn, values: set[str]):
        """A function sorting a set of these values as `ORDER BY` does in this database (live
        processing sorts tags and channels in SQL; the collation decides, not Python's `sorted`)."""
        ranked = [r["x"] for r in conn.execute("SELECT x FROM unnest(%s::text[]) x ORDER BY x", (list(values),))]
        rank = {value: i for i, value in enumerate(ranked)}
        return lambda chosen: sorted(chosen, key=rank.__getitem__)

    def _search_shadow(self, conn) -> None:
        """Unqualified table names mean the new tables (for the rest, the live schema) until commit."""
        conn.execute(SQL("SET LOCAL search_path = {0}, {1}").format(Identifier(SHADOW), Identifier(self.live_schema)))

    @contextlib.contextmanager
    def _copy(self, curs, table: str, columns: Columns, queued: bool = False) -> Iterator[Any]:
        """A binary COPY into a new table; `queued`: the data goes to the server from a thread of its
        own, so that decoding the log and sending rows overlap."""
        if any(pg_type == "jsonb" for _, pg_type in columns):
            curs.adapters.register_dumper(RawJson, _RawJsonbDumper)
        statement = SQL("COPY {0}.{1} ({2}) FROM STDIN (FORMAT BINARY)").format(
            Identifier(SHADOW), Identifier(table), SQL(", ").join(Identifier(name) for name, _ in columns)
        )
        with curs.copy(statement, writer=QueuedLibpqWriter(curs) if queued else None) as copy:
            copy.set_types([pg_type for _, pg_type in columns])
            yield copy

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - t0, 3)

    def _progressed(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)
