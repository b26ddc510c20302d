"""What the fault tests share: servers of their own to break, traffic through the real gateway, and
the checks "nothing lost, nothing twice, nothing dead-lettered, the read side caught up".

Every test here starts its OWN embedded NATS and PostgreSQL (the session's servers are shared with
the rest of the suite and must never be stopped), freezes, stops or fills them under load, and
watches `/ready` meanwhile. Used by tests/faults/test_*.py and by the soak (tests/faults/soak.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import nats
import psycopg
from twilio.request_validator import RequestValidator

from events.customer import InteractionRecorded
from events.interactions import interaction_id
from projections.runner import ProjectionRunner
from services.bootstrap import ROLES
from services.platform.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from services.platform.settings import Settings, ensure_secrets, load_settings
from services.platform.streams import Names
from services.server import Server

PUBLIC_URL = "https://switchboard.example.com"
SMS_PATH = "/channels/sms/twilio"


# -- servers of our own ----------------------------------------------------------------------------


class LimitedNats(EmbeddedNats):
    """nats-server whose JetStream file store holds at most `max_file_store` bytes: a disk near full."""

    def __init__(self, store_dir: Path, max_file_store: int | None = None):
        super().__init__(store_dir)
        self.max_file_store = max_file_store

    def _config(self) -> str:
        config = super()._config()
        if self.max_file_store:
            config = config.replace("jetstream {", f"jetstream {{ max_file_store: {self.max_file_store},", 1)
        return config


class OwnServers:
    """An embedded NATS and PostgreSQL for one test, on fixed ports so a restart keeps the URLs."""

    def __init__(self, root: Path, nats_max_file_store: int | None = None):
        self.nats = LimitedNats(root / "nats", nats_max_file_store)
        self.pg = EmbeddedPostgres(root / "pg", ephemeral=False)
        self._frozen: list[int] = []

    def start(self) -> OwnServers:
        self.nats.start()
        self.pg.start()
        return self

    def stop(self) -> None:
        self.thaw_postgres()
        self.nats.stop()
        self.pg.ephemeral = True  # removes the cluster
        self.pg.stop()

    # PostgreSQL hung: every process of the cluster stopped. Connections stay open, the kernel still
    # acknowledges every packet, nothing ever answers: what a stalled host or disk looks like.
    def freeze_postgres(self) -> None:
        assert self.pg.proc is not None
        postmaster = self.pg.proc.pid
        os.kill(postmaster, signal.SIGSTOP)  # first, so it forks no new backend meanwhile
        self._frozen = [postmaster, *_children(postmaster)]
        for pid in self._frozen[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw_postgres(self) -> None:
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = []

    def stop_postgres(self) -> None:
        self.pg.stop()  # fast shutdown: open transactions rolled back, every connection closed

    def start_postgres(self) -> None:
        self.pg.start()

    def stop_nats(self) -> None:
        self.nats.stop()

    def start_nats(self) -> None:
        self.nats.start()


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def fault_settings(servers: OwnServers, data_dir: Path, **overrides: object) -> Settings:
    from channels.email.trust import single_node_trust  # noqa: PLC0415 -- lazy, as in tests/conftest.py

    values: dict[str, object] = {
        "environ": {},
        "data_dir": data_dir,
        "nats_url": servers.nats.url,
        "database_url": servers.pg.url,
        "log_format": "json",
        "public_url": PUBLIC_URL,
        # JetStream reserves these from the server's store when the buckets and streams are made.
        "blobs_max_bytes": 8 * 1024 * 1024,
        "chat_session_store_max_bytes": 1024 * 1024,
        "nats_interactions_max_bytes": 32 * 1024 * 1024,
        "nats_events_max_bytes": 8 * 1024 * 1024,
        "nats_deadletter_max_bytes": 2 * 1024 * 1024,
        **overrides,
    }
    return single_node_trust(ensure_secrets(load_settings(**values)))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def switchboard(settings: Settings, names: Names | None = None, roles: tuple[str, ...] = ROLES):
    """Every role in this process, on a random HTTP port, stopped at the end of the block."""
    srv = Server(settings, roles, http=("127.0.0.1", free_port()), smtp=("127.0.0.1", free_port()), names=names)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


# -- traffic ---------------------------------------------------------------------------------------


def sms_params(n: int, customers: int = 12) -> dict:
    sid = "SM" + secrets.token_hex(16)
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": f"+1415555{n % customers:04d}",
        "To": "+15005550006",
        "Body": f"Where is my order? #{n}",
        "NumMedia": "0",
    }


@dataclass
class Refusal:
    status: int
    retry_after: int | None
    body: dict


@dataclass
class SmsLoad:
    """A Twilio-like sender: posts SMS webhooks at a steady pace; a 503 is retried, as Twilio does,
    until accepted. `accepted` holds every MessageSid answered 200."""

    server_url: str
    auth_token: str
    per_second: float = 30.0
    accepted: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    waiting: list[dict] = field(default_factory=list)
    unexpected: list[tuple[int, str]] = field(default_factory=list)
    sent: int = 0

    async def _post(self, client: httpx.AsyncClient, params: dict) -> bool:
        signature = RequestValidator(self.auth_token).compute_signature(PUBLIC_URL + SMS_PATH, params)
        try:
            response = await client.post(
                SMS_PATH,
                content=urlencode(params),
                headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
            )
        except httpx.HTTPError:
            self.waiting.append(params)
            return False
        if response.status_code == 200:
            self.accepted.append(params["MessageSid"])
            return True
        if response.status_code == 503:
            retry = response.headers.get("retry-after")
            self.refusals.append(Refusal(503, int(retry) if retry else None, response.json()))
        else:
            self.unexpected.append((response.status_code, response.text[:200]))
        self.waiting.append(params)
        return False

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.server_url, timeout=30) as client:
            while not stop.is_set():
                if self.waiting and self.sent % 5 == 0:  # retries go along with new traffic
                    await self._post(client, self.waiting.pop(0))
                self.sent += 1
                await self._post(client, sms_params(self.sent))
                await asyncio.sleep(1 / self.per_second)  # the sender's pace

    async def retry_until_accepted(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.server_url, timeout=30) as client:
            while self.waiting:
                assert time.monotonic() < deadline, f"{len(self.waiting)} messages never accepted"
                params = self.waiting.pop(0)
                if not await self._post(client, params):
                    await asyncio.sleep(0.2)


class ReadyWatch:
    """Polls `/ready` all along; every answer is kept (a request that hung past 5 s fails the test)."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.answers: list[tuple[int, dict]] = []
        self.failures: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.server_url, timeout=5) as client:
            while not stop.is_set():
                try:
                    response = await client.get("/ready")
                    self.answers.append((response.status_code, response.json()))
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                await asyncio.sleep(0.2)  # polling pace

    def saw(self, check: str, contains: str) -> bool:
        return any(status == 503 and contains in str(body.get(check, "")) for status, body in self.answers)

    def saw_wrong(self, check: str) -> dict | None:
        """The first 503 whose `check` was not "ok"."""
        return next((body for status, body in self.answers if status == 503 and body.get(check) != "ok"), None)


@contextlib.asynccontextmanager
async def running(*tasks_of):
    """Runs `coroutine_fn(stop)` for each argument until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(fn(stop)) for fn in tasks_of]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Polls `predicate()` (sync or async) until true; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(interval)


# -- what was recorded -----------------------------------------------------------------------------


def recorded_ids(database_url: str) -> set:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return {r[0] for r in conn.execute("SELECT interaction_id FROM sb_processed")}


def caught_up(server) -> bool:
    """Every read model has applied the whole log."""
    store = server.sb.open_store()
    top = store.max_position()
    positions = ProjectionRunner(store).positions()
    return bool(positions) and all(p >= top for p in positions.values())


async def all_recorded(server, database_url: str, sids: list[str]) -> bool:
    wanted = {interaction_id("sms", sid) for sid in sids}
    try:
        done = wanted <= await asyncio.to_thread(recorded_ids, database_url)
        return done and await asyncio.to_thread(caught_up, server)
    except psycopg.OperationalError:
        return False


@dataclass
class Verdict:
    accepted: int
    recorded_once: int
    recorded_twice: list
    missing: list
    timeline_missing: list
    dead_letters: int
    quarantined: int


async def verdict(server, database_url: str, names: Names, sids: list[str]) -> Verdict:
    wanted = {interaction_id("sms", sid) for sid in sids}

    def from_database() -> tuple[Counter, set, int]:
        store = server.sb.open_store()
        seen: Counter = Counter()
        after = 0
        while batch := store.read(after, 2000):
            for position, event, _redacted in batch:
                if isinstance(event, InteractionRecorded):
                    seen[event.interaction_id] += 1
                after = position
        with psycopg.connect(database_url) as conn:
            timeline = {r[0] for r in conn.execute("SELECT interaction_id FROM proj_timeline")}
            quarantined = conn.execute("SELECT count(*) FROM sb_quarantine").fetchone()[0]
        return seen, timeline, quarantined

    seen, timeline, quarantined = await asyncio.to_thread(from_database)
    nc = await nats.connect(server.settings.nats_url)
    try:
        dead = (await nc.jetstream().stream_info(names.deadletters)).state.messages
    finally:
        await nc.close()
    return Verdict(
        accepted=len(wanted),
        recorded_once=sum(1 for i in wanted if seen[i] == 1),
        recorded_twice=[i for i in wanted if seen[i] > 1],
        missing=[i for i in wanted if seen[i] == 0],
        timeline_missing=[i for i in wanted if i not in timeline],
        dead_letters=dead,
        quarantined=quarantined,
    )


def assert_nothing_lost(v: Verdict) -> None:
    assert v.accepted > 0
    assert v.missing == [], f"{len(v.missing)} accepted interactions never recorded"
    assert v.recorded_twice == [], f"{len(v.recorded_twice)} interactions recorded twice"
    assert v.recorded_once == v.accepted
    assert v.timeline_missing == [], f"{len(v.timeline_missing)} recorded but not on the timeline"
    assert v.dead_letters == 0, f"{v.dead_letters} interactions dead-lettered"
    assert v.quarantined == 0, f"{v.quarantined} events quarantined"


async def redeliveries(server) -> int:
    """Deliveries by the core's consumer beyond the first of each interaction, over the whole test:
    its consumer sequence counts every delivery, its stream sequence the interactions delivered (the
    consumer reads the whole SB_INTERACTIONS from sequence 1)."""
    from services.core.consumer import DURABLE  # noqa: PLC0415

    info = await server.sb.jetstream().consumer_info(server.sb.names.interactions, DURABLE)
    return info.delivered.consumer_seq - info.delivered.stream_seq
