"""Publish → timeline latency of the live core and projector on top of the 1M-event log (issue 13).

`python -m tests.benchmarks._latency_at_scale [RATE] [SECONDS]` restores the benchmarks' generated
log (`_eventlog.bench_log`, cached as a pg_dump: 1,017,218 events of 20,000 customers), builds the
read models with `switchboard projections rebuild`, runs VACUUM ANALYZE (a database in its steady
state), starts `switchboard serve core` and `switchboard serve projector`, and publishes the ingest
bench's traffic at RATE per second (default 1,500) for SECONDS (default 10), each timed from its
publication to the projector's announcement of its timeline row, as the ingest bench does on its
small database. With `SWITCHBOARD_SCALE_EXPLAIN=MS` the server logs the plan of every statement
slower than MS milliseconds (auto_explain, with rows and buffers), summarised by statement at the end;
the whole server log is kept with the processes' logs. `SWITCHBOARD_SCALE_SQL` is run on the
database before the processes start (to try a setting: an index's storage parameter, say).

A tool for looking, not a benchmark: nothing is compared to a baseline. The processes' debug logs
(batch sizes and stage times) are kept; their directory is printed.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nats
import psycopg

from services.bootstrap import Switchboard
from services.platform.streams import Names
from tests.benchmarks import _eventlog
from tests.benchmarks._servers import servers
from tests.benchmarks.ingest import Traffic, _percentile, fresh_streams, latency
from tests.benchmarks.query import _rebuild, _settings, switchboard_env

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def slow_statements(log: str, top: int = 12) -> str:
    """auto_explain's entries of the server log, by statement: total ms, count, slowest."""
    spent: dict[str, list[float]] = collections.defaultdict(list)
    for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d )", log):
        found = re.search(r"duration: ([\d.]+) ms\s+plan:\s+Query Text: (.*)", entry)
        if found:
            spent[found.group(2)[:140]].append(float(found.group(1)))
    ranked = sorted(spent.items(), key=lambda kv: -sum(kv[1]))[:top]
    return "\n".join(f"   {sum(v):8.0f} ms {len(v):5d}× max {max(v):6.1f}  {q}" for q, v in ranked)


async def run(rate: float, seconds: float, explain_ms: str | None) -> None:
    with servers() as (nats_url, database_url):
        data_dir = Path(tempfile.mkdtemp(prefix="sb-scale-data-"))
        master_key, written = _eventlog.bench_log(database_url, nats_url, data_dir, 1_000_000)
        settings = _settings(database_url, nats_url, data_dir, master_key)
        Switchboard(settings).create_schema()
        print(f"   read models rebuilt in {_rebuild(settings):.1f}s", flush=True)
        pg_log = None
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            if experiment := os.environ.get("SWITCHBOARD_SCALE_SQL"):  # e.g. a storage parameter to try
                conn.execute(experiment)
            if explain_ms:
                database = conn.execute("SELECT current_database()").fetchone()[0]
                conn.execute(f"ALTER DATABASE {database} SET session_preload_libraries = 'auto_explain'")
                conn.execute(f"ALTER DATABASE {database} SET auto_explain.log_min_duration = '{int(explain_ms)}ms'")
                # What each slow statement did (rows, buffers), without timing every node of every statement.
                for setting in ("log_analyze = on", "log_buffers = on", "log_timing = off"):
                    conn.execute(f"ALTER DATABASE {database} SET auto_explain.{setting}")
                pg_log = Path(conn.execute("SHOW data_directory").fetchone()[0]) / "postgres.log"
                pg_log.write_text("")
        nc = await nats.connect(nats_url)
        js = nc.jetstream(timeout=60)
        names = Names()
        await fresh_streams(js, names)
        env = {**switchboard_env(settings), "SWITCHBOARD_LOG_LEVEL": "debug"}
        workdir = Path(tempfile.mkdtemp(prefix="sb-scale-"))
        procs = [
            subprocess.Popen(
                [SWITCHBOARD, "serve", role],
                env=env,
                stdout=open(workdir / f"{role}.log", "wb"),  # noqa: SIM115 — the child's, closed with it
                stderr=subprocess.STDOUT,
            )
            for role in ("core", "projector")
        ]
        try:
            traffic = Traffic()
            await latency(js, nc, names, traffic, 200, 5)  # warm: imports, caches, prepared statements
            lats = await latency(js, nc, names, traffic, rate, seconds)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            await nc.close()
        print(
            f"   {len(lats):,} interactions at {rate:,.0f}/s on a log of {written:,} events: publish → timeline "
            f"p50 {_percentile(lats, 0.5):.1f} ms, p99 {_percentile(lats, 0.99):.1f} ms, max {max(lats):.1f} ms; "
            f"logs in {workdir}",
            flush=True,
        )
        if pg_log is not None:
            plans = pg_log.read_text()
            (workdir / "postgres.log").write_text(plans)  # kept with the processes' logs
            print(f"   statements slower than {explain_ms} ms (auto_explain):\n{slow_statements(plans)}")


def main(argv: list[str]) -> None:
    rate = float(argv[0]) if argv else 1_500
    seconds = float(argv[1]) if len(argv) > 1 else 10
    asyncio.run(run(rate, seconds, os.environ.get("SWITCHBOARD_SCALE_EXPLAIN")))


if __name__ == "__main__":
    main(sys.argv[1:])
