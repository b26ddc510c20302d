"""Ingest throughput and latency: interactions on JetStream → customer and case events → timeline rows.

What runs, on the same NATS and PostgreSQL, in one go:

- **switchboard**: the real roles as their own processes, `switchboard serve core` and
  `switchboard serve projector` (production's shape on one node), against SB_INTERACTIONS with the
  contract's names. A backlog of interactions (a realistic mix, see `Traffic`) is published first;
  the sustained rate is how fast the backlog is done: from the first timeline row until the last is
  committed and every other read model has applied the backlog too (the projector runs the timeline
  ahead of the others, so timeline rows alone would not say the work is done).
  Then interactions are published at half that rate for a while, and each one's latency, from the
  moment it was published to the moment the projector announced its committed timeline row on the
  live feed (`sb.live`), gives p50 and p99. The same backlog is also run through a single
  `switchboard serve core projector` process (the shape of `switchboard up`) and through
  `switchboard serve core projector classifier` (the same with the classifier role, whose model runs
  in a worker process that trains first and then serves at the lowest priority), alternating, two
  runs each, each on a fresh database and fresh streams, warmed up first (`warm_run`: one message
  all the way, and classified, so the classifier's worker has trained), the backlog published while
  it runs and timed from the end of publishing. up_shape_per_s is the median of the plain runs,
  classifier_ratio the ratio of the medians; after each classifier run, how many messages were
  classified when the backlog was on the timeline and how fast the rest followed is printed (how far
  classification, at the lowest priority, lags behind ingest).
- **memory**: RSS of each process of the two-process shape when the first timeline row appeared,
  after the backlog, and, on the warm processes, before and after a second backlog of people never
  seen before (`grow`): the growth per customer between those two counts, extrapolated to a million
  customers, is the memory line (the growth from the first row also holds warm-up).
- **raw NATS** baseline: the same messages published to a stream of their own, then pull-consumed
  and acked one by one with nats-py, doing nothing else (what JetStream alone costs).
- **naive** baseline: the textbook event-sourced consumer: eventsourcing's `Application` and
  `Aggregate` on its PostgreSQL persistence, one `save()` (one transaction) per message, ack after
  save. It only appends one event to a customer per message: no identity index, no cases, no
  encryption, no hash chain, no timeline, so it is a generous baseline.

The last lines are the summary:
`ingest: interactions_per_s=N up_shape_per_s=N naive_per_s=N raw_nats_per_s=N two_process_vs_raw=Nx
up_shape_vs_raw=Nx p50_ms=N p99_ms=N` (interactions_per_s and the latencies are the core + projector
processes'; up_shape_per_s the single `serve core projector` process) and
`memory: core_rss_mb=N projector_rss_mb=N customers=N ...`: each process's RSS after the second
backlog, its growth per customer between the two customer counts, and that growth extrapolated to a
million customers (the core's capped by its bounded cache), said to be an extrapolation.
classifier_ratio (on the ingest line) is the one-process rate with the classifier role over the
rate without it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from events.interactions import ENCODER, Identity, Interaction, interaction_id
from projections.runner import all_projections
from services.domain.identity import InvalidIdentity, normalized_value
from services.platform.database import parse_database_url, with_database
from services.platform.streams import Names, ensure_streams
from tests.benchmarks._servers import servers

CUSTOMERS = 2_000
BACKLOG = 60_000  # 30 interactions per customer on average
LATENCY_SECONDS = 10.0
TARGET_RATE = 5_000  # interactions/s the ingest path is built for on a 2-core machine
NAIVE_SECONDS = 8.0
# Memory at a second customer count: a backlog of people not in the first (see `grow`).
GROWTH_PEOPLE = 4_000
GROWTH_BACKLOG = 24_000
CHANNEL_MIX = {"email": 30, "sms": 18, "whatsapp": 20, "messenger": 10, "telegram": 8, "chat": 10, "instagram": 4}
WORDS = ("order", "refund", "where", "is", "my", "parcel", "thanks", "help", "still", "waiting", "invoice", "café")


class Traffic:
    """A realistic mix: customers known by email, phone, social ids and chat sessions.

    Every customer first arrives through a chat session of the company's website, logged in (user id,
    email and phone verified), then writes on every channel: emails in a few threads, SMS and WhatsApp
    from the same phone (one customer), Messenger, Telegram and Instagram (separate customers until
    something links them), and more chats. About 1 in 40 chats is a visitor who is not logged in
    (unverified claims).
    """

    def __init__(self, customers: int = CUSTOMERS, seed: int = 7, first_person: int = 0):
        self.rng = random.Random(seed)
        self.customers = customers
        self.first_person = first_person  # people numbered from here: another Traffic's are not met
        self.start = datetime(2026, 1, 1, tzinfo=UTC)
        self.n = 0
        self.channels = list(CHANNEL_MIX)
        self.weights = list(CHANNEL_MIX.values())

    def next(self) -> Interaction:
        rng, k = self.rng, self.n
        self.n += 1
        first = k < self.customers
        i = self.first_person + (k if first else rng.randrange(self.customers))
        channel = "chat" if first else rng.choices(self.channels, self.weights)[0]
        phone = f"+44 7700 9{i:05d}"
        profile: dict[str, str] = {}
        meta: dict[str, str] = {}
        thread = None
        if channel == "email":
            identities = [Identity("email", f"Person{i}@Example.org")]
            thread = f"email:<thread-{i}-{rng.randrange(3)}@example.org>"
            meta = {"message_id": f"<{secrets.token_hex(6)}@mail.example.org>"}
        elif channel == "sms":
            identities = [Identity("phone", phone)]
        elif channel == "whatsapp":
            identities = [Identity("phone", f"4477009{i:05d}")]  # a wa_id: the same number, digits only
            profile = {"name": f"Person {i}"}
        elif channel in ("messenger", "telegram", "instagram"):
            identities = [Identity(channel, f"{channel}-{i}")]
            profile = {"name": f"Person {i}"}
        else:
            session = f"session-{i}-{0 if first else rng.randrange(3)}"
            identities = [Identity("chat", session)]
            if first or rng.random() > 0.025:
                identities += [
                    Identity("external", f"user-{i}"),
                    Identity("email", f"person{i}@example.org"),
                    Identity("phone", phone),
                ]
            else:
                identities += [Identity("email", f"someone{i}@example.net", verified=False)]
            thread = f"chat:{session}"
            profile = {"name": f"Person {i}"}
        provider_id = secrets.token_hex(10)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
        return Interaction(
            id=interaction_id(channel, provider_id),
            channel=channel,
            direction="inbound",
            occurred_at=self.start + timedelta(milliseconds=(self.first_person * 30 + k) * 10),
            identities=identities,
            text=text,
            profile=profile,
            thread_key=thread,
            provider_message_id=provider_id,
            meta=meta,
        )


async def run_backlog(
    js,
    names: Names,
    nats_url: str,
    database_url: str,
    backlog: list[Interaction],
    deployment: tuple[tuple[str, ...], ...],
    paced=None,
    then=None,
) -> tuple[float, list[float], Memory]:
    """Publishes the backlog to fresh streams, starts the deployment and times backlog → timeline rows;
    then, if given, `paced(rate)` measures latencies against the same running deployment, and
    `then(procs, memory)` goes on with it."""
    await fresh_streams(js, names)
    t0 = time.perf_counter()
    await publish_interactions(js, names, backlog)
    shape = " + ".join(f"`serve {' '.join(roles)}`" for roles in deployment)
    print(f"   {shape}: backlog published to SB_INTERACTIONS in {time.perf_counter() - t0:.1f}s", flush=True)
    procs = start_switchboard(nats_url, database_url, Path(tempfile.mkdtemp(prefix="sb-bench-ingest-")), deployment)
    try:
        rate, early = await sustained(database_url, len(backlog), procs)
        with psycopg.connect(database_url) as conn:
            events = conn.execute("SELECT count(*) FROM sb_events").fetchone()[0]
            processed = conn.execute("SELECT count(*) FROM sb_processed").fetchone()[0]
        memory = Memory(deployment, early, ([rss_bytes(p.pid) for p in procs], registered_customers(database_url)))
        print(
            f"   {shape}: {rate:,.0f} interactions/s sustained, backlog → timeline rows; {events:,} events "
            f"({events / len(backlog):.2f} per interaction), {processed:,} processed; {memory.describe()}",
            flush=True,
        )
        latencies = await paced(rate) if paced is not None else []
        if then is not None:
            await then(procs, memory)
    finally:
        stop_switchboard(procs)
    return rate, latencies, memory


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), 0 where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def registered_customers(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM sb_events WHERE topic = 'customer.Registered'").fetchone()[0]


def _key_cache_entries() -> int:
    import inspect  # noqa: PLC0415

    from services.platform.eventstore.keys import KeyRing  # noqa: PLC0415

    return inspect.signature(KeyRing).parameters["cache_size"].default


class Memory:
    """RSS of each process when the first timeline row appeared and when the backlog was done, and
    the customers registered by then: the growth per customer, extrapolated to a million customers
    (linearly, and capped by the core's bounded aggregate cache, `core_cache_max_bytes`)."""

    MILLION = 1_000_000

    def __init__(self, deployment, early: tuple[list[int], int], late: tuple[list[int], int]):
        self.deployment = deployment
        (self.rss0, self.customers0), (self.rss1, self.customers1) = early, late

    def per_customer(self, i: int) -> float:
        grown = self.customers1 - self.customers0
        return max(0, self.rss1[i] - self.rss0[i]) / grown if grown > 0 else 0.0

    def at_million(self, i: int) -> float:
        from services.platform.settings import Settings  # noqa: PLC0415

        growth = self.per_customer(i) * (self.MILLION - self.customers1)
        if self.deployment[i] == ("core",):  # its growth is the aggregate cache, which is capped
            growth = min(growth, Settings().core_cache_max_bytes)
        elif self.deployment[i] == ("projector",):
            # Its growth per customer is the key cache (an AES-GCM context, ~2.8 KB a customer), which
            # holds at most KeyRing's cache_size customers.
            growth = self.per_customer(i) * max(0, min(self.MILLION, _key_cache_entries()) - self.customers1)
        return self.rss1[i] + growth

    def rss_mb(self, role: str) -> float:
        return next((self.rss1[i] for i, roles in enumerate(self.deployment) if roles == (role,)), 0) / 2**20

    def describe(self) -> str:
        return "; ".join(
            f"{'+'.join(roles)} RSS {self.rss0[i] / 2**20:.0f} MB at {self.customers0:,} customers → "
            f"{self.rss1[i] / 2**20:.0f} MB at {self.customers1:,} ({self.per_customer(i):,.0f} B/customer; "
            f"1M customers ≈ {self.at_million(i) / 2**20:,.0f} MB, extrapolated)"
            for i, roles in enumerate(self.deployment)
        )


async def grow(js, names: Names, database_url: str, procs: list[subprocess.Popen], deployment) -> Memory:
    """RSS at two customer counts on warm processes: after the backlog and the latency run (caches,
    pools and batch buffers at their working size), and after a second backlog of people never seen
    before. The growth between the two is what more customers cost; the growth from the first
    timeline row also holds the processes' warm-up, which is not per customer."""
    traffic = Traffic(customers=GROWTH_PEOPLE, seed=11, first_person=10 * CUSTOMERS)
    more = [traffic.next() for _ in range(GROWTH_BACKLOG)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        expected = timeline_rows(conn) + len(more)
        first = ([rss_bytes(p.pid) for p in procs], registered_customers(database_url))
        await publish_interactions(js, names, more)
        deadline = time.monotonic() + 600
        while timeline_rows(conn) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError("the second backlog did not reach the timeline in 600 s")
            await asyncio.sleep(0.1)
    memory = Memory(deployment, first, ([rss_bytes(p.pid) for p in procs], registered_customers(database_url)))
    print(f"   {GROWTH_BACKLOG:,} interactions of {GROWTH_PEOPLE:,} new people: {memory.describe()}", flush=True)
    return memory


def paced_rate(sustained_rate: float) -> float:
    """The latency is measured at half the target rate (or at half the sustained rate, if that is lower)."""
    return min(sustained_rate, TARGET_RATE) / 2


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- raw JetStream ---------------------------------------------------------------------------------


async def raw_nats(nats_url: str, bodies: list[bytes]) -> float:
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=60)  # a loaded machine: slow answers, not lost ones
    await js.add_stream(StreamConfig(name="BENCH_RAW", subjects=["benchraw.>"]))
    t0 = time.perf_counter()
    for start in range(0, len(bodies), 1000):
        await asyncio.gather(
            *(
                js.publish("benchraw.interactions", body, headers={"Nats-Msg-Id": f"raw-{start + j}"})
                for j, body in enumerate(bodies[start : start + 1000])
            )
        )
    publish_rate = len(bodies) / (time.perf_counter() - t0)
    sub = await js.pull_subscribe(
        "benchraw.>",
        durable="raw",
        stream="BENCH_RAW",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000),
    )
    got = 0
    t0 = time.perf_counter()
    while got < len(bodies):
        for msg in await sub.fetch(500, timeout=5):
            await msg.ack()
            got += 1
    await nc.flush()
    rate = got / (time.perf_counter() - t0)
    print(f"   raw JetStream: publish {publish_rate:,.0f} msgs/s; consume+ack {rate:,.0f} msgs/s", flush=True)
    await js.delete_stream("BENCH_RAW")
    await nc.close()
    return rate


# -- the naive event-sourced consumer --------------------------------------------------------------


def naive_application(database_url: str):
    from eventsourcing.application import AggregateNotFoundError, Application  # noqa: PLC0415
    from eventsourcing.domain import Aggregate, event  # noqa: PLC0415

    class NaiveCustomer(Aggregate):
        @staticmethod
        def create_id(identity: str) -> uuid.UUID:
            return uuid.uuid5(uuid.NAMESPACE_URL, identity)

        @event("Registered")
        def __init__(self, identity: str):
            self.identity = identity
            self.touchpoints: list[str] = []

        @event("InteractionRecorded")
        def record(self, interaction_id: str, channel: str, direction: str, text: str, occurred_at: str) -> None:
            self.touchpoints.append(interaction_id)

    class NaiveIngest(Application):
        def record(self, interaction: Interaction) -> None:
            identity = next(i for i in interaction.identities if i.verified)
            try:
                value = normalized_value(identity.kind, identity.value)
            except InvalidIdentity:
                return
            customer_id = NaiveCustomer.create_id(identity=f"{identity.kind}:{value}")
            try:
                customer = self.repository.get(customer_id)
            except AggregateNotFoundError:
                customer = NaiveCustomer(identity=f"{identity.kind}:{value}")
            customer.record(
                str(interaction.id),
                interaction.channel,
                interaction.direction,
                interaction.text,
                interaction.occurred_at.isoformat(),
            )
            self.save(customer)

    # eventsourcing's own configuration (POSTGRES_*), as a naive application would be set up.
    params = parse_database_url(database_url).params
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params.get("dbname", "postgres"),
        "POSTGRES_HOST": params.get("host", "127.0.0.1"),
        "POSTGRES_PORT": params.get("port", "5432"),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
        "CREATE_TABLE": "y",
    }
    return NaiveIngest(env=env)


async def naive(nats_url: str, database_url: str, bodies: list[bytes]) -> float:
    app = naive_application(database_url)
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=60)  # a loaded machine: slow answers, not lost ones
    await js.add_stream(StreamConfig(name="BENCH_NAIVE", subjects=["benchnaive.>"]))
    for start in range(0, len(bodies), 1000):
        await asyncio.gather(*(js.publish("benchnaive.interactions", body) for body in bodies[start : start + 1000]))
    sub = await js.pull_subscribe(
        "benchnaive.>", durable="naive", stream="BENCH_NAIVE", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
    )
    decode = msgspec.json.Decoder(Interaction).decode
    got = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < NAIVE_SECONDS and got < len(bodies):
        for msg in await sub.fetch(100, timeout=5):
            app.record(decode(msg.data))  # one save(), one transaction, per message
            await msg.ack()
            got += 1
    rate = got / (time.perf_counter() - t0)
    print(
        f"   naive (eventsourcing Application, one save() per message): {got:,} in {NAIVE_SECONDS:.0f}s, "
        f"{rate:,.0f} interactions/s",
        flush=True,
    )
    await js.delete_stream("BENCH_NAIVE")
    await nc.close()
    app.close()
    return rate


# -- switchboard ----------------------------------------------------------------------------------


async def publish_interactions(js, names: Names, interactions: list[Interaction]) -> None:
    for start in range(0, len(interactions), 1000):
        await asyncio.gather(
            *(
                js.publish(
                    names.interaction_subject(i.channel, i.direction),
                    ENCODER.encode(i),
                    headers={"Nats-Msg-Id": str(i.id)},
                    timeout=60,  # a loaded machine, a server still starting: slow, not lost
                )
                for i in interactions[start : start + 1000]
            )
        )


def start_switchboard(
    nats_url: str, database_url: str, workdir: Path, deployment: tuple[tuple[str, ...], ...]
) -> list[subprocess.Popen]:
    """One `switchboard serve ROLES…` process per entry of `deployment`."""
    env = {
        **os.environ,
        "SWITCHBOARD_NATS_URL": nats_url,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "SWITCHBOARD_DATA_DIR": str(workdir),
        "SWITCHBOARD_LOG_FORMAT": "json",
    }
    procs = []
    for roles in deployment:
        log = open(
            workdir / f"{'-'.join(roles)}.log", "wb"
        )  # JSON logs, one line per interaction: kept, as in production
        procs.append(
            subprocess.Popen(
                [str(Path(sys.executable).with_name("switchboard")), "serve", *roles],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        )
    return procs


def stop_switchboard(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def fresh_database(database_url: str) -> str:
    """Another empty database on the same server, for a second deployment on a clean slate."""
    name = "bench_" + secrets.token_hex(4)
    with psycopg.connect(with_database(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(database_url, name)


async def fresh_streams(js, names: Names) -> None:
    for stream in (names.interactions, names.events, names.deadletters, names.chat_outbox):
        try:
            await js.delete_stream(stream)
        except Exception:  # noqa: BLE001 — not there yet
            pass
    await ensure_streams(js, names, 3600)


def timeline_rows(conn) -> int:
    try:
        return conn.execute("SELECT count(*) FROM proj_timeline").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        conn.rollback() if not conn.autocommit else None
        return 0


def read_models_behind(conn) -> int:
    """Events of the log some read model has not applied yet (the projector runs the timeline ahead
    of the others: timeline rows alone do not say the work is done)."""
    try:
        behind, tracked = conn.execute(
            "SELECT (SELECT coalesce(max(notification_id), 0) FROM sb_events) - coalesce(min(position), 0), count(*) "
            "FROM (SELECT max(notification_id) AS position FROM sb_tracking "
            "WHERE application_name LIKE 'projection:%%' GROUP BY application_name) AS p"
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 1
    return behind if tracked >= len(all_projections()) else max(behind, 1)


async def all_applied(conn, deadline: float, what: str) -> None:
    """Waits until every read model has applied the whole log."""
    while (behind := read_models_behind(conn)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: read models still {behind:,} events behind")
        await asyncio.sleep(0.05)


async def sustained(database_url: str, expected: int, procs: list[subprocess.Popen]) -> tuple[float, tuple]:
    """How fast the backlog is done: from the first timeline row until the last is on the timeline and
    every other read model has applied it too; and the processes' RSS and the customers registered
    when the first row appeared."""
    early: tuple[list[int], int] = ([0] * len(procs), 0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 600
        first_at, first_count = None, 0
        while True:
            n = timeline_rows(conn)
            now = time.perf_counter()
            if n and first_at is None:
                first_at, first_count = now, n
                early = ([rss_bytes(p.pid) for p in procs], registered_customers(database_url))
            if n >= expected:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n} of {expected} timeline rows after 600 s")
            await asyncio.sleep(0.05)
        await all_applied(conn, deadline, "backlog")
    done = time.perf_counter()
    print(
        f"   backlog on the timeline at {(expected - first_count) / (now - first_at):,.0f} interactions/s, "
        f"in every read model at {(expected - first_count) / (done - first_at):,.0f}/s",
        flush=True,
    )
    return (expected - first_count) / (done - first_at), early


async def warm_run(js, names: Names, nats_url: str, database_url: str, backlog: list[Interaction], roles) -> float:
    """One process of `roles`, warmed up before it is timed: started on empty streams, one message of
    someone else taken all the way (on the timeline and, with the classifier role, classified: its
    worker has trained), then the backlog published while it runs. Timed from the end of publishing
    (nothing else competing for the machine) until the last timeline row is there and every read
    model has applied the backlog."""
    await fresh_streams(js, names)
    procs = start_switchboard(nats_url, database_url, Path(tempfile.mkdtemp(prefix="sb-bench-ingest-")), (roles,))
    classifying = "classifier" in roles
    shape = f"`serve {' '.join(roles)}`"
    try:
        t0 = time.perf_counter()
        await publish_interactions(js, names, [Traffic(customers=1, seed=3, first_person=9 * CUSTOMERS).next()])
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 600
            while timeline_rows(conn) < 1 or (classifying and classes_rows(conn) < 1):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{shape} not warm after 600 s")
                await asyncio.sleep(0.1)
            warm_s = time.perf_counter() - t0
            await publish_interactions(js, names, backlog)
            start, at = timeline_rows(conn), time.perf_counter()
            expected = 1 + len(backlog)
            deadline = time.monotonic() + 1800  # the classifier's conflicts on a loaded machine: slow
            while (n := timeline_rows(conn)) < expected:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {n} of {expected} timeline rows")
                await asyncio.sleep(0.05)
            await all_applied(conn, deadline, shape)
            rate = (expected - start) / (time.perf_counter() - at)
        print(
            f"   {shape}: warm after {warm_s:.1f}s; {start - 1:,} of the backlog on the timeline while it was published, "
            f"the other {expected - start:,} at {rate:,.0f} interactions/s",
            flush=True,
        )
        if classifying:
            await classification_done(database_url)
    finally:
        stop_switchboard(procs)
    return rate


def classes_rows(conn) -> int:
    try:
        return conn.execute("SELECT count(*) FROM proj_timeline_classes").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return 0


async def classification_done(database_url: str, limit: float = 60.0) -> None:
    """Waits until every inbound message with text and a case is classified (on the timeline), and
    says how many were when the backlog was done and how long the rest took."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        target = conn.execute(
            "SELECT count(*) FROM proj_timeline WHERE direction = 'inbound' AND case_id IS NOT NULL AND text <> ''"
        ).fetchone()[0]
        at_end = classes_rows(conn)
        t0 = time.perf_counter()
        deadline = time.monotonic() + limit
        n = at_end
        while n < target and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            n = classes_rows(conn)
        took = time.perf_counter() - t0
    rest = f"the other {n - at_end:,} in {took:.1f}s more ({(n - at_end) / took:,.0f}/s)" if n > at_end else ""
    print(
        f"   classified: {at_end:,} of {target:,} when the backlog was on the timeline; {rest}"
        + ("" if n >= target else f"; {target - n:,} still not after {limit:.0f}s"),
        flush=True,
    )


async def paced_to_timeline(
    js, nc, names: Names, traffic: Traffic, rate: float, seconds: float, clock=time.perf_counter
) -> tuple[dict[str, float], dict[str, float]]:
    """Publishes `traffic` at `rate` for `seconds` and waits (up to 30 s) until the projector announced
    each one's timeline row on the live feed: (interaction id → published at, → seen at), by `clock`."""
    published: dict[str, float] = {}
    seen: dict[str, float] = {}
    decode = msgspec.json.Decoder(list[dict]).decode

    async def on_live(msg) -> None:
        now = clock()
        for item in decode(msg.data):
            if item.get("type") == "timeline":
                seen.setdefault(item["interaction_id"], now)

    sub = await nc.subscribe(names.live_subject, cb=on_live)
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    t0 = time.perf_counter()
    pending = []
    while time.perf_counter() - t0 < seconds:
        owed += per_tick
        batch = []
        while owed >= 1:
            batch.append(traffic.next())
            owed -= 1
        for interaction in batch:
            published[str(interaction.id)] = clock()
            pending.append(
                asyncio.ensure_future(
                    js.publish(
                        names.interaction_subject(interaction.channel, interaction.direction),
                        ENCODER.encode(interaction),
                        headers={"Nats-Msg-Id": str(interaction.id)},
                    )
                )
            )
        next_tick = t0 + tick * (round((time.perf_counter() - t0) / tick) + 1)
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    await asyncio.gather(*pending)
    deadline = time.monotonic() + 30
    while len(seen.keys() & published.keys()) < len(published) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    return published, seen


async def latency(js, nc, names: Names, traffic: Traffic, rate: float, seconds: float) -> list[float]:
    published, seen = await paced_to_timeline(js, nc, names, traffic, rate, seconds)
    missing = published.keys() - seen.keys()
    if missing:
        raise AssertionError(f"{len(missing)} interactions never reached the timeline, e.g. {sorted(missing)[:3]}")
    return [(seen[i] - t) * 1000 for i, t in published.items()]


async def run(nats_url: str, database_url: str) -> str:
    traffic = Traffic()
    backlog = [traffic.next() for _ in range(BACKLOG)]
    bodies = [ENCODER.encode(i) for i in backlog]
    channels = {c: 0 for c in CHANNEL_MIX}
    for i in backlog:
        channels[i.channel] += 1
    print(
        f"   traffic: {BACKLOG:,} interactions of {CUSTOMERS:,} customers; "
        + ", ".join(f"{c} {n * 100 // BACKLOG}%" for c, n in channels.items()),
        flush=True,
    )

    raw_rate = await raw_nats(nats_url, bodies)
    naive_rate = await naive(nats_url, database_url, bodies)

    names = Names()
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=60)  # a loaded machine: slow answers, not lost ones
    warm: list[Memory] = []

    async def then(procs, memory) -> None:
        warm.append(await grow(js, names, database_url, procs, memory.deployment))

    try:
        # `switchboard up`'s shape: core and projector in one process (the projector takes the core's
        # events from memory), alternating with the same plus the classifier role (the machine's load
        # moves): the ratio of the medians is what classification costs ingest.
        plain: list[float] = []
        classified: list[float] = []
        # SWITCHBOARD_BENCH_UP_ROUNDS=0: only the two-process shape (a quick look on a busy machine).
        for _ in range(int(os.environ.get("SWITCHBOARD_BENCH_UP_ROUNDS", "2"))):
            for roles, rates in ((("core", "projector"), plain), (("core", "projector", "classifier"), classified)):
                rates.append(await warm_run(js, names, nats_url, await fresh_database(database_url), backlog, roles))
        single = statistics.median(plain) if plain else float("nan")
        classifier_ratio = statistics.median(classified) / single if classified else float("nan")
        print(
            f"   with the classifier role: {', '.join(f'{r:,.0f}' for r in classified)} interactions/s; without: "
            f"{', '.join(f'{r:,.0f}' for r in plain)}; median ratio {classifier_ratio:.2f}",
            flush=True,
        )
        # Production's shape on one node: a core process and a projector process. Sustained, then latency
        # at half the sustained rate, on the same running processes; then memory at a second customer count.
        rate, latencies, memory = await run_backlog(
            js,
            names,
            nats_url,
            database_url,
            backlog,
            (("core",), ("projector",)),
            paced=lambda sustained_rate: latency(js, nc, names, traffic, paced_rate(sustained_rate), LATENCY_SECONDS),
            then=then,
        )
    finally:
        await nc.close()
    grown = warm[0]
    p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
    print(
        f"   latency publish → timeline row, core and projector processes, at {paced_rate(rate):,.0f} interactions/s "
        f"(half the {TARGET_RATE:,} interactions/s target, or of the sustained rate if lower) for "
        f"{LATENCY_SECONDS:.0f}s, {len(latencies):,} interactions: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms",
        flush=True,
    )
    print(
        f"   sustained: {rate / naive_rate:.1f}× naive; {rate / raw_rate:.2f}× raw JetStream consume+ack; "
        f"one process for both roles (median): {single:,.0f} interactions/s",
        flush=True,
    )
    print(
        f"   memory per customer from the first timeline row (warm-up included): core "
        f"{memory.per_customer(0):,.0f} B, projector {memory.per_customer(1):,.0f} B; on warm processes, "
        f"{grown.customers0:,} → {grown.customers1:,} customers: core {grown.per_customer(0):,.0f} B, projector "
        f"{grown.per_customer(1):,.0f} B",
        flush=True,
    )
    return (
        f"ingest: interactions_per_s={rate:.0f} up_shape_per_s={single:.0f} naive_per_s={naive_rate:.0f} "
        f"raw_nats_per_s={raw_rate:.0f} two_process_vs_raw={rate / raw_rate:.2f}x up_shape_vs_raw={single / raw_rate:.2f}x "
        f"p50_ms={p50:.0f} p99_ms={p99:.0f} classifier_ratio={classifier_ratio:.2f}\n"
        f"memory: core_rss_mb={grown.rss_mb('core'):.0f} projector_rss_mb={grown.rss_mb('projector'):.0f} "
        f"customers={grown.customers1} core_b_per_customer={grown.per_customer(0):.0f} "
        f"projector_b_per_customer={grown.per_customer(1):.0f} core_mb_at_1m={grown.at_million(0) / 2**20:.0f} "
        f"projector_mb_at_1m={grown.at_million(1) / 2**20:.0f} (extrapolated from two customer counts)"
    )


def main() -> str:
    with servers() as (nats_url, database_url):
        return asyncio.run(run(nats_url, database_url))


if __name__ == "__main__":
    print(main())
