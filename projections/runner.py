"""Runs projections over the event log: read a batch, apply, store view and position together.

Many projector processes may run; a PostgreSQL advisory lock makes exactly one of them active
(the others wait to take over), so views are written in log order by one writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL, Identifier

from projections.base import Projection
from projections.cases import CasesProjection
from projections.profile import ProfileProjection
from projections.timeline import TimelineProjection
from services.eventstore.store import EventStore
from services.logs import get_logger

log = get_logger(__name__)

_LOCK_KEY = 0x5B_7072_6F6A  # "sb proj": one active projector per database
_BATCH_LOCK_KEY = 0x5B_7072_6F62  # held while a batch (or a whole rebuild) is written


def all_projections() -> list[Projection]:
    return [TimelineProjection(), ProfileProjection(), CasesProjection()]


class ProjectionRunner:
    def __init__(self, store: EventStore, projections: Sequence[Projection] | None = None, batch_size: int = 5000,
                 on_live: Callable[[list[dict]], None] | None = None):
        self.store = store
        self.projections = list(projections or all_projections())
        self.batch_size = batch_size
        self.on_live = on_live
        self.recorder = store.recorder

    def tracking_name(self, projection: Projection) -> str:
        return f"projection:{projection.name}"

    def create_schema(self) -> None:
        with self.store.datastore.transaction(commit=True) as curs:
            for p in self.projections:
                curs.execute(p.schema)

    def positions(self, curs=None) -> dict[str, int]:
        """Where each projection stands (0: nothing applied yet)."""
        query = (f"SELECT application_name, max(notification_id) AS position FROM {self.recorder.tracking_table_name} "
                 "WHERE application_name = ANY(%s) GROUP BY application_name")
        names = [self.tracking_name(p) for p in self.projections]
        if curs is None:
            with self.store.datastore.transaction(commit=False) as own:
                own.execute(query, (names,))
                rows = own.fetchall()
        else:
            curs.execute(query, (names,))
            rows = curs.fetchall()
        found = {row["application_name"]: row["position"] for row in rows}
        return {p.name: found.get(self.tracking_name(p)) or 0 for p in self.projections}

    def run_once(self) -> int:
        """Applies the next batch to every projection that is behind; returns events applied.

        Positions are read under a transaction-level lock shared with `rebuild`, in the transaction
        that writes the views, so a batch is never applied on top of a rebuild that moved them.
        """
        live: list[dict] = []
        with self.store.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (_BATCH_LOCK_KEY,))
            positions = self.positions(curs)
            start = min(positions.values())
            items = self.store.read(start, self.batch_size)
            if not items:
                return 0
            last = items[-1][0]
            for p in self.projections:
                position = positions[p.name]
                behind = items if position <= start else [i for i in items if i[0] > position]
                if behind:
                    live.extend(p.apply(curs, behind))
                    self.recorder._insert_tracking(curs, Tracking(self.tracking_name(p), last))
        if live and self.on_live is not None:
            self.on_live(live)
        return len(items)

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
                curs.execute(f"DELETE FROM {self.recorder.tracking_table_name} WHERE application_name = %s",
                             (self.tracking_name(p),))

    def rebuild(self, progress: Callable[[int], None] | None = None, on_failure=None) -> int:
        """Rebuilds this runner's read models from the whole log; returns the events applied.

        Built beside the live tables and swapped in at the end (projections/rebuild.py): the live
        projector keeps serving and updating the old views meanwhile, then carries on from where the
        rebuild ended. `on_failure(projection, item, error)` decides what an event that cannot be
        applied does (by default: the rebuild stops with a RebuildError naming its position).
        """
        from projections.rebuild import Rebuild, fail_on_event  # noqa: PLC0415 — it imports this module

        return Rebuild(self, progress, on_failure or fail_on_event, batch_size=self.batch_size).run()

    def run_forever(self, stop: threading.Event, idle_wait: float = 0.05) -> None:
        """Active-standby loop: takes the advisory lock, then projects until `stop` is set."""
        from services.core.processor import relax_garbage_collector  # noqa: PLC0415

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
                        while not stop.is_set():
                            if not self.run_once():
                                for _ in lock_conn.notifies(timeout=idle_wait, stop_after=1):
                                    pass
                    finally:
                        lock_conn.execute("UNLISTEN *")
                        lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
            except Exception:  # noqa: BLE001 — a projector must survive a database restart
                log.exception("projector_error")
                stop.wait(1.0)

