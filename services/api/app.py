"""The HTTP surface: channel endpoints (gateway role) and the agent API and console (api role).

Both are Litestar route groups over one `Services` object built by the composition root; a process
serves the groups of the roles it runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.connection import WebSocket
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent
from litestar.status_codes import HTTP_200_OK
from psycopg_pool import AsyncConnectionPool

from channels.chat import ChatSessions
from channels.chat_gateway import CHAT_HANDLERS, ChatTokenMiddleware
from channels.errors import ChannelError
from channels.proxies import trusted_networks
from channels.publish import Publisher
from services.api import queries
from services.api.auth import (READ, SUPERVISE, TICKET_TTL_SECONDS, WRITE, Principal, authenticate,
                               authenticate_hash, issue_ticket, redeem_ticket)
from services.api.headers import SecurityHeadersMiddleware
from services.core.commands import NotFound, case_state, run_case_command
from services.api.hygiene import RejectControlCharacters
from services.domain.aggregate import DomainError
from services.domain.identity import InvalidIdentity, normalize
from services.platform.eventstore.store import ConcurrencyError, EventStore
from services.platform.logs import get_logger
from services.platform.settings import Settings
from services.platform.streams import Names
from events.case import Priority
from events.interactions import CHANNELS, IDENTITY_KINDS, Channel, Identity, IdentityKind
from events.sanitize import sanitize
from channels.blobs import blobs_of

log = get_logger(__name__)
STATIC = Path(__file__).parent / "static"
CaseStatus = Literal["open", "pending", "snoozed", "resolved"]
CASE_STATUSES = get_args(CaseStatus)


@dataclass
class Services:
    settings: Settings
    names: Names
    nc: Any = None
    js: Any = None
    pool: AsyncConnectionPool | None = None
    store: EventStore | None = None
    publisher: Publisher | None = None
    chat: ChatSessions | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    asyncapi: bytes | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


def svc(request: Request | WebSocket) -> Services:
    return request.app.state.services


def error_body(code: str, detail: str) -> dict:
    return {"error": code, "detail": detail}


def channel_error_handler(request: Request, exc: ChannelError) -> Response:
    svc(request).count(f"channel_rejected_{exc.code}")
    return Response(error_body(exc.code, exc.detail), status_code=exc.status, media_type=MediaType.JSON)


_HTTP_CODES = {400: "malformed", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "unprocessable"}


def http_error_handler(request: Request, exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 400 and getattr(exc, "extra", None):
        detail = f"{detail}: {exc.extra}"
    return Response(error_body(code, detail), status_code=exc.status_code, media_type=MediaType.JSON,
                    headers=getattr(exc, "headers", None))


def domain_error_handler(request: Request, exc: DomainError) -> Response:
    return Response(error_body("rejected", str(exc)), status_code=409, media_type=MediaType.JSON)


def not_found_handler(request: Request, exc: NotFound) -> Response:
    return Response(error_body("not_found", str(exc)), status_code=404, media_type=MediaType.JSON)


def conflict_handler(request: Request, exc: ConcurrencyError) -> Response:
    """Writers kept racing on one aggregate through every retry: the client may try again."""
    return Response(error_body("conflict", "the case changed while the command ran; retry"), status_code=409,
                    media_type=MediaType.JSON, headers={"Retry-After": "1"})


def invalid_cursor_handler(request: Request, exc: queries.InvalidCursor) -> Response:
    return Response(error_body("malformed", "invalid cursor"), status_code=400, media_type=MediaType.JSON)


def bearer_token(request: Request | WebSocket) -> str | None:
    """The token of an `Authorization: Bearer` header. Tokens are read from nowhere else: a token in
    a URL ends up in logs, proxies and browser history (SSE uses single-use tickets instead)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _allowed(principal: Principal | None, roles: tuple[str, ...]) -> Principal:
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
    return _allowed(await authenticate(services.pool, services.settings.admin_token, token), roles)


# -- health ----------------------------------------------------------------------------------------


@get("/health", include_in_schema=True, summary="Liveness")
async def health() -> dict:
    return {"status": "ok"}


@get("/ready", summary="Readiness: NATS and PostgreSQL reachable")
async def ready(request: Request) -> Response:
    services = svc(request)
    checks = {"nats": False, "postgres": False}
    try:
        checks["nats"] = bool(services.nc and services.nc.is_connected)
        if checks["nats"]:
            await services.js.account_info()
    except Exception:  # noqa: BLE001
        checks["nats"] = False
    try:
        async with services.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
        checks["postgres"] = True
    except Exception:  # noqa: BLE001
        checks["postgres"] = False
    ok = all(checks.values())
    return Response({"status": "ready" if ok else "not_ready", **checks}, status_code=200 if ok else 503)


@get("/metrics", media_type=MediaType.TEXT, summary="Prometheus metrics")
async def prometheus(request: Request) -> str:
    lines = []
    for name, value in sorted(svc(request).counters.items()):
        metric = f"switchboard_{name}_total"
        lines.append(f"# TYPE {metric} counter\n{metric} {value}")
    lines += await _quarantine_gauge(svc(request))
    return "\n".join(lines) + "\n"


async def _quarantine_gauge(services: Services) -> list[str]:
    """`switchboard_quarantined_events{consumer=...}`: events a projection or the relay set aside."""
    if services.pool is None:
        return []
    try:
        async with services.pool.connection(timeout=2.0) as conn:
            rows = await (await conn.execute("SELECT consumer, count(*) FROM sb_quarantine GROUP BY consumer")).fetchall()
    except Exception:  # noqa: BLE001 — metrics must answer even when PostgreSQL does not
        return []
    metric = "switchboard_quarantined_events"
    return [f"# TYPE {metric} gauge", *(f'{metric}{{consumer="{consumer}"}} {n}' for consumer, n in sorted(rows))]


@get("/asyncapi.json", media_type=MediaType.JSON, summary="AsyncAPI document for every NATS subject")
async def asyncapi(request: Request) -> Response:
    return Response(svc(request).asyncapi or b"{}", media_type=MediaType.JSON)


# -- chat channel: channels/chat_gateway.py ------------------------------------------------------


# -- agent API -------------------------------------------------------------------------------------


@get("/api/v1/customers/lookup", summary="The customer holding an identity")
async def lookup_customer(request: Request, kind: FromQuery[IdentityKind], value: FromQuery[str]) -> dict:
    await require(request, READ)
    if kind not in IDENTITY_KINDS:
        raise HTTPException(status_code=400, detail=f"kind must be one of {', '.join(IDENTITY_KINDS)}")
    try:
        identity = normalize(Identity(kind, value))
    except InvalidIdentity as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    services = svc(request)
    blind = services.store.master.blind_index(identity.kind, identity.value)
    async with services.pool.connection() as conn:
        cur = await conn.execute("SELECT customer_id FROM sb_identities WHERE blind = %s", (blind,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound("no customer holds that identity")
        profile = await queries.customer_profile(conn, row[0])
    if profile is None:
        raise NotFound("customer not projected yet")
    return profile


@get("/api/v1/customers", summary="Customers matching a name or identity")
async def search_customers(request: Request, q: FromQuery[str] = "", limit: FromQuery[int] = 50,
                           cursor: FromQuery[str | None] = None) -> dict:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        return await queries.search_customers(conn, q, _limit(limit), cursor)


@get("/api/v1/customers/{customer_id:uuid}", summary="The 360° profile")
async def get_customer(request: Request, customer_id: FromPath[UUID]) -> dict:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        profile = await queries.customer_profile(conn, customer_id)
    if profile is None:
        raise NotFound(f"customer {customer_id} not found")
    return profile


@get("/api/v1/customers/{customer_id:uuid}/timeline", summary="Every touchpoint, newest first")
async def get_timeline(request: Request, customer_id: FromPath[UUID], limit: FromQuery[int] = 50,
                       cursor: FromQuery[str | None] = None, channel: FromQuery[Channel | None] = None) -> dict:
    await require(request, READ)
    if channel is not None and channel not in CHANNELS:
        raise HTTPException(status_code=400, detail=f"channel must be one of {', '.join(CHANNELS)}")
    async with svc(request).pool.connection() as conn:
        survivor = await queries.survivor_of(conn, customer_id)
        if survivor is None:
            raise NotFound(f"customer {customer_id} not found")
        return await queries.timeline(conn, survivor, _limit(limit), cursor, channel)


def _limit(limit: int) -> int:
    if not 1 <= limit <= 500:
        raise HTTPException(status_code=400, detail="limit must be between 1 and 500")
    return limit


@get("/api/v1/attachments/{sha256:str}", summary="The bytes of an attachment, by its SHA-256",
     media_type="application/octet-stream")
async def get_attachment(request: Request) -> Response:
    await require(request, READ)
    sha256 = request.path_params["sha256"].lower()
    data = await (await blobs_of(svc(request))).get(sha256)
    if data is None:
        raise NotFound("no attachment with that sha256")
    # Served as opaque bytes, never rendered: an attachment is the customer's content, not ours.
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{sha256}"',
                             "X-Content-Type-Options": "nosniff"})


@get("/api/v1/cases", summary="Case queues")
async def get_cases(request: Request, queue: FromQuery[str | None] = None, status: FromQuery[CaseStatus | None] = None,
                    assignee: FromQuery[str | None] = None, limit: FromQuery[int] = 50,
                    cursor: FromQuery[str | None] = None) -> dict:
    await require(request, READ)
    if status is not None and status not in CASE_STATUSES:
        raise HTTPException(status_code=400, detail=f"status must be one of {', '.join(CASE_STATUSES)}")
    async with svc(request).pool.connection() as conn:
        return await queries.list_cases(conn, queue, status, assignee, _limit(limit), cursor)


@get("/api/v1/cases/{case_id:uuid}", summary="One case with its messages")
async def get_case(request: Request, case_id: FromPath[UUID]) -> dict:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        view = await queries.case_view(conn, case_id)
    if view is None:
        raise NotFound(f"case {case_id} not found")
    return view


# Command bodies are typed parameters: Litestar decodes and validates them (400 otherwise) before
# the handler runs, and the OpenAPI document describes them. Every string in them then goes through
# the one sanitiser (`events.sanitize`), as every text entering Switchboard does.
class ReplyBody(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class AssignBody(msgspec.Struct):
    assignee: str | None = None


class NoteBody(msgspec.Struct):
    text: str


class TagsBody(msgspec.Struct):
    tags: list[str]


class PriorityBody(msgspec.Struct):
    priority: Priority


class SnoozeBody(msgspec.Struct):
    until: Annotated[datetime, msgspec.Meta(tz=True)]  # a wall-clock time without a zone is ambiguous


async def _case_command(request: Request, case_id: UUID, command) -> dict:
    services = svc(request)
    case = await asyncio.to_thread(run_case_command, services.store, case_id, command)
    state = case_state(case)
    async with services.pool.connection() as conn:
        view = await queries.case_view(conn, case_id)
    state["messages"] = view["messages"] if view else []
    state["sla_due_at"] = view["sla_due_at"] if view else None
    return state


@post("/api/v1/cases/{case_id:uuid}/reply", status_code=HTTP_200_OK, summary="Reply through the case's channel")
async def reply(request: Request, case_id: FromPath[UUID], data: JSONBody[ReplyBody]) -> dict:
    principal = await require(request, WRITE)
    data = sanitize(data)
    if len(data.text) > 64 * 1024:
        raise HTTPException(status_code=413, detail="reply longer than 64 KiB")
    reply_id = _reply_id(case_id, request.headers.get("idempotency-key"))
    result = await _case_command(request, case_id, lambda c: c.request_reply(reply_id, data.text, principal.name, _now()))
    result["reply_id"] = str(reply_id)
    return result


def _reply_id(case_id: FromPath[UUID], idempotency_key: str | None) -> UUID:
    import uuid  # noqa: PLC0415

    if idempotency_key:
        return uuid.uuid5(case_id, "reply:" + idempotency_key)
    return uuid.uuid4()


@post("/api/v1/cases/{case_id:uuid}/assign", status_code=HTTP_200_OK)
async def assign(request: Request, case_id: FromPath[UUID], data: JSONBody[AssignBody]) -> dict:
    principal = await require(request, WRITE)
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.assign(data.assignee, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/resolve", status_code=HTTP_200_OK)
async def resolve(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    return await _case_command(request, case_id, lambda c: c.resolve(principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/reopen", status_code=HTTP_200_OK)
async def reopen(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    return await _case_command(request, case_id, lambda c: c.reopen(principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/notes", status_code=HTTP_200_OK)
async def add_note(request: Request, case_id: FromPath[UUID], data: JSONBody[NoteBody]) -> dict:
    import uuid  # noqa: PLC0415

    principal = await require(request, WRITE)
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.add_note(uuid.uuid4(), data.text, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/tags", status_code=HTTP_200_OK)
async def add_tags(request: Request, case_id: FromPath[UUID], data: JSONBody[TagsBody]) -> dict:
    principal = await require(request, WRITE)
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.tag(data.tags, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/priority", status_code=HTTP_200_OK)
async def prioritize(request: Request, case_id: FromPath[UUID], data: JSONBody[PriorityBody]) -> dict:
    principal = await require(request, SUPERVISE + ("agent",))
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.prioritize(data.priority, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/snooze", status_code=HTTP_200_OK)
async def snooze(request: Request, case_id: FromPath[UUID], data: JSONBody[SnoozeBody]) -> dict:
    principal = await require(request, WRITE)
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.snooze(data.until, principal.name, _now()))


class EventsTicket(msgspec.Struct):
    ticket: str
    expires_in: int


@post("/api/v1/events/ticket", status_code=201, summary="A single-use ticket to open the event stream with",
      description="For clients that cannot send headers (a browser's EventSource): pass it as "
                  "`GET /api/v1/events?ticket=...` within `expires_in` seconds; it works once.")
async def events_ticket(request: Request) -> Response[EventsTicket]:
    principal = await require(request, READ)
    ticket = await issue_ticket(svc(request).pool, principal)
    return Response(EventsTicket(ticket, TICKET_TTL_SECONDS), status_code=201, headers={"Cache-Control": "no-store"})


HEARTBEAT_SECONDS = 15.0


@get("/api/v1/events", summary="Server-Sent Events: timeline items and case changes, live",
     description="Authorization: Bearer, or `ticket` from POST /api/v1/events/ticket. The stream ends "
                 "(after a `revoked` event) soon after its token is revoked.")
async def live_events(request: Request, ticket: FromQuery[str | None] = None) -> ServerSentEvent:
    services = svc(request)
    if bearer_token(request) is None and ticket is not None:
        principal = await redeem_ticket(services.pool, services.settings.admin_token, ticket)
        if principal is None:
            raise NotAuthorizedException("invalid, used or expired ticket")
        _allowed(principal, READ)
    else:
        principal = await require(request, READ)
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)

    async def on_msg(msg) -> None:
        for item in msgspec.json.decode(msg.data):
            if not queue.full():
                queue.put_nowait(item)

    sub = await services.nc.subscribe(services.names.live_subject, cb=on_msg)
    recheck = max(0.05, services.settings.sse_recheck_seconds)
    loop = asyncio.get_running_loop()

    async def still_valid() -> bool:
        try:
            return await authenticate_hash(services.pool, services.settings.admin_token, principal.token_hash) is not None
        except Exception:  # noqa: BLE001 — cannot tell: end the stream, the client reconnects and is checked anew
            log.warning("sse_token_check_failed", role=principal.role)
            return False

    async def stream():
        try:
            yield {"event": "ready", "data": "{}"}
            next_check = loop.time() + recheck
            next_beat = loop.time() + HEARTBEAT_SECONDS
            while True:
                now = loop.time()
                if now >= next_check:
                    if not await still_valid():
                        log.info("sse_stream_ended_revoked", role=principal.role)
                        yield {"event": "revoked", "data": msgspec.json.encode(
                            error_body("unauthorized", "token revoked")).decode()}
                        return
                    next_check = loop.time() + recheck
                if now >= next_beat:
                    yield {"comment": "keep-alive"}
                    next_beat = now + HEARTBEAT_SECONDS
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=max(0.01, min(next_check, next_beat) - now))
                except TimeoutError:
                    continue
                yield {"event": item["type"], "data": msgspec.json.encode(item).decode()}
        finally:
            await sub.unsubscribe()

    return ServerSentEvent(stream(), headers={"Cache-Control": "no-store"})


@get("/api/v1/metrics", summary="Contact-centre metrics over a period")
async def cc_metrics(request: Request, from_: Annotated[str | None, QueryParameter(name="from")] = None,
                     to: FromQuery[str | None] = None) -> dict:
    await require(request, READ)
    end = _parse_time(to) or _now()
    start = _parse_time(from_) or end - timedelta(days=7)
    async with svc(request).pool.connection() as conn:
        return await queries.metrics(conn, start, end)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(status_code=400, detail="times are ISO 8601") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


@get("/", media_type=MediaType.HTML, include_in_schema=False)
async def console() -> Response:
    return Response((STATIC / "console.html").read_bytes(), media_type=MediaType.HTML)


# The console's script and style are files of their own, so its Content-Security-Policy can forbid
# every inline script and style (see services/api/headers.py).
@get("/console.js", include_in_schema=False)
async def console_js() -> Response:
    return Response((STATIC / "console.js").read_bytes(), media_type="text/javascript; charset=utf-8")


@get("/console.css", include_in_schema=False)
async def console_css() -> Response:
    return Response((STATIC / "console.css").read_bytes(), media_type="text/css; charset=utf-8")


GATEWAY_HANDLERS = list(CHAT_HANDLERS)
API_HANDLERS = [lookup_customer, search_customers, get_customer, get_timeline, get_cases, get_case, reply, assign,
                get_attachment, resolve, reopen, add_note, add_tags, prioritize, snooze, events_ticket, live_events,
                cc_metrics, console, console_js, console_css]
COMMON_HANDLERS = [health, ready, prometheus, asyncapi]


def build_app(services: Services, roles: tuple[str, ...], extra_handlers: list | None = None) -> Litestar:
    trusted_networks(services.settings.trusted_proxies)  # a malformed setting stops the start, not a request
    handlers = list(COMMON_HANDLERS)
    if "gateway" in roles:
        handlers += GATEWAY_HANDLERS + list(extra_handlers or [])
    if "api" in roles:
        handlers += API_HANDLERS
    app = Litestar(
        route_handlers=handlers,
        exception_handlers={ChannelError: channel_error_handler, HTTPException: http_error_handler,
                            DomainError: domain_error_handler, NotFound: not_found_handler,
                            queries.InvalidCursor: invalid_cursor_handler, ConcurrencyError: conflict_handler},
        openapi_config=OpenAPIConfig(title="Switchboard", version="1.0.0", path="/schema"),
        request_max_body_size=services.settings.max_body_bytes,
        middleware=[SecurityHeadersMiddleware, RejectControlCharacters,
                    *([ChatTokenMiddleware] if "gateway" in roles else [])],
        debug=False,
    )
    app.state.services = services
    return app
