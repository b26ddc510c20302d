"""`switchboard projections rebuild` throughput on a log of a million events.

The log (tests/benchmarks/_eventlog.py): 20,000 customers writing on every channel, with replies,
assignments, notes, tags, merges, and 5 heavy customers of about 10,000 events each spread over the
whole log (the rows the old rebuild updated thousands of times in one transaction). It is written
through the real EventStore path (sealed, hash-chained) in big batches, and kept between runs as a
pg_dump keyed by its parameters (`_eventlog.cached`, in SB_BENCH_CACHE or the temp dir): the query
benchmark uses the same log.

Timed, in the same run and on the same database:

- `switchboard projections rebuild` (all read models), as a separate process, the way an operator
  runs it: its own reported events/s (decrypting every event, building, indexing and swapping);
- the baseline: a plain COPY of the same rows, the stored events read with `COPY ... TO STDOUT`
  and written with `COPY ... FROM STDIN` into a fresh table (binary, through this client): what
  merely moving these rows through a client costs. "The same rows" are the events, because they
  are what the rebuild must read, one by one, whatever it writes; the summary's `copy_rows_per_s`
  is this figure. Beside it, for the other reading: the rows the rebuild wrote (every read model's
  table as it left them) moved the same way, and how many times longer the rebuild took;
- the live projector (`ProjectionRunner.run_once`, reading from the table as a projector process
  of its own does) on the first `LIVE_SAMPLE` events of the same log, from empty views.

`SB_BENCH_REBUILD_EVENTS` sets the log's size (default 1,000,000), for measuring at several sizes.
The last line is the summary: `rebuild: events=N events_per_s=X copy_rows_per_s=Y live_events_per_s=Z`.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg

from services.platform.settings import Settings
from tests.benchmarks import _eventlog
from tests.benchmarks._servers import servers

EVENTS = int(os.environ.get("SB_BENCH_REBUILD_EVENTS", "1000000"))
LIVE_SAMPLE = min(100_000, EVENTS // 4)
SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def _copy_baseline(database_url: str) -> tuple[int, float]:
    with psycopg.connect(database_url, autocommit=True) as source, psycopg.connect(database_url) as target:
        target.execute(
            "CREATE TABLE bench_copy (notification_id bigint, originator_id uuid, originator_version bigint, "
            "topic text, state bytea)"
        )
        target.commit()
        t0 = time.perf_counter()
        with (
            source.cursor().copy(
                "COPY (SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM sb_events ORDER BY notification_id) TO STDOUT (FORMAT BINARY)"
            ) as out,
            target.cursor().copy("COPY bench_copy FROM STDIN (FORMAT BINARY)") as into,
        ):
            for block in out:
                into.write(block)
        target.commit()
        elapsed = time.perf_counter() - t0
        n = target.execute("SELECT count(*) FROM bench_copy").fetchone()[0]
        target.execute("DROP TABLE bench_copy")
        target.commit()
    return n, elapsed


def _copy_written(database_url: str) -> tuple[int, int, float]:
    """The other reading of "the same rows": every row the rebuild wrote (all read models' tables, as
    it left them), COPied out and into fresh tables without indexes. Returns (rows, tables, seconds)."""
    from projections.runner import all_projections  # noqa: PLC0415

    tables = [t for p in all_projections() for t in p.tables]
    rows = 0
    with psycopg.connect(database_url, autocommit=True) as source, psycopg.connect(database_url) as target:
        for table in tables:
            # INCLUDING GENERATED: a stored generated column (the timeline's search words) is computed
            # on the way in, as the rebuild computes it; COPY TO leaves it out.
            target.execute(f"CREATE TABLE bench_{table} (LIKE {table} INCLUDING GENERATED)")
        target.commit()
        t0 = time.perf_counter()
        for table in tables:
            with (
                source.cursor().copy(f"COPY {table} TO STDOUT (FORMAT BINARY)") as out,
                target.cursor().copy(f"COPY bench_{table} FROM STDIN (FORMAT BINARY)") as into,
            ):
                for block in out:
                    into.write(block)
        target.commit()
        elapsed = time.perf_counter() - t0
        for table in tables:
            rows += target.execute(f"SELECT count(*) FROM bench_{table}").fetchone()[0]
            target.execute(f"DROP TABLE bench_{table}")
        target.commit()
    return rows, len(tables), elapsed


def _rebuild(settings: Settings) -> tuple[int, float, float]:
    """Events rebuilt, seconds the verb reports, and CPU seconds its process used (user + system):
    on a machine shared with other work, the CPU time per event shows linearity better than the
    wall clock does."""
    env = {
        **os.environ,
        "SWITCHBOARD_NATS_URL": settings.nats_url,
        "SWITCHBOARD_DATABASE_URL": settings.database_url,
        "SWITCHBOARD_MASTER_KEY": settings.master_key,
        "SWITCHBOARD_DATA_DIR": str(settings.data_dir),
        "SWITCHBOARD_LOG_FORMAT": "json",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [SWITCHBOARD, "projections", "rebuild"], env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"   (the rebuild process's peak memory: {after.ru_maxrss / 1024:,.0f} MB)", flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"rebuild failed: {result.stderr[-2000:]}")
    found = re.search(r"rebuilt [a-z_, ]+: (\d+) events in ([0-9.]+)s", result.stdout)
    assert found, result.stdout
    return int(found.group(1)), float(found.group(2)), cpu


def _live(store, sample: int) -> tuple[int, float]:
    from projections.runner import ProjectionRunner, all_projections  # noqa: PLC0415
    from services.platform.eventstore.store import RecentEvents  # noqa: PLC0415

    store.recent = RecentEvents(size=0)  # a projector process of its own reads the table
    runner = ProjectionRunner(store, batch_size=5000)
    runner.reset([p.name for p in all_projections()])
    n = 0
    t0 = time.perf_counter()
    while n < sample and (applied := runner.run_once()):
        n += applied
    return n, time.perf_counter() - t0


def main() -> str:
    from services.bootstrap import Switchboard  # noqa: PLC0415

    with servers() as (nats_url, database_url), TemporaryDirectory(prefix="sb-bench-rebuild-") as tmp:
        master_key, written = _eventlog.bench_log(database_url, nats_url, Path(tmp), EVENTS)
        settings = Settings(data_dir=Path(tmp), nats_url=nats_url, database_url=database_url, master_key=master_key)
        sb = Switchboard(settings)
        sb.create_schema()
        store = sb.open_store()
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE sb_events")
            copied, copy_s = _copy_baseline(database_url)
            load = os.getloadavg()[0]
            rebuilt, rebuild_s, rebuild_cpu = _rebuild(settings)
            out_rows, tables, out_s = _copy_written(database_url)
            live_n, live_s = _live(store, LIVE_SAMPLE)
        finally:
            store.datastore.close()
    assert rebuilt == copied == written, (rebuilt, copied, written)
    rebuild_rate, copy_rate, live_rate = rebuilt / rebuild_s, copied / copy_s, live_n / live_s
    print(
        f"   projections rebuild:          {rebuilt:,} events in {rebuild_s:.1f}s = {rebuild_rate:,.0f} events/s "
        f"({rebuild_cpu / rebuilt * 1e6:.1f} us of its own CPU per event; load average {load:.1f} on "
        f"{os.cpu_count()} CPUs)"
    )
    print(
        f"   plain COPY of the same rows:  {copied:,} rows in {copy_s:.1f}s = {copy_rate:,.0f} rows/s "
        f"(rebuild at {rebuild_rate / copy_rate:.2f}x)"
    )
    print(
        "     (the baseline: the events the rebuild reads, out of sb_events and into a fresh table by binary COPY "
        "through one client; the rebuild must read and open each of them, while the rows it writes differ "
        "in number by read model:)"
    )
    print(
        f"   plain COPY of the rows written: {out_rows:,} rows of {tables} read-model tables in {out_s:.1f}s "
        f"(the rebuild took {rebuild_s / out_s:.1f}x as long)"
    )
    print(
        f"   live projector, first {live_n:,}: {live_s:.1f}s = {live_rate:,.0f} events/s "
        f"(rebuild at {rebuild_rate / live_rate:.1f}x)"
    )
    return (
        f"rebuild: events={rebuilt} events_per_s={rebuild_rate:.0f} copy_rows_per_s={copy_rate:.0f} "
        f"live_events_per_s={live_rate:.0f}"
    )


if __name__ == "__main__":
    print(main())
