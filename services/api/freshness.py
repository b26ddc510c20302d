"""Read your writes: a GET on the agent API with `Sb-Min-Position: N` answers once every read model
has applied the event log up to position N (the `position` a command's response carried), waiting at
most `MAX_WAIT_SECONDS`; after that 503 with `Retry-After`, and 400 for a header that is not a
non-negative integer.

How far the read models are is their tracking rows (the projector stores a projection's position in
the transaction that writes its view, see projections/runner.py). One watcher per process reads them
for every waiting request at once: a single indexed query a tick, ticks a few milliseconds apart
while the read models move and backing off to `_SLOWEST_TICK` while they do not, and no query at all
when nobody waits. A request whose token is missing or wrong does not wait: the handler answers it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re

import msgspec
from psycopg import sql

from projections.runner import ProjectionRunner
from services.api.auth import authenticate
from services.platform.logs import get_logger

log = get_logger(__name__)

HEADER = "sb-min-position"
MAX_WAIT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1
_FASTEST_TICK = 0.005
_SLOWEST_TICK = 0.1
_POSITION = re.compile(rb"[0-9]{1,18}")  # below 2**63: what a bigint position can be


class ReadModelClock:
    """Where the slowest read model stands, and futures for the requests waiting for a position."""

    def __init__(self, pool, tracking_table: str, names: list[str]):
        self.pool = pool
        self.names = names
        # For each read model the greatest position it stored (an index scan per name, however many
        # tracking rows the projector has written); a read model with none yet stands at 0.
        self.query = sql.SQL(
            "SELECT min(COALESCE((SELECT max(t.notification_id) FROM {0} t WHERE t.application_name = n), 0)) "
            "FROM unnest(%s::text[]) AS n"
        ).format(sql.Identifier(tracking_table))
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # heap: lowest position first
        self._order = itertools.count()
        self._task: asyncio.Task | None = None

    async def position(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.query, (self.names,))
            row = await cur.fetchone()
        return int(row[0] or 0)

    async def reached(self, target: int, timeout: float = MAX_WAIT_SECONDS) -> bool:
        """Whether every read model reached `target` within `timeout` seconds."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (target, next(self._order), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            future.cancel()  # a no-op when done; the watcher drops cancelled entries

    async def _watch(self) -> None:
        tick = _FASTEST_TICK
        last = -1
        while self._waiting:
            try:
                now = await self.position()
            except Exception:  # noqa: BLE001 — the database is away: the waiters time out (503), we retry
                log.warning("read_model_position_unavailable")
                now = -1
            while self._waiting and (self._waiting[0][2].done() or self._waiting[0][0] <= now):
                _, _, future = heapq.heappop(self._waiting)
                if not future.done():
                    future.set_result(None)
            if not self._waiting:
                return
            # Moving: look again soon, the next batch is likely close. Still: back off.
            tick = _FASTEST_TICK if now > last else min(tick * 2, _SLOWEST_TICK)
            last = max(last, now)
            await asyncio.sleep(tick)


def clock_of(app) -> ReadModelClock:
    clock = getattr(app.state, "read_model_clock", None)
    if clock is None:
        services = app.state.services
        runner = ProjectionRunner(services.store)
        clock = ReadModelClock(
            services.pool,
            runner.recorder.tracking_table_name,
            [runner.tracking_name(p) for p in runner.projections],
        )
        app.state.read_model_clock = clock
    return clock


def _error(status: int, code: str, detail: str, headers: tuple = ()) -> tuple[dict, bytes]:
    body = msgspec.json.encode({"error": code, "detail": detail})
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    return start, body


class ReadYourWrites:
    """ASGI middleware: holds a GET on /api/v1 carrying `Sb-Min-Position` until the read models reached it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] == "http"
            and scope.get("method") in ("GET", "HEAD")
            and scope.get("path", "").startswith("/api/v1/")
        ):
            wanted = [v for k, v in scope.get("headers") or () if k == b"sb-min-position"]
            if wanted:
                refusal = await self._hold(scope, wanted)
                if refusal is not None:
                    start, body = refusal
                    await send(start)
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    async def _hold(self, scope, wanted: list[bytes]) -> tuple[dict, bytes] | None:
        value = wanted[0].strip()
        if len(wanted) > 1 or not _POSITION.fullmatch(value):
            return _error(400, "malformed", "Sb-Min-Position must be one non-negative integer (a command's position)")
        target = int(value)
        app = scope["app"]
        if app.state.services.store is None or not await self._authenticated(app, scope):
            return None  # not ours to hold: the handler answers 401
        if await clock_of(app).reached(target):
            return None
        return _error(
            503,
            "unavailable",
            f"the read models have not reached position {target} yet; try again",
            ((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),),
        )

    @staticmethod
    async def _authenticated(app, scope) -> bool:
        """Only a caller with a valid token is held (and so may keep a connection open for seconds)."""
        header = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
        try:
            scheme, _, token = header.decode("ascii").partition(" ")
        except UnicodeDecodeError:
            return False
        if scheme.lower() != "bearer" or not token.strip():
            return False
        services = app.state.services
        return (
            await authenticate(services.pool, services.settings.admin_token, token.strip(), services.principals)
            is not None
        )
