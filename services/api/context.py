"""What every handler of the HTTP surface stands on: the `Services` the composition root built, and
who is asking (bearer tokens and roles).

The channel adapters reach the same object through `request.app.state.services` without importing
this module (channels sit below the entry points).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from litestar import Request
from litestar.connection import WebSocket
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from channels.blobs import BlobStore
from channels.chat import ChatSessions
from channels.chat_gateway import ChatGateway
from channels.email.pool import EmailParser
from channels.publish import Publisher
from services.api.auth import Principal, authenticate
from services.api.principals import PrincipalCache
from services.platform.clock import Clock
from services.platform.eventstore.store import EventStore
from services.platform.settings import Settings
from services.platform.streams import Names


@dataclass
class Services:
    settings: Settings
    names: Names
    nc: NatsClient | None = None
    js: JetStreamContext | None = None
    pool: AsyncConnectionPool | None = None
    store: EventStore | None = None
    publisher: Publisher | None = None
    chat: ChatSessions | None = None
    # Per-process parts the gateway opens on first use (or at start, the chat gateway); the channel
    # adapters reach them duck-typed, since channels sit below the entry points.
    chat_gateway: ChatGateway | None = None
    email_parser: EmailParser | None = None
    blobs: BlobStore | None = None
    blobs_opening: asyncio.Future[BlobStore] | None = None
    asyncapi: bytes | None = None
    # Recently authenticated bearer tokens (emptied by any revocation); None: every request looks up.
    principals: PrincipalCache | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def auth_changed(self) -> None:
        """This process just ended or changed a principal (a logout, an agent disabled): what it cached
        goes now, not when the database's notice of that commit comes back to its listener (a request
        in between, on the same keep-alive connection, was still served from the cache)."""
        if self.principals is not None:
            self.principals.forget_all()

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    @property
    def clock(self) -> Clock:
        """The time commands are recorded at: the real clock, or SWITCHBOARD_CLOCK_FILE's (tests, demos)."""
        return Clock(self.settings.clock_file)


def svc(request: Request | WebSocket) -> Services:
    return request.app.state.services


def bearer_token(request: Request | WebSocket) -> str | None:
    """The token of an `Authorization: Bearer` header. Tokens are read from nowhere else: a token in
    a URL ends up in logs, proxies and browser history (SSE uses single-use tickets instead)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def allowed(principal: Principal | None, roles: tuple[str, ...]) -> Principal:
    if principal is None:
        raise NotAuthorizedException("invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if principal.role not in roles:
        raise PermissionDeniedException(f"role {principal.role} may not do this")
    return principal


async def require(request: Request, roles: tuple[str, ...]) -> Principal:
    token = bearer_token(request)
    if not token:
        raise NotAuthorizedException("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    services = svc(request)
    return allowed(await authenticate(services.pool, services.settings.admin_token, token, services.principals), roles)


def page_limit(limit: int) -> int:
    """The `limit` of a list request, checked (400 outside 1..500)."""
    if not 1 <= limit <= 500:
        raise HTTPException(status_code=400, detail="limit must be between 1 and 500")
    return limit


def now(request: Request | None = None) -> datetime:
    """The time of a command: the services' clock when the request is given (see Services.clock)."""
    if request is not None:
        return svc(request).clock.now()
    return datetime.now(UTC)
