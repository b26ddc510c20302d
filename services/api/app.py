"""The HTTP surface: channel endpoints (gateway role) and the agent API and console (api role).

Both are Litestar route groups over one `Services` object built by the composition root; a process
serves the groups of the roles it runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.connection import WebSocket
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent
from litestar.status_codes import HTTP_200_OK
from psycopg_pool import AsyncConnectionPool

from channels.chat import ChatSessions
from channels.chat_gateway import CHAT_HANDLERS, ChatTokenMiddleware
from channels.errors import ChannelError
from channels.publish import Publisher
from services.api import queries
from services.api.auth import READ, SUPERVISE, WRITE, Principal, authenticate
from services.api.commands import NotFound, case_state, run_case_command
from services.api.hygiene import RejectControlCharacters
from services.core.aggregate import DomainError
from services.core.identity import InvalidIdentity, normalize
from services.eventstore.store import EventStore
from services.logs import get_logger
from services.settings import Settings
from services.streams import Names
from events.interactions import CHANNELS, IDENTITY_KINDS, Identity
from events.sanitize import sanitize

log = get_logger(__name__)
STATIC = Path(__file__).parent / "static"


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


async def require(request: Request, roles: tuple[str, ...]) -> Principal:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.query_params.get("access_token")
    if not token:
        raise NotAuthorizedException("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    services = svc(request)
    principal = await authenticate(services.pool, services.settings.admin_token, token)
    if principal is None:
        raise NotAuthorizedException("invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if principal.role not in roles:
        raise PermissionDeniedException(f"role {principal.role} may not do this")
    return principal


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
async def lookup_customer(request: Request, kind: FromQuery[str], value: FromQuery[str]) -> dict:
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
                       cursor: FromQuery[str | None] = None, channel: FromQuery[str | None] = None) -> dict:
    await require(request, READ)
    if channel is not None and channel not in CHANNELS:
        raise HTTPException(status_code=400, detail=f"channel must be one of {', '.join(CHANNELS)}")
    async with svc(request).pool.connection() as conn:
        survivor = await queries.survivor_of(conn, customer_id)
        if survivor is None:
            raise NotFound(f"customer {customer_id} not found")
        try:
            return await queries.timeline(conn, survivor, _limit(limit), cursor, channel)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            raise HTTPException(status_code=400, detail="invalid cursor") from None


def _limit(limit: int) -> int:
    if not 1 <= limit <= 500:
        raise HTTPException(status_code=400, detail="limit must be between 1 and 500")
    return limit


@get("/api/v1/attachments/{sha256:str}", summary="The bytes of an attachment, by its SHA-256",
     media_type="application/octet-stream")
async def get_attachment(request: Request) -> Response:
    from channels.blobs import blobs_of  # noqa: PLC0415

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
async def get_cases(request: Request, queue: FromQuery[str | None] = None, status: FromQuery[str | None] = None,
                    assignee: FromQuery[str | None] = None, limit: FromQuery[int] = 50,
                    cursor: FromQuery[str | None] = None) -> dict:
    await require(request, READ)
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


class ReplyBody(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class AssignBody(msgspec.Struct):
    assignee: str | None = None


class NoteBody(msgspec.Struct):
    text: str


class TagsBody(msgspec.Struct):
    tags: list[str]


class PriorityBody(msgspec.Struct):
    priority: str


class SnoozeBody(msgspec.Struct):
    until: datetime


async def _decode(request: Request, cls):
    """A command's JSON body as `cls`, every string in it through the one sanitiser (`events.sanitize`)."""
    try:
        body = msgspec.json.decode(await request.body(), type=cls)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPException(status_code=400, detail=f"invalid body: {exc}") from None
    return sanitize(body)


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
async def reply(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    body = await _decode(request, ReplyBody)
    if len(body.text) > 64 * 1024:
        raise HTTPException(status_code=413, detail="reply longer than 64 KiB")
    reply_id = _reply_id(case_id, request.headers.get("idempotency-key"))
    result = await _case_command(request, case_id, lambda c: c.request_reply(reply_id, body.text, principal.name, _now()))
    result["reply_id"] = str(reply_id)
    return result


def _reply_id(case_id: FromPath[UUID], idempotency_key: str | None) -> UUID:
    import uuid  # noqa: PLC0415

    if idempotency_key:
        return uuid.uuid5(case_id, "reply:" + idempotency_key)
    return uuid.uuid4()


@post("/api/v1/cases/{case_id:uuid}/assign", status_code=HTTP_200_OK)
async def assign(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    body = await _decode(request, AssignBody)
    return await _case_command(request, case_id, lambda c: c.assign(body.assignee, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/resolve", status_code=HTTP_200_OK)
async def resolve(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    return await _case_command(request, case_id, lambda c: c.resolve(principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/reopen", status_code=HTTP_200_OK)
async def reopen(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    return await _case_command(request, case_id, lambda c: c.reopen(principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/notes", status_code=HTTP_200_OK)
async def add_note(request: Request, case_id: FromPath[UUID]) -> dict:
    import uuid  # noqa: PLC0415

    principal = await require(request, WRITE)
    body = await _decode(request, NoteBody)
    return await _case_command(request, case_id, lambda c: c.add_note(uuid.uuid4(), body.text, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/tags", status_code=HTTP_200_OK)
async def add_tags(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    body = await _decode(request, TagsBody)
    return await _case_command(request, case_id, lambda c: c.tag(body.tags, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/priority", status_code=HTTP_200_OK)
async def prioritize(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, SUPERVISE + ("agent",))
    body = await _decode(request, PriorityBody)
    return await _case_command(request, case_id, lambda c: c.prioritize(body.priority, principal.name, _now()))


@post("/api/v1/cases/{case_id:uuid}/snooze", status_code=HTTP_200_OK)
async def snooze(request: Request, case_id: FromPath[UUID]) -> dict:
    principal = await require(request, WRITE)
    body = await _decode(request, SnoozeBody)
    return await _case_command(request, case_id, lambda c: c.snooze(body.until, principal.name, _now()))


@get("/api/v1/events", summary="Server-Sent Events: timeline items and case changes, live")
async def live_events(request: Request) -> ServerSentEvent:
    await require(request, READ)
    services = svc(request)
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)

    async def on_msg(msg) -> None:
        for item in msgspec.json.decode(msg.data):
            if not queue.full():
                queue.put_nowait(item)

    sub = await services.nc.subscribe(services.names.live_subject, cb=on_msg)

    async def stream():
        try:
            yield {"event": "ready", "data": "{}"}
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=15.0)
                except TimeoutError:
                    yield {"comment": "keep-alive"}
                    continue
                yield {"event": item["type"], "data": msgspec.json.encode(item).decode()}
        finally:
            await sub.unsubscribe()

    return ServerSentEvent(stream())


@get("/api/v1/metrics", summary="Contact-centre metrics over a period")
async def cc_metrics(request: Request) -> dict:
    await require(request, READ)
    params = request.query_params
    end = _parse_time(params.get("to")) or _now()
    start = _parse_time(params.get("from")) or end - timedelta(days=7)
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


GATEWAY_HANDLERS = list(CHAT_HANDLERS)
API_HANDLERS = [lookup_customer, search_customers, get_customer, get_timeline, get_cases, get_case, reply, assign,
                get_attachment, resolve, reopen, add_note, add_tags, prioritize, snooze, live_events, cc_metrics, console]
COMMON_HANDLERS = [health, ready, prometheus, asyncapi]


def build_app(services: Services, roles: tuple[str, ...], extra_handlers: list | None = None) -> Litestar:
    handlers = list(COMMON_HANDLERS)
    if "gateway" in roles:
        handlers += GATEWAY_HANDLERS + list(extra_handlers or [])
    if "api" in roles:
        handlers += API_HANDLERS
    app = Litestar(
        route_handlers=handlers,
        exception_handlers={ChannelError: channel_error_handler, HTTPException: http_error_handler,
                            DomainError: domain_error_handler, NotFound: not_found_handler},
        openapi_config=OpenAPIConfig(title="Switchboard", version="1.0.0", path="/schema"),
        request_max_body_size=services.settings.max_body_bytes,
        middleware=[RejectControlCharacters, *([ChatTokenMiddleware] if "gateway" in roles else [])],
        debug=False,
    )
    app.state.services = services
    return app
