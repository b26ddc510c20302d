"""A process manager's loop: follow the event log from a tracked position and act on it, exactly once.

Routing, the SLA timer and other roles that *decide* something when events happen are built on
this. One follower of a name is active per database at a time (a PostgreSQL advisory lock taken
for the name); others of the same name, in other processes, stand by and take over when it stops.
Each batch is handled inside one event-store transaction that also stores the follower's position:
what the handler appends (`tx.append`) or writes (`tx.execute`) commits with the position past the
events that caused it, or not at all. A crash replays the batch from the stored position, and an
aggregate's own rules (a case is assigned, a breach recorded, at most once) make a decision taken
twice by a stale follower a version conflict, which is retried from a fresh read.

`tick(tx, now)` runs in its own transaction when the follower is idle and at least `tick_every`
seconds passed: work that is due by the clock rather than by an event (a breach, a wake-up).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL, Identifier

from services.platform import quarantine
from services.platform.eventstore.store import ConcurrencyError, EventStore, Transaction
from services.platform.logs import get_logger

log = get_logger(__name__)

Item = tuple  # (position, event, redacted), as EventStore.read gives them
Handler = Callable[[Transaction, Sequence[Item]], None]
Ticker = Callable[[Transaction, datetime], None]


def lock_key(name: str) -> int:
    """A stable 63-bit advisory-lock key for a follower's name."""
    return int.from_bytes(hashlib.sha256(b"sb-follower:" + name.encode()).digest()[:8], "big") >> 1


class Follower:
    def __init__(
        self,
        store: EventStore,
        name: str,
        handle: Handler,
        *,
        tick: Ticker | None = None,
        tick_every: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        batch_size: int = 500,
        pause_after: Callable[[float], float] | None = None,
    ):
        self.store = store
        # After a batch that took `elapsed` seconds, how long to wait before the next (a role of low
        # priority yielding to ingest, services/core/classifier.py); None: never.
        self.pause_after = pause_after
        self.name = name
        self.handle = handle
        self.tick = tick
        self.tick_every = tick_every
        self.clock = clock
        self.batch_size = batch_size
        self.tracking_name = f"follower:{name}"

    def position(self) -> int:
        return self.store.recorder.max_tracking_id(self.tracking_name) or 0

    def run_once(self) -> int:
        """Handles the next batch after the stored position; returns the events read (0: caught up).

        A version conflict (another writer appended to an aggregate the handler changed) rolls the
        batch back; it is handled again from a fresh read on the next call.
        """
        start = self.position()
        items = self.store.read(start, self.batch_size)
        if not items:
            return 0
        try:
            self._handle(items)
        except ConcurrencyError:
            log.info("follower_conflict", follower=self.name, position=start)
        except quarantine.INFRASTRUCTURE_ERRORS:
            raise
        except Exception:  # noqa: BLE001 — one event must not stop the role: find it, set it aside
            for item in items:
                try:
                    self._handle([item])
                except (ConcurrencyError, *quarantine.INFRASTRUCTURE_ERRORS):
                    raise
                except Exception as exc:  # noqa: BLE001
                    with self.store.transaction() as tx:
                        quarantine.record(tx.curs, self.tracking_name, item[0], item[1], exc)
                        self.store.recorder._insert_tracking(tx.curs, Tracking(self.tracking_name, item[0]))
                    log.warning("follower_quarantined", follower=self.name, position=item[0], error=type(exc).__name__)
        return len(items)

    def _handle(self, items: Sequence[Item]) -> None:
        with self.store.transaction() as tx:
            self.handle(tx, items)
            self.store.recorder._insert_tracking(tx.curs, Tracking(self.tracking_name, items[-1][0]))

    def catch_up(self) -> int:
        total = 0
        while n := self.run_once():
            total += n
        return total

    def run_tick(self, now: datetime) -> None:
        if self.tick is None:
            return
        try:
            with self.store.transaction() as tx:
                self.tick(tx, now)
        except ConcurrencyError:
            log.info("follower_tick_conflict", follower=self.name)

    def run_forever(self, stop: threading.Event, idle_wait: float = 0.05) -> None:
        """Active-standby: takes the name's advisory lock, then follows the log until `stop` is set."""
        key = lock_key(self.name)
        while not stop.is_set():
            try:
                with self.store.datastore.get_connection() as lock_conn:
                    got = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                    if not list(got.values())[0]:
                        stop.wait(1.0)
                        continue
                    try:
                        log.info("follower_active", follower=self.name)
                        lock_conn.execute(SQL("LISTEN {0}").format(Identifier(self.store.recorder.channel_name)))
                        last_tick = 0.0
                        while not stop.is_set():
                            started = time.monotonic()
                            busy = self.run_once()
                            if busy and self.pause_after is not None:
                                pause = self.pause_after(time.monotonic() - started)
                                if pause > 0:
                                    stop.wait(pause)
                            if self.tick is not None and time.monotonic() - last_tick >= self.tick_every:
                                last_tick = time.monotonic()
                                self.run_tick(self.now())
                            if not busy:
                                wait = idle_wait if self.tick is None else min(idle_wait * 4, self.tick_every)
                                for _ in lock_conn.notifies(timeout=wait, stop_after=1):
                                    pass
                    finally:
                        lock_conn.execute("UNLISTEN *")
                        lock_conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except quarantine.INFRASTRUCTURE_ERRORS:
                log.warning("follower_database_unavailable", follower=self.name)
                stop.wait(1.0)
            except Exception:  # noqa: BLE001 — a role must survive anything one batch does
                log.exception("follower_error", follower=self.name)
                stop.wait(1.0)

    def now(self) -> datetime:
        if self.clock is not None:
            return self.clock()
        return datetime.now(UTC)
