"""The read-your-writes clock: requests wait, sharing one watcher, until every read model's tracking
row reached their position, and give up after their deadline."""

from __future__ import annotations

import asyncio

import pytest
from eventsourcing.persistence import Tracking
from psycopg_pool import AsyncConnectionPool

from projections.runner import ProjectionRunner
from services.api.freshness import ReadModelClock

pytestmark = pytest.mark.integration


class CountingClock(ReadModelClock):
    """Counts its queries, so the test knows the watcher looked at least once without sleeping."""

    queries = 0

    async def position(self) -> int:
        self.queries += 1
        return await super().position()


async def _until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def _track(store, runner: ProjectionRunner, names: list[str], position: int) -> None:
    with store.datastore.transaction(commit=True) as curs:
        for name in names:
            runner.recorder._insert_tracking(curs, Tracking(name, position))


async def test_waiters_share_one_watcher_and_answer_when_every_read_model_reached_them(settings, store):
    from services.bootstrap import Switchboard  # noqa: PLC0415 -- lazy, as in conftest

    runner = ProjectionRunner(store)
    names = [runner.tracking_name(p) for p in runner.projections]
    conninfo = Switchboard(settings).database.conninfo
    pool = AsyncConnectionPool(conninfo, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    try:
        clock = CountingClock(pool, runner.recorder.tracking_table_name, names)
        _track(store, runner, names, 5)
        assert await clock.reached(5, timeout=10)  # already there

        waiters = [asyncio.create_task(clock.reached(7, timeout=30)) for _ in range(20)]
        await _until(lambda: clock.queries >= 3)
        assert not any(w.done() for w in waiters)

        _track(store, runner, names[:-1], 7)  # one read model still behind: everybody waits
        seen = clock.queries
        await _until(lambda: clock.queries >= seen + 2)
        assert not any(w.done() for w in waiters)

        _track(store, runner, names[-1:], 9)
        assert await asyncio.gather(*waiters) == [True] * 20
        # One watcher for all twenty: it stops when nobody waits.
        idle = clock.queries
        assert clock._task is not None
        await clock._task
        assert clock.queries == idle

        assert await clock.reached(10**9, timeout=0.2) is False
        assert clock._waiting == [] or all(f.done() for _, _, f in clock._waiting)
    finally:
        await pool.close()
