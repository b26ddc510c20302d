"""Agent API reads on a log of a million events: one client, then 16 at once.

The log is the rebuild benchmark's (tests/benchmarks/_eventlog.py, kept between runs by
`_eventlog.cached`): 20,000 customers, 5 of them with about 10,000 events each. The read models are
built by `switchboard projections rebuild`; then `switchboard serve api` processes answer over HTTP
with a token of the agent role, as in production (auth, the pool, JSON), on loopback, with this load
generator on the same machine.

Measured:
- one client, one request at a time: p99 of a timeline page (a heavy customer's about one time in
  five), the open-cases list (first pages and the ones after, by cursor), a profile, and customer
  search (`/api/v1/customers?q=`, a part of a name or an address) and full-text search
  (`/api/v1/search?q=`);
- 16 clients, each a keep-alive connection sending the next request when the last one answered:
  timeline pages and profiles (`reads_per_s`), then case lists and customer searches, against `API_PROCESSES`
  API processes (SB_BENCH_API_PROCESSES, default 2), and, the baseline in the same run, against one.

The last line is the summary: `query: events= timeline_p99_ms= cases_p99_ms= profile_p99_ms=
search_p99_ms= reads_per_s= ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import quote

import msgspec
import psutil
import psycopg

from services.platform.settings import Settings
from tests.benchmarks import _eventlog
from tests.benchmarks._servers import servers

EVENTS = int(os.environ.get("SB_BENCH_QUERY_EVENTS", os.environ.get("SB_BENCH_REBUILD_EVENTS", "1000000")))
API_PROCESSES = int(os.environ.get("SB_BENCH_API_PROCESSES", "2"))
CLIENTS = 16
ONE_CLIENT_REQUESTS = int(os.environ.get("SB_BENCH_QUERY_REQUESTS", "400"))  # per kind of read
LOAD_SECONDS = float(os.environ.get("SB_BENCH_QUERY_SECONDS", "15"))
SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def _settings(database_url: str, nats_url: str, data_dir: Path, master_key: str) -> Settings:
    return Settings(data_dir=data_dir, nats_url=nats_url, database_url=database_url, master_key=master_key)


def switchboard_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHBOARD_NATS_URL": settings.nats_url,
        "SWITCHBOARD_DATABASE_URL": settings.database_url,
        "SWITCHBOARD_MASTER_KEY": settings.master_key,
        "SWITCHBOARD_DATA_DIR": str(settings.data_dir),
        "SWITCHBOARD_LOG_FORMAT": "json",
        "SWITCHBOARD_LOG_LEVEL": "warning",
    }


# -- a small keep-alive HTTP/1.1 client: the load generator shares the machine, so it must be cheap --


class Client:
    def __init__(self, host: str, port: int, token: str):
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.head}".encode())
        status_line = await self.reader.readline()
        if not status_line:  # the server closed an idle keep-alive connection: once more on a new one
            await self.close()
            self.writer = None
            return await self.get(path)
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if not status_line.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"GET {path}: {status_line!r} {body[:300]!r}")
        return body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class Workload:
    """The requests, drawn from what the read models hold (ids, names, addresses, case cursors)."""

    def __init__(self, database_url: str, seed: int = 7):
        self.rng = random.Random(seed)
        with psycopg.connect(database_url) as conn:
            live = "merged_into IS NULL AND NOT erased"
            self.heavy = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM proj_customers WHERE {live} ORDER BY interaction_count DESC LIMIT 5"
                )
            ]
            self.customers = [
                r[0] for r in conn.execute(f"SELECT id FROM proj_customers WHERE {live} ORDER BY random() LIMIT 2000")
            ]
            self.merged = [
                r[0] for r in conn.execute("SELECT id FROM proj_customers WHERE merged_into IS NOT NULL LIMIT 200")
            ]
            self.names = [
                r[0]
                for r in conn.execute(
                    f"SELECT name FROM proj_customers WHERE {live} AND name IS NOT NULL ORDER BY random() LIMIT 500"
                )
            ]
            self.emails = [
                r[0]
                for r in conn.execute(
                    "SELECT value FROM proj_identities WHERE kind = 'email' ORDER BY random() LIMIT 500"
                )
            ]

    def customer(self):
        roll = self.rng.random()
        if roll < 0.2:
            return self.rng.choice(self.heavy)
        if roll < 0.25 and self.merged:
            return self.rng.choice(self.merged)  # an absorbed id: the survivor's timeline
        return self.rng.choice(self.customers)

    def timeline(self) -> str:
        return f"/api/v1/customers/{self.customer()}/timeline?limit=50"

    def profile(self) -> str:
        return f"/api/v1/customers/{self.customer()}"

    def cases(self) -> str:
        return self.rng.choice(
            (
                "/api/v1/cases?status=open&limit=50",
                "/api/v1/cases?status=open,pending&limit=50",
                "/api/v1/cases?status=open&assignee=none&limit=50",
                "/api/v1/cases?limit=50",
            )
        )

    def customer_search(self) -> str:
        if self.rng.random() < 0.5:
            q = self.rng.choice(self.names)  # "Customer 1234": every word must match
        else:
            q = self.rng.choice(self.emails).split("@")[0]  # a part of an address
        return f"/api/v1/customers?q={quote(q)}&limit=20"

    def fulltext(self) -> str:
        roll = self.rng.random()
        if roll < 0.4:
            q = self.rng.choice(self.names)
        elif roll < 0.8:
            q = self.rng.choice(self.emails)
        else:
            q = " ".join(self.rng.sample(_eventlog.WORDS, 2))  # words of messages: thousands match
        return f"/api/v1/search?q={quote(q)}&limit=20"


async def one_client(ports: list[int], token: str, work: Workload) -> dict[str, float]:
    client = Client("127.0.0.1", ports[0], token)
    out = {}
    try:
        kinds = {
            "timeline": work.timeline,
            "cases": work.cases,
            "profile": work.profile,
            "search": work.customer_search,
            "fulltext": work.fulltext,
        }
        for name, make in kinds.items():
            for _ in range(20):  # warm: prepared statements, the pool, caches
                await client.get(make())
            samples = []
            cursor = None
            for i in range(ONE_CLIENT_REQUESTS if name != "fulltext" else ONE_CLIENT_REQUESTS // 2):
                path = make()
                if name == "cases" and cursor and i % 2:  # every other list is the next page
                    path = path + "&cursor=" + cursor
                t0 = time.perf_counter()
                body = await client.get(path)
                samples.append(time.perf_counter() - t0)
                if name == "cases":
                    cursor = msgspec.json.decode(body).get("next_cursor")
            out[name] = p99(samples)
            median = sorted(samples)[len(samples) // 2] * 1000
            print(
                f"   one client: {name} p99 {out[name]:.1f} ms, p50 {median:.1f} ms ({len(samples)} requests; "
                f"load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    finally:
        await client.close()
    return out


async def many_clients(
    ports: list[int], token: str, work: Workload, makers, seconds: float, meter: CpuMeter
) -> tuple[float, dict, float]:
    """(requests per second, p99 ms per kind, CPU ms per request) of CLIENTS connections spread over
    the ports."""
    samples: dict[str, list[float]] = {name: [] for name, _ in makers}
    done = 0
    stop_at = 0.0

    async def run(i: int) -> None:
        nonlocal done
        client = Client("127.0.0.1", ports[i % len(ports)], token)
        try:
            for _name, make in makers:  # warm this connection's process
                await client.get(make())
            await barrier.wait()
            k = i
            while time.perf_counter() < stop_at:
                name, make = makers[k % len(makers)]
                k += 1
                t0 = time.perf_counter()
                await client.get(make())
                samples[name].append(time.perf_counter() - t0)
                done += 1
        finally:
            await client.close()

    barrier = asyncio.Barrier(CLIENTS + 1)
    tasks = [asyncio.create_task(run(i)) for i in range(CLIENTS)]
    await barrier.wait()
    cpu0 = meter.read()
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    cpu = CpuMeter.spent(cpu0, meter.read())
    return done / elapsed, {name: p99(s) for name, s in samples.items() if s}, cpu / max(done, 1) * 1000


class CpuMeter:
    """CPU seconds (user + system) spent by the API processes, the database's backends of this
    benchmark's database, and this load generator. On a machine shared with other work the wall
    clock says how busy the machine was; the CPU per read says what a read costs, and so how many
    reads per second the machine's own CPUs would serve (`capacity`)."""

    def __init__(self, api_pids: list[int], database: str):
        self.api_pids, self.database = api_pids, database

    def _backends(self) -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter(["cmdline"]):
            if " ".join(proc.info["cmdline"] or ()).startswith(f"postgres: postgres {self.database} "):
                out.append(proc)
        return out

    def read(self) -> dict[int, float]:
        seen = {}
        for proc in [*(psutil.Process(p) for p in self.api_pids), psutil.Process(), *self._backends()]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                seen[proc.pid] = t.user + t.system
        return seen

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# -- the API processes ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(stack: ExitStack, settings: Settings, n: int) -> tuple[list[int], list[int]]:
    """(ports, process ids) of `n` fresh `switchboard serve api` processes, listening."""
    ports = [_free_port() for _ in range(n)]
    env = switchboard_env(settings)
    procs = []
    for port in ports:
        proc = subprocess.Popen(
            [SWITCHBOARD, "serve", "api", "--http", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        stack.callback(_stop, proc)
    deadline = time.monotonic() + 120
    for port, proc in zip(ports, procs, strict=True):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve api exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("serve api did not listen within 120 s") from None
                time.sleep(0.2)  # polling for the port with a deadline (no fixed wait)
    return ports, [p.pid for p in procs]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _rebuild(settings: Settings) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(
        [SWITCHBOARD, "projections", "rebuild"],
        env=switchboard_env(settings),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rebuild failed: {result.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> str:
    from services.api.auth import create_token  # noqa: PLC0415
    from services.bootstrap import Switchboard  # noqa: PLC0415

    with servers() as (nats_url, database_url), TemporaryDirectory(prefix="sb-bench-query-") as tmp:
        data_dir = Path(tmp)
        master_key, written = _eventlog.bench_log(database_url, nats_url, data_dir, EVENTS)
        settings = _settings(database_url, nats_url, data_dir, master_key)
        sb = Switchboard(settings)
        sb.create_schema()
        print(f"   read models built by projections rebuild in {_rebuild(settings):.1f}s", flush=True)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            _, token = create_token(conn, "agent", "bench")
        work = Workload(database_url)
        reads = [("timeline", work.timeline), ("profile", work.profile)]
        heavy = [("cases", work.cases), ("search", work.customer_search)]
        database = database_url.rsplit("/", 1)[-1].split("?")[0]
        with ExitStack() as stack:
            ports, pids = start_api(stack, settings, API_PROCESSES)
            meter = CpuMeter(pids, database)
            single = asyncio.run(one_client(ports, token, work))
            rate, tails, cpu_ms = asyncio.run(many_clients(ports, token, work, reads, LOAD_SECONDS, meter))
            heavy_rate, heavy_tails, heavy_cpu_ms = asyncio.run(
                many_clients(ports, token, work, heavy, LOAD_SECONDS, meter)
            )
        with ExitStack() as stack:
            one, one_pids = start_api(stack, settings, 1)
            base_rate, base_tails, base_cpu_ms = asyncio.run(
                many_clients(one, token, work, reads, LOAD_SECONDS, CpuMeter(one_pids, database))
            )
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    capacity = cpus / cpu_ms * 1000  # reads/s if this machine's CPUs did nothing else
    print(
        f"   one client, p99: timeline {single['timeline']:.1f} ms, open cases {single['cases']:.1f} ms, "
        f"profile {single['profile']:.1f} ms, customer search {single['search']:.1f} ms, "
        f"full-text search {single['fulltext']:.1f} ms"
    )
    print(
        f"   {CLIENTS} clients, {API_PROCESSES} API processes: {rate:,.0f} timeline+profile reads/s "
        f"(p99 timeline {tails['timeline']:.0f} ms, profile {tails['profile']:.0f} ms; {cpu_ms:.2f} ms of CPU per "
        f"read, API + PostgreSQL + load generator: {capacity:,.0f} reads/s on {cpus} CPUs of our own); "
        f"{heavy_rate:,.0f} case lists+customer searches/s (p99 cases {heavy_tails['cases']:.0f} ms, "
        f"customer search {heavy_tails['search']:.0f} ms; {heavy_cpu_ms:.2f} ms of CPU each)"
    )
    print(
        f"   baseline, {CLIENTS} clients, 1 API process: {base_rate:,.0f} timeline+profile reads/s "
        f"(p99 timeline {base_tails['timeline']:.0f} ms; {base_cpu_ms:.2f} ms of CPU per read); "
        f"load average {load:.1f} on {cpus} CPUs"
    )
    return (
        f"query: events={written} timeline_p99_ms={single['timeline']:.1f} cases_p99_ms={single['cases']:.1f} "
        f"profile_p99_ms={single['profile']:.1f} search_p99_ms={single['search']:.1f} "
        f"fulltext_p99_ms={single['fulltext']:.1f} reads_per_s={rate:.0f} api_processes={API_PROCESSES} "
        f"reads_per_s_one_process={base_rate:.0f} cpu_ms_per_read={cpu_ms:.2f} reads_per_s_own_cpus={capacity:.0f} "
        f"load={load:.1f}"
    )


if __name__ == "__main__":
    print(main())
