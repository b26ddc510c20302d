"""Where the ingest bench's publish → timeline latency goes, stage by stage (issue 13).

`python -m tests.benchmarks._latency_probe [BACKLOG] [RATE] [SECONDS]` runs only the ingest bench's
latency phase in its two-process shape (`switchboard serve core` + `switchboard serve projector`):
a warm-up backlog of the bench's traffic (default 20,000), then interactions published at RATE per
second (default 2,500: half the bench's 5,000 target) for SECONDS (default 10), each timed from its
publication to the projector's live announcement of its timeline row (`sb.live`), as the bench does.

With the processes' JSON logs at debug level it also splits each latency into stages, from the
wall-clock timestamps of the lines both processes write:

- publish → core committed: the interaction's `interaction_recorded` line (after the commit);
- core committed → projector committed: the end of the projector batch (`projector_batch`, debug)
  that applied the event;
- projector committed → seen: the live publication and its delivery to this script;

and prints p50/p90/p99/max of each, the slowest interactions' stages, and the batch sizes and
durations of both processes. A tool for looking, not a benchmark: nothing is compared to a baseline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nats

from services.platform.streams import Names
from tests.benchmarks._profile_ingest import py_spy, summarise
from tests.benchmarks._servers import servers
from tests.benchmarks.ingest import (
    Traffic,
    _percentile,
    fresh_streams,
    paced_rate,
    paced_to_timeline,
    publish_interactions,
    start_switchboard,
    stop_switchboard,
    sustained,
)


def _stamp(line: dict) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def _lines(path: Path) -> list[dict]:
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
    return out


def _summary(name: str, values: list[float]) -> str:
    if not values:
        return f"   {name}: none"
    return (
        f"   {name}: n={len(values)} p50 {_percentile(values, 0.5):.1f} p90 {_percentile(values, 0.9):.1f} "
        f"p99 {_percentile(values, 0.99):.1f} max {max(values):.1f}"
    )


async def paced(js, nc, names: Names, traffic: Traffic, rate: float, seconds: float):
    """The bench's `latency()`, in wall-clock time (to line up with the processes' log lines)."""
    return await paced_to_timeline(js, nc, names, traffic, rate, seconds, clock=time.time)


async def probe(nats_url: str, database_url: str, backlog_n: int, rate: float, seconds: float) -> None:
    names = Names()
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=60)
    traffic = Traffic()
    backlog = [traffic.next() for _ in range(backlog_n)]
    await fresh_streams(js, names)
    await publish_interactions(js, names, backlog)
    workdir = Path(tempfile.mkdtemp(prefix="sb-latency-probe-"))
    os.environ.setdefault("SWITCHBOARD_LOG_LEVEL", "debug")
    procs = start_switchboard(nats_url, database_url, workdir, (("core",), ("projector",)))
    try:
        sustained_rate, _early = await sustained(database_url, backlog_n, procs)
        print(f"   sustained {sustained_rate:,.0f} interactions/s", flush=True)
        if not rate:
            rate = paced_rate(sustained_rate)
        print(
            f"   warm: {backlog_n:,} interactions on the timeline; pacing {rate:,.0f}/s for {seconds:.0f}s", flush=True
        )
        started = time.time()
        spies = []
        if os.environ.get("SWITCHBOARD_PROBE_PYSPY"):  # `pip install py-spy` first: a tool, not a dependency
            idle = ("--idle",) if os.environ["SWITCHBOARD_PROBE_PYSPY"] == "idle" else ()
            for proc, role in zip(procs, ("core", "projector"), strict=True):
                spies.append(py_spy(proc.pid, workdir / f"{role}.collapsed", rate=197, extra=idle))
        published, seen = await paced(js, nc, names, traffic, rate, seconds)
        for s in spies:
            s.send_signal(signal.SIGINT)
        for s in spies:
            s.wait(60)
    finally:
        stop_switchboard(procs)
        await nc.close()
    missing = published.keys() - seen.keys()
    total = [(seen[i] - t) * 1000 for i, t in published.items() if i in seen]
    print(_summary("publish → seen (ms)", total) + (f"; {len(missing)} never seen" if missing else ""), flush=True)

    core = _lines(workdir / "core.log")
    projector = _lines(workdir / "projector.log")
    recorded = {ln["correlation_id"]: _stamp(ln) for ln in core if ln.get("event") == "interaction_recorded"}
    batches = [ln for ln in core if ln.get("event") == "core_batch_committed" and _stamp(ln) >= started]
    pbatches = [ln for ln in projector if ln.get("event") == "projector_batch" and _stamp(ln) >= started]
    to_core = [(recorded[i] - t) * 1000 for i, t in published.items() if i in recorded]
    to_seen = [(seen[i] - recorded[i]) * 1000 for i in published if i in recorded and i in seen]
    print(_summary("publish → core committed, logged (ms)", to_core), flush=True)
    print(_summary("core logged → seen on sb.live (ms)", to_seen), flush=True)
    for field in ("recorded", "ms"):
        print(_summary(f"core batch {field}", [float(b[field]) for b in batches if field in b]), flush=True)
    for event, field in (
        ("core_batch_started", "size"),
        ("core_batch_started", "waited_ms"),
        ("core_batch_prepared", "ms"),
        ("core_batch_commit", "ms"),
    ):
        values = [float(ln[field]) for ln in core if ln.get("event") == event and _stamp(ln) >= started]
        print(_summary(f"{event} {field}", values), flush=True)
    for field in ("events", "read_ms", "apply_ms", "commit_ms", "total_ms", "idle_ms"):
        print(_summary(f"projector batch {field}", [float(b[field]) for b in pbatches if field in b]), flush=True)
    names_ = sorted({k for b in pbatches for k in b.get("per", {})})
    for name in names_:
        print(
            _summary(f"projector {name} ms", [float(b["per"][name]) for b in pbatches if name in b.get("per", {})]),
            flush=True,
        )
    slow = sorted(published, key=lambda i: -(seen.get(i, 1e12) - published[i]))[:8]
    for i in slow:
        t = published[i]
        rec = recorded.get(i)
        print(
            f"   slow {i[:8]} at +{t - started:.2f}s: total {(seen.get(i, float('nan')) - t) * 1000:.0f} ms, "
            f"to core {((rec or float('nan')) - t) * 1000:.0f} ms",
            flush=True,
        )
    for role in ("core", "projector"):
        if (workdir / f"{role}.collapsed").exists():
            print(f"   {role}:\n" + summarise(workdir / f"{role}.collapsed", 30), flush=True)
    print(f"   logs: {workdir}", flush=True)


def main(argv: list[str]) -> None:
    backlog_n = int(argv[0]) if argv else 20_000
    rate = float(argv[1]) if len(argv) > 1 else 0.0  # 0: as the bench, half the sustained rate (at most 2,500)
    seconds = float(argv[2]) if len(argv) > 2 else 10.0
    with servers() as (nats_url, database_url):
        asyncio.run(probe(nats_url, database_url, backlog_n, rate, seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
