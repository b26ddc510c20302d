"""`/ready`: what is wrong, within about two seconds, even while a dependency hangs.

Each dependency is probed by a task of its own, and the answer waits for it at most `PROBE_TIMEOUT`:
a PostgreSQL that is SIGSTOPped accepts connections and then never answers, which no libpq timeout
notices (the kernel still acknowledges every packet). A probe that has not finished is not
cancelled (cancelling a query asks the same hung server) and not started again while it runs: the
next `/ready` reports it as still pending, so a hung server costs one connection, not one per probe.

The body names every check: `"ok"` or the reason, e.g.
`{"status": "not_ready", "nats": "ok", "postgres": "timeout after 1.5s", "interactions": "ok"}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import psycopg

from services.api.context import Services
from services.platform.database import parse_database_url

PROBE_TIMEOUT = 1.5  # seconds; the whole answer (probes run side by side) stays under two
OK = "ok"


class _Probe:
    """One dependency's check: at most one attempt in flight; its last verdict."""

    def __init__(self, name: str, check: Callable[[], Awaitable[str]]):
        self.name = name
        self.check = check
        self.task: asyncio.Task[str] | None = None
        self.started = 0.0

    async def verdict(self) -> str:
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._guarded())
            self.started = time.monotonic()
        done, _ = await asyncio.wait({self.task}, timeout=PROBE_TIMEOUT)
        if done:
            if self.task.cancelled():  # e.g. its connection's loop callback cancelled under shutdown
                return "probe cancelled; asking again on the next /ready"
            return self.task.result()
        waited = time.monotonic() - self.started
        if waited <= PROBE_TIMEOUT + 0.1:
            return f"timeout after {PROBE_TIMEOUT}s"
        return f"timeout: no answer for {waited:.0f}s"

    async def _guarded(self) -> str:
        try:
            return await self.check()
        except Exception as exc:  # noqa: BLE001 — the reason is the answer
            return _reason(exc)


class Readiness:
    """The probes of one HTTP application's services."""

    def __init__(self, services: Services):
        self.services = services
        self.probes = [
            _Probe("nats", self._nats),
            _Probe("postgres", self._postgres),
            _Probe("interactions", self._interactions),
        ]

    async def report(self) -> tuple[bool, dict[str, str]]:
        verdicts = await asyncio.gather(*(p.verdict() for p in self.probes), return_exceptions=True)
        verdicts = [v if isinstance(v, str) else _reason(v) for v in verdicts]
        checks = {p.name: v for p, v in zip(self.probes, verdicts, strict=True)}
        if checks["nats"] != OK and checks["interactions"] != OK:
            checks["interactions"] = "unknown: NATS is not reachable"
        return all(v == OK for v in checks.values()), checks

    async def _nats(self) -> str:
        nc, js = self.services.nc, self.services.js
        if nc is None or js is None:
            return "not connected"
        if not nc.is_connected:
            return "reconnecting" if nc.is_reconnecting else "disconnected"
        await js.account_info()
        return OK

    async def _postgres(self) -> str:
        # A connection of its own, not the pool's: a pooled connection may be the one that hangs,
        # and a fresh one also proves the server accepts connections again after a restart.
        database = parse_database_url(self.services.settings.database_url or "")
        try:
            async with await psycopg.AsyncConnection.connect(
                database.conninfo, connect_timeout=5, autocommit=True
            ) as conn:
                await conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            # One line naming host and libpq's reason, never the password.
            return "unreachable: " + database.describe_failure(exc).removeprefix("cannot connect to PostgreSQL at ")
        return OK

    async def _interactions(self) -> str:
        """Whether the gateway can store: SB_INTERACTIONS not full (the core is behind, or the disk is)."""
        js = self.services.js
        if js is None or self.services.nc is None or not self.services.nc.is_connected:
            return "unknown: NATS is not reachable"
        publisher = self.services.publisher
        if publisher is not None and publisher.refusing:
            return f"refused the last interaction ({publisher.refusing}); the gateway answers 503"
        info = await js.stream_info(self.services.names.interactions)
        limit = info.config.max_bytes or -1
        if limit > 0 and info.state.bytes >= limit * 0.98:
            return f"stream full: {info.state.bytes} of {limit} bytes; the gateway answers 503"
        account = await js.account_info()
        store_limit = account.limits.max_storage if account.limits else -1
        if store_limit and store_limit > 0 and account.storage >= store_limit * 0.98:
            return f"JetStream storage full: {account.storage} of {store_limit} bytes; the gateway answers 503"
        return OK


# One Readiness per HTTP application's services (Services is an unhashable dataclass: keyed by id,
# holding the services so the id is not reused while the entry lives).
_by_services: dict[int, Readiness] = {}


def readiness(services: Services) -> Readiness:
    found = _by_services.get(id(services))
    if found is None or found.services is not services:
        found = _by_services[id(services)] = Readiness(services)
    return found


def _reason(exc: BaseException) -> str:
    """One line: the exception's class and the start of its message (NATS and JetStream errors carry
    no credentials; PostgreSQL's are described by `_postgres` itself)."""
    if isinstance(exc, TimeoutError):
        return f"timeout after {PROBE_TIMEOUT}s"
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
