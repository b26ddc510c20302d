"""What the fault tests share: servers of their own to break, traffic through the real gateway, and
the checks "nothing lost, nothing twice, nothing dead-lettered, the read side caught up".

Every test here starts its OWN embedded NATS and PostgreSQL (the session's servers are shared with
the rest of the suite and must never be stopped), freezes, stops or fills them under load, and
watches `/ready` meanwhile. Used by tests/faults/test_*.py and by the soak (tests/faults/soak.py).
The verdict on what was recorded, and the tail every one of them ends with (`settle`), are
tests/fixtures/outcome.py's; a whole Switchboard in the process is tests/fixtures/recorded.py's
`running_server` (here `switchboard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

from services.platform.embedded import EmbeddedNats, EmbeddedPostgres
from services.platform.settings import Settings, ensure_secrets, load_settings
from tests.fixtures.outcome import (  # noqa: F401 -- the fault tests' names for them
    CATCH_UP_SECONDS,
    Verdict,
    all_recorded,
    assert_nothing_lost,
    redeliveries,
    settle,
    verdict,
    wait_for,
)
from tests.fixtures.recorded import running_server as switchboard  # noqa: F401

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
                    if not response.headers.get("content-type", "").startswith("application/json"):
                        # Not an answer /ready gives: the failure names what came back instead.
                        self.failures.append(f"{response.status_code} {response.text[:200]!r}")
                    else:
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
