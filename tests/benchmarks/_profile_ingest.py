"""Where the ingest bench's time goes: the core and projector processes sampled with py-spy.

`python -m tests.benchmarks._profile_ingest [BACKLOG] [ROLES...]` publishes a backlog of the ingest
bench's traffic, starts `switchboard serve core` and `switchboard serve projector` (or the one
process of `serve core projector` with `up`, and of `serve core projector classifier` with
`classifying`), attaches `py-spy record` to each (sampling, without
pausing the process) until the backlog is timeline rows, and prints for each process the functions
that take the largest share of its samples, inclusive and on their own (`self`). The collapsed
stacks are kept under /tmp for a flame graph. py-spy is a tool, not a dependency:
`pip install py-spy` first. Also prints the statements PostgreSQL spent most time on, when the
server has pg_stat_statements loaded.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import psycopg

from services.platform.streams import Names
from tests.benchmarks._servers import servers
from tests.benchmarks.ingest import (
    CUSTOMERS,
    Traffic,
    all_applied,
    classes_rows,
    fresh_streams,
    publish_interactions,
    start_switchboard,
    stop_switchboard,
    timeline_rows,
)


def py_spy(pid: int, out: Path, rate: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """`py-spy record` attached to `pid` (sampling, not pausing it), every thread, collapsed stacks into
    `out`; stop it with SIGINT. py-spy is a tool, not a dependency: `pip install py-spy` first."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--nonblocking",
            "--function",
            "--threads",
            *extra,
            "-o",
            str(out),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise(raw: Path, top: int = 45) -> str:
    """Inclusive and self shares per function from py-spy's collapsed stacks ("f1;f2;f3 count")."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    out = [f"   {total:,} samples"]
    out.append("   inclusive:")
    out += [f"   {n * 100 / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    out.append("   self:")
    out += [f"   {n * 100 / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(out)


async def run(nats_url: str, database_url: str, backlog_size: int, shape: str) -> None:
    traffic = Traffic()
    backlog = [traffic.next() for _ in range(backlog_size)]
    names = Names()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await fresh_streams(js, names)
    deployment = {
        "up": (("core", "projector"),),
        "classifying": (("core", "projector", "classifier"),),
    }.get(shape, (("core",), ("projector",)))
    classifying = any("classifier" in roles for roles in deployment)
    workdir = Path(tempfile.mkdtemp(prefix="sb-profile-"))
    procs = start_switchboard(nats_url, database_url, workdir, deployment)
    # Warm, as the bench's warm runs: one message of someone else taken all the way (and classified:
    # the classifier's worker has trained), then the backlog published while it runs. Start-up
    # (imports, schema, training) is not ingest.
    await publish_interactions(js, names, [Traffic(customers=1, seed=3, first_person=9 * CUSTOMERS).next()])
    with psycopg.connect(database_url, autocommit=True) as conn:
        while timeline_rows(conn) < 1 or (classifying and classes_rows(conn) < 1):
            await asyncio.sleep(0.1)
    await publish_interactions(js, names, backlog)
    await nc.close()
    backlog_size += 1
    spies = []
    outputs = []
    for roles, proc in zip(deployment, procs, strict=True):
        out = workdir / f"{'-'.join(roles)}.collapsed"
        outputs.append(out)
        spies.append(py_spy(proc.pid, out, rate=97, extra=("--subprocesses",)))
    t0 = time.perf_counter()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 600
            while timeline_rows(conn) < backlog_size:
                if time.monotonic() > deadline:
                    raise TimeoutError("backlog not done in 600 s")
                await asyncio.sleep(0.1)
            await all_applied(conn, deadline, "backlog")
        elapsed = time.perf_counter() - t0
    finally:
        for s in spies:
            s.send_signal(signal.SIGINT)
        for s in spies:
            s.wait(60)
        stop_switchboard(procs)
    print(f"   {backlog_size:,} interactions in {elapsed:.1f}s ({backlog_size / elapsed:,.0f}/s, py-spy attached)")
    for roles, out in zip(deployment, outputs, strict=True):
        print(f"== {'+'.join(roles)} ({out})")
        print(summarise(out))
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            rows = conn.execute(
                "SELECT round(total_exec_time::numeric, 0), calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 150) "
                "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "ORDER BY total_exec_time DESC LIMIT 25"
            ).fetchall()
        except psycopg.Error:
            return
    print("== PostgreSQL, by total execution time (ms, calls, statement)")
    for ms, calls, query in rows:
        print(f"   {ms:>8} {calls:>7}  {query}")


def main(argv: list[str]) -> None:
    backlog = int(argv[0]) if argv else 30_000
    shape = argv[1] if len(argv) > 1 else "two"
    os.environ.setdefault("SWITCHBOARD_LOG_LEVEL", "info")
    with servers() as (nats_url, database_url):
        asyncio.run(run(nats_url, database_url, backlog, shape))


if __name__ == "__main__":
    main(sys.argv[1:])
