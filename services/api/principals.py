"""The principals an API process has recently authenticated, so that a read costs no token lookup.

Every request used to look its bearer token up in PostgreSQL: a pool checkout and a round trip,
about as much as the read itself for a profile or a timeline page. The cache keeps the answer of a
positive lookup (a `Principal`, by the token's SHA-256) for at most `ttl` seconds and at most
`max_entries` tokens; a token never seen, or one refused, is always looked up.

Revocation is honoured two ways:
- at once: the tables that can end or change a principal (`sb_tokens`, `sb_agent_sessions`,
  `sb_agent_credentials`) NOTIFY at commit (services/platform/schema.py: `auth_change_notices`),
  and every API process LISTENs on its own connection and empties its cache on a notice. The cache
  is used only while that connection is listening: before it listens, after it broke and until it
  listens again, every request is looked up as before. The process that made the change (a logout,
  an agent disabled through its API) does not wait for its own notice: it empties its cache as the
  request ends (`Services.auth_changed`), so its next request is refused even on the same connection;
- at the latest after `ttl` seconds, whatever happened to the notice (the bound: a revoked token or
  a disabled agent's session is refused at most `ttl` seconds after the change was committed).

A session also ends by itself, idle or too old: its entry never outlives the `valid_for` its lookup
reported (the earlier of its absolute and idle expiry), so expiry is exact, not `ttl` late.

A lookup that was under way when a notice came is not cached (`generation`): it may have read the
row before the change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from services.platform.logs import get_logger
from services.platform.schema import AUTH_CHANGED_CHANNEL

# services.api.auth.Principal (not imported: auth imports this module's type).
Principal = Any

log = get_logger(__name__)

# Short: the bound on how long a revoked token may still be served if a notice went missing.
DEFAULT_TTL_SECONDS = 5.0
# Tokens in use at once in one process (agents, supervisors, connectors): far fewer than this.
DEFAULT_MAX_ENTRIES = 4096
RECONNECT_SECONDS = 1.0


class PrincipalCache:
    """A bounded map of token digest -> (Principal, expiry), emptied on every auth change notice."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        # Bumped by every notice (and by losing the listening connection): a lookup started under an
        # older generation is not stored.
        self.generation = 0
        # Whether notices are heard now; without them nothing is served from the cache.
        self.listening = False
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Principal | None:
        if not self.listening:
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, expires = entry
        if self.clock() >= expires:
            del self._entries[digest]
            return None
        return principal

    def put(self, digest: bytes, principal: Principal, generation: int) -> None:
        if not self.listening or generation != self.generation:
            return
        if digest not in self._entries and len(self._entries) >= self.max_entries:
            self._evict()
        ttl = self.ttl
        valid_for = getattr(principal, "valid_for", None)
        if valid_for is not None:  # a session that ends by itself sooner is not served past its end
            if valid_for <= 0:
                return
            ttl = min(ttl, valid_for)
        self._entries[digest] = (principal, self.clock() + ttl)

    def _evict(self) -> None:
        now = self.clock()
        for key in [k for k, (_, expires) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= self.max_entries:  # still full: the oldest insertion goes
            del self._entries[next(iter(self._entries))]

    def forget_all(self) -> None:
        self.generation += 1
        self._entries.clear()

    async def lookup(self, digest: bytes, look_up: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
        """The cached principal of `digest`, else `look_up()`'s answer (cached when there is one)."""
        cached = self.get(digest)
        if cached is not None:
            return cached
        generation = self.generation
        principal = await look_up()
        if principal is not None:
            self.put(digest, principal, generation)
        return principal

    # -- the notices ---------------------------------------------------------------------------------

    async def start(self, conninfo: str) -> None:
        """Listens for auth change notices on a connection of its own (reconnecting for ever); returns
        once listening, or after 10 s without (the cache then stays off until it listens)."""
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(conninfo, ready), name="principal-cache")
        try:
            await asyncio.wait_for(ready.wait(), 10)
        except TimeoutError:
            log.warning("principal_cache_not_listening")

    async def stop(self) -> None:
        self.listening = False
        self.forget_all()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _listen(self, conninfo: str, ready: asyncio.Event) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {AUTH_CHANGED_CHANNEL}")
                    self.forget_all()  # whatever changed while nobody listened
                    self.listening = True
                    ready.set()
                    async for _notice in conn.notifies():
                        self.forget_all()
            except psycopg.Error as exc:
                log.warning("principal_cache_listener_lost", error=type(exc).__name__)
            finally:
                self.listening = False
                self.forget_all()
            await asyncio.sleep(RECONNECT_SECONDS)
