"""The live projector alone, catching up on a stored backlog: events/s and CPU per event (issue 13).

`python -m tests.benchmarks._projector_catchup [INTERACTIONS] [RUNS]` records INTERACTIONS (default
30,000) of the ingest bench's traffic through the real core (`CoreProcessor`, in batches of 500)
into a fresh database, then RUNS times (default 3): empties every read model and its position, and
runs the active projector's loop (`ProjectionRunner.run_forever`: the timeline lane and the lane of
the others, on their threads and connections) until every read model has applied the whole log.
Prints the wall time, this process's CPU time (both lanes; not PostgreSQL's) and both per event.

What it isolates: the projector's own cost on a backlog, without the core and NATS competing for the
two cores. A tool for comparing two versions of the projector (run it in a worktree of each,
alternately), not a benchmark: nothing is compared to a baseline.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from services.bootstrap import Switchboard
from services.core.processor import CoreProcessor
from services.platform.logs import configure_logging
from services.platform.settings import ensure_secrets, load_settings
from tests.benchmarks._servers import servers
from tests.benchmarks.ingest import Traffic


def main(argv: list[str]) -> None:
    interactions = int(argv[0]) if argv else 30_000
    runs = int(argv[1]) if len(argv) > 1 else 3
    configure_logging("console", "warning")
    from tests.fixtures.projector import WatchedRunner  # noqa: PLC0415 -- after the logging is set

    with servers() as (nats_url, database_url), tempfile.TemporaryDirectory() as data_dir:
        settings = ensure_secrets(
            load_settings(environ={}, data_dir=Path(data_dir), nats_url=nats_url, database_url=database_url)
        )
        switchboard = Switchboard(settings)
        switchboard.create_schema()
        store = switchboard.open_store()
        traffic, core = Traffic(), CoreProcessor(store)
        for _ in range(0, interactions, 500):
            core.process([(traffic.next(), None) for _ in range(500)])
        end = store.max_position()
        print(f"   {interactions:,} interactions recorded: {end:,} events", flush=True)
        for run in range(1, runs + 1):
            runner = WatchedRunner(store)
            runner.reset([p.name for p in runner.projections])
            stop = threading.Event()
            thread = threading.Thread(target=runner.run_forever, args=(stop,), daemon=True)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            thread.start()
            runner.until_every_position_is(end, timeout=3600)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            stop.set()
            thread.join(60)
            print(
                f"   run {run}: {end / wall:,.0f} events/s, {wall:.2f} s; projector CPU {cpu:.2f} s, "
                f"{cpu * 1e6 / end:.1f} µs per event",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
