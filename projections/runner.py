"""Runs projections over the event log: read a batch, apply, store view and position together.

Many projector processes may run; a PostgreSQL advisory lock makes exactly one of them active
(the others wait to take over), so each view is written in log order by one writer. The active one
runs two lanes: the timeline, and the others behind it (`run_forever`).

One event a projection cannot apply does not stop it: the batch is applied again in halves, each in
a savepoint, down to that event, which is quarantined (`services.platform.quarantine`) in the transaction
that moves the position past it; everything else is applied. See `apply_guarded`.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import operator
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL, Identifier

from projections.agent_tools import AgentToolsProjection
from projections.agents import AgentsProjection
from projections.automations import AutomationsProjection
from projections.base import BATCH_LOCK_KEY, Item, Projection, forget_staging, routed
from projections.campaigns import CampaignsProjection
from projections.cases import CasesProjection
from projections.customer_activity import CustomerActivityProjection
from projections.customer_data import CustomerDataProjection
from projections.merge_suggestions import MergeSuggestionsProjection
from projections.metrics import MetricsProjection
from projections.profile import ProfileProjection
from projections.queues import QueuesProjection
from projections.rebuild import Rebuild
from projections.segments import SegmentsProjection
from projections.sla_policies import SlaPoliciesProjection
from projections.timeline import TimelineProjection
from services.platform import quarantine
from services.platform.eventstore.store import EventStore
from services.platform.logs import get_logger
from services.platform.tuning import relax_garbage_collector

log = get_logger(__name__)

_LOCK_KEY = 0x5B_7072_6F6A  # "sb proj": one active projector per database
_BATCH_LOCK_KEY = BATCH_LOCK_KEY  # held while a batch is written, or a rebuild's tables swapped in
# Written, committed and announced before the others: what agents watch appear live (issue 13: the
# publish → timeline latency was the whole batch's, all fourteen read models', not the timeline's).
ANNOUNCE_FIRST = ("timeline",)
# How long the lane behind, caught up with the leading lane, waits for its next run before it looks at
# its read models' positions again.
_QUIET = 1.0


def all_projections() -> list[Projection]:
    return [
        TimelineProjection(),
        ProfileProjection(),
        CasesProjection(),
        QueuesProjection(),
        MetricsProjection(),
        AgentToolsProjection(),
        MergeSuggestionsProjection(),
        AgentsProjection(),
        SlaPoliciesProjection(),
        CustomerDataProjection(),
        AutomationsProjection(),
        SegmentsProjection(),
        CustomerActivityProjection(),
        CampaignsProjection(),
    ]


class ProjectionRunner:
    # How long the timeline lane waits for the lane behind to apply what it was handed (`_Handoff`).
    handoff_wait = 1.0

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection] | None = None,
        batch_size: int = 5000,
        on_live: Callable[[list[dict]], None] | None = None,
    ):
        self.store = store
        self.projections = list(projections or all_projections())
        self.batch_size = batch_size
        self.on_live = on_live
        self.recorder = store.recorder

    def tracking_name(self, projection: Projection) -> str:
        return f"projection:{projection.name}"

    def create_schema(self) -> None:
        """These projections' own tables, from their DDL. A database is brought up to date as a whole by
        services.platform.schema.bring_up_to_date (the composition root hands it every projection's DDL)."""
        with self.store.datastore.transaction(commit=True) as curs:
            for p in self.projections:
                curs.execute(p.schema)

    def positions(self, curs=None, projections: Sequence[Projection] | None = None) -> dict[str, int]:
        """Where each projection stands (0: nothing applied yet)."""
        projections = self.projections if projections is None else projections
        query = (
            f"SELECT application_name, max(notification_id) AS position FROM {self.recorder.tracking_table_name} "
            "WHERE application_name = ANY(%s) GROUP BY application_name"
        )
        names = [self.tracking_name(p) for p in projections]
        if curs is None:
            with self.store.datastore.transaction(commit=False) as own:
                own.execute(query, (names,))
                rows = own.fetchall()
        else:
            curs.execute(query, (names,))
            rows = curs.fetchall()
        found = {row["application_name"]: row["position"] for row in rows}
        return {p.name: found.get(self.tracking_name(p)) or 0 for p in projections}

    def run_once(self) -> int:
        """Applies the next batch to every projection that is behind; returns events read.

        Positions are read under a transaction-level lock shared with `rebuild`, in the transaction
        that writes the views, so a batch is never applied on top of a rebuild that moved them.

        The projections named in `ANNOUNCE_FIRST` (the timeline, which agents watch live) are
        written and committed first, in a transaction of their own, and announced on the live feed
        at once; then the others, from the same events. The order of application is the list's, as
        in one transaction; each projection's position commits with its rows, so a crash between the
        two leaves the others behind, and the next batch brings them up (read-your-writes waits for
        every read model's position, so it never answers in between).
        """
        read: tuple[int, list[Item]] = (-1, [])
        done = 0
        for phase in self._phases():
            read = self._run_phase(phase, read)
            done = max(done, len(read[1]))
        return done

    def _phases(self) -> list[list[Projection]]:
        """[the ones announced first, the others], or all in one when either is empty."""
        first = [p for p in self.projections if p.name in ANNOUNCE_FIRST]
        rest = [p for p in self.projections if p.name not in ANNOUNCE_FIRST]
        return [first, rest] if first and rest else [self.projections]

    def _run_phase(self, projections: list[Projection], read: tuple[int, list[Item]]) -> tuple[int, list[Item]]:
        """One transaction over these projections. Tried without a savepoint per projection (a round
        trip each way, for every projection, every batch: most of a small batch's cost); if an event
        fails, everything is rolled back and the batch is applied again guarded (`apply_guarded`),
        which quarantines just the failing events."""
        try:
            return self._apply_batch(projections, read, guarded=False)
        except quarantine.INFRASTRUCTURE_ERRORS:
            raise
        except Exception:  # noqa: BLE001 — some event fails: again, one savepoint per projection
            return self._apply_batch(projections, read, guarded=True)

    def _apply_batch(
        self, projections: list[Projection], read: tuple[int, list[Item]], guarded: bool
    ) -> tuple[int, list[Item]]:
        """(where the events read start, the events): what a later phase may take over."""
        live: list[dict] = []
        t0 = time.perf_counter()
        with self.store.datastore.transaction(commit=True) as curs:
            try:
                # Shared: the two lanes write at once; a rebuild's swap takes it alone.
                curs.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_BATCH_LOCK_KEY,))
                positions = self.positions(curs, projections)
                start = min(positions.values())
                # The events the phase before (or the leading lane) read, when they reach back to where
                # this one stands (they do, unless a crash between the phases, or a rebuild's swap, left
                # these projections elsewhere).
                items = _after(read, start)
                if items is None:
                    items = self.store.read(start, self.batch_size)
                if not items:
                    return start, items
                t_read = time.perf_counter()
                last = items[-1][0]
                moved = []
                for p, share in zip(projections, routed(projections, items), strict=True):
                    position = positions[p.name]
                    if position >= last:
                        continue
                    behind = share if position <= start else [i for i in share if i[0] > position]
                    if behind:
                        live.extend(self.apply_guarded(curs, p, behind) if guarded else p.apply(curs, behind))
                    moved.append(self.tracking_name(p))  # past this batch, even when none of it was for p
                self._track(curs, moved, last)
                t_applied = time.perf_counter()
            except Exception:
                forget_staging(curs.connection)  # rolled back: staging tables created in it are gone
                raise
        if live and self.on_live is not None:
            self.on_live(live)
        log.debug(
            "projector_batch",
            projections=len(projections),
            events=len(items),
            guarded=guarded,
            read_ms=round((t_read - t0) * 1000, 1),
            apply_ms=round((t_applied - t_read) * 1000, 1),
            commit_ms=round((time.perf_counter() - t_applied) * 1000, 1),
        )
        return start, items

    def _track(self, curs, names: list[str], last: int) -> None:
        """The new position of every projection that moved, in one statement (the library's one row
        per name, moved forward only: a position that would go back is an error, as in the library)."""
        if not names:
            return
        curs.execute(
            SQL(
                "INSERT INTO {0} AS t (application_name, notification_id) SELECT unnest(%s::text[]), %s "
                "ON CONFLICT (application_name) DO UPDATE SET notification_id = EXCLUDED.notification_id "
                "WHERE t.notification_id < EXCLUDED.notification_id RETURNING application_name"
            ).format(Identifier(self.recorder.tracking_table_name)),
            (names, last),
        )
        if len(curs.fetchall()) != len(names):
            raise IntegrityError(f"a projection's position would not move forward to {last}")

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        total = 0
        while n := self.run_once():
            total += n
            if progress:
                progress(n)
        return total

    def reset(self, names: Sequence[str]) -> None:
        """Empties the named read models and their positions (for a rebuild from the log)."""
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (_BATCH_LOCK_KEY,))
            self._reset(curs, names)

    def _reset(self, curs, names: Sequence[str]) -> None:
        for p in self.projections:
            if p.name in names:
                curs.execute("TRUNCATE " + ", ".join(p.tables))
                curs.execute(
                    f"DELETE FROM {self.recorder.tracking_table_name} WHERE application_name = %s",
                    (self.tracking_name(p),),
                )
                quarantine.clear(curs, [self.tracking_name(p)])

    def rebuild(
        self, progress: Callable[[int], None] | None = None, on_failure=None, workers: int | None = None
    ) -> int:
        """Rebuilds this runner's read models from the whole log; returns the events applied.

        Built beside the live tables and swapped in at the end (projections/rebuild.py): the live
        projector keeps serving and updating the old views meanwhile, then carries on from where the
        rebuild ended. An event a projection cannot apply is quarantined, as live (the old views'
        quarantine entries are replaced with the new ones at the swap), unless `on_failure(projection,
        item, error)` decides otherwise (`projections.rebuild.fail_on_event` stops the rebuild).
        `workers`: processes opening the log's pages (0: none; None: one per CPU on a long log).
        """
        return Rebuild(self, progress, on_failure, batch_size=self.batch_size, workers=workers).run()

    # -- quarantine: an event a projection cannot apply is set aside, the others are applied ------

    def apply_guarded(self, curs, projection: Projection, items: Sequence[Item]) -> list[dict]:
        """`projection.apply(curs, items)` in a savepoint; if it fails, the halves again, down to the
        single events that fail, which are quarantined. Returns the live notifications of what applied.

        Applying a run of events in two parts gives the same view as in one (projections resume from
        any position), so the split changes nothing but the savepoints. Database outages are not the
        events' fault: they propagate, and the whole batch is tried again later.
        """
        try:
            with curs.connection.transaction():
                return projection.apply(curs, items)
        except quarantine.INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 — any failure of the handler: find the event(s)
            forget_staging(curs.connection)  # staging tables created in the savepoint are gone with it
            if len(items) == 1:
                position, event, _redacted = items[0]
                quarantine.record(curs, self.tracking_name(projection), position, event, exc)
                return []
        middle = len(items) // 2
        return self.apply_guarded(curs, projection, items[:middle]) + self.apply_guarded(
            curs, projection, items[middle:]
        )

    def quarantined(self, position: int | None = None) -> list[quarantine.Quarantined]:
        with self.store.datastore.transaction(commit=False) as curs:
            return quarantine.listing(curs, [self.tracking_name(p) for p in self.projections], position)

    def retry_quarantined(self, position: int | None = None) -> tuple[int, int]:
        """Applies this runner's quarantined events again, oldest first, each to its projection (late,
        and so out of order: fine for the rows an event adds or counts, which is what was missing);
        each that applies leaves quarantine. Returns (applied, still failing)."""
        by_name = {self.tracking_name(p): p for p in self.projections}
        applied = failing = 0
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (_BATCH_LOCK_KEY,))
            for entry in quarantine.listing(curs, list(by_name), position):
                found = self.store.read(entry.position - 1, 1)
                if not found or found[0][0] != entry.position:
                    continue
                projection = by_name[entry.consumer]
                try:
                    with curs.connection.transaction():
                        projection.apply(curs, found)
                except quarantine.INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 — still failing: stays, one attempt more
                    forget_staging(curs.connection)
                    quarantine.record(curs, entry.consumer, entry.position, found[0][1], exc)
                    failing += 1
                else:
                    quarantine.release(curs, entry.consumer, entry.position)
                    applied += 1
        return applied, failing

    def run_forever(self, stop: threading.Event, idle_wait: float = 0.05) -> None:
        """Active-standby loop: takes the advisory lock, then projects until `stop` is set.

        While active, the projections named in `ANNOUNCE_FIRST` (the timeline) and the others run as
        two lanes, each on a thread and a connection of its own: the timeline goes on to the next
        events while the others still write the last ones, so what agents watch live never waits for
        the other read models' batch (issue 13: publish → timeline p99). The others follow behind,
        taking the events the timeline lane read from memory (`_Handoff`).
        """
        relax_garbage_collector()
        while not stop.is_set():
            try:
                with self.store.datastore.get_connection() as lock_conn:
                    got = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
                    if not list(got.values())[0]:
                        stop.wait(1.0)
                        continue
                    try:
                        log.info("projector_active")
                        # Every append NOTIFYs the log's channel on commit: wake up then, from any process.
                        lock_conn.execute(SQL("LISTEN {0}").format(Identifier(self.recorder.channel_name)))
                        with self._lanes(stop, idle_wait) as step:
                            while not stop.is_set():
                                if not step():
                                    for _ in lock_conn.notifies(timeout=idle_wait, stop_after=1):
                                        pass
                    finally:
                        lock_conn.execute("UNLISTEN *")
                        lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
            except quarantine.INFRASTRUCTURE_ERRORS as exc:  # an outage: one line, and again shortly
                log.warning("projector_database_unavailable", error=type(exc).__name__)
                stop.wait(0.5)
            except Exception:  # noqa: BLE001 — a projector must survive a database restart
                log.exception("projector_error")
                stop.wait(1.0)

    @contextlib.contextmanager
    def _lanes(self, stop: threading.Event, idle_wait: float) -> Iterator[Callable[[], int]]:
        """Yields the step of the leading lane (events read, 0 when there were none); the other lane
        runs on a thread of its own until the block ends."""
        phases = self._phases()
        if len(phases) == 1:
            yield self.run_once
            return
        first, rest = phases
        handoff = _Handoff(self.batch_size, self.handoff_wait)
        done = threading.Event()

        def lead() -> int:
            start, items = self._run_phase(first, (-1, []))
            if items:
                handoff.put(start, items)
            return len(items)

        follower = threading.Thread(
            target=self._follow, args=(rest, handoff, stop, done, idle_wait), name="projector-others", daemon=True
        )
        follower.start()
        try:
            yield lead
        finally:
            done.set()
            handoff.close()
            follower.join()

    def _follow(
        self,
        projections: list[Projection],
        handoff: _Handoff,
        stop: threading.Event,
        done: threading.Event,
        idle_wait: float,
    ) -> None:
        """The lane behind: the other read models, from the events the leading lane handed over, woken
        by each of its batches. It reads the log itself only where what is held does not reach back to
        where it stands (at the start, after a crash between the lanes, or when the leading lane
        stopped waiting for it); where it has caught up with the leading lane, it waits for it."""
        position = -1  # where these read models stood after their last batch (-1: not known yet)
        handoff.woken.wait(idle_wait)  # the leading lane first: its first run is likely where these stand
        while not (stop.is_set() or done.is_set()):
            try:
                handoff.woken.clear()
                if position >= 0:
                    handoff.release(position)
                read = handoff.held()
                if position >= 0 and _after(read, position) is None and 0 <= handoff.frontier <= position:
                    if not handoff.woken.wait(_QUIET):
                        position = -1  # a quiet log: look at where these stand again (a reset moves them)
                    continue
                start, items = self._run_phase(projections, read)
                position = items[-1][0] if items else start
                if not items:
                    handoff.woken.wait(idle_wait)
            except quarantine.INFRASTRUCTURE_ERRORS as exc:
                log.warning("projector_database_unavailable", error=type(exc).__name__, lane="others")
                position = -1
                done.wait(0.5)
            except Exception:  # noqa: BLE001 — as the leading lane: never stop for one failure
                log.exception("projector_error", lane="others")
                position = -1
                done.wait(1.0)


def _after(read: tuple[int, list[Item]], start: int) -> list[Item] | None:
    """The events of `read` (where they start, consecutive events of the log) after position `start`,
    when they hold every one of them that they reach: they start at or before `start` and go past it.
    None: the caller reads the log."""
    first, items = read
    if not items or first < 0 or not first <= start < items[-1][0]:
        return None
    if start == first:
        return items
    return items[bisect.bisect_right(items, start, key=operator.itemgetter(0)) :]


class _Handoff:
    """The events the leading lane read, for the lane behind: consecutive runs `(start, items)`.

    The lane behind reads what is held (`held`) and drops what it has applied (`release`). While it
    holds `limit` events or more, the leading lane waits, up to `wait` seconds, before handing over
    more: otherwise, on a backlog, the lane behind (the slower one: more read models) falls further
    back with every batch and reads and decrypts every event a second time from the log (measured:
    a quarter of the projector's CPU on the ingest bench's backlog). So the timeline runs at most
    about two batches ahead; a lane behind that is stuck costs the timeline `wait` per batch, after
    which the oldest runs are dropped and that lane reads them from the log.
    """

    def __init__(self, limit: int, wait: float):
        self.limit = limit
        self.wait = wait
        self.woken = threading.Event()
        self.frontier = -1  # where the last run handed over ends (-1: none yet)
        self._runs: collections.deque[tuple[int, list[Item]]] = collections.deque()
        self._held = 0
        self._closed = False
        self._changed = threading.Condition()

    def put(self, start: int, items: list[Item]) -> None:
        with self._changed:
            if self._runs and self._runs[-1][1][-1][0] != start:
                self._runs.clear()  # not consecutive (a rebuild moved the views): start afresh
                self._held = 0
            if self._held >= self.limit:
                t0 = time.perf_counter()
                self._changed.wait_for(lambda: self._held < self.limit or self._closed, self.wait)
                log.debug("projector_lane_waited", ms=round((time.perf_counter() - t0) * 1000, 1), held=self._held)
            self._runs.append((start, items))
            self._held += len(items)
            while self._held > self.limit and len(self._runs) > 1:
                self._held -= len(self._runs.popleft()[1])
            self.frontier = items[-1][0]
        self.woken.set()

    def held(self) -> tuple[int, list[Item]]:
        """What is held, as one run: (where it starts, its events); (-1, []) if nothing."""
        with self._changed:
            if not self._runs:
                return -1, []
            return self._runs[0][0], [item for _, run in self._runs for item in run]

    def release(self, applied: int) -> None:
        """Drops the runs that end at or before position `applied`."""
        with self._changed:
            while self._runs and self._runs[0][1][-1][0] <= applied:
                self._held -= len(self._runs.popleft()[1])
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self.woken.set()
