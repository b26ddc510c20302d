"""Agent API, live: the Server-Sent Events stream of new timeline items and case changes, and the
single-use tickets that open it for clients that cannot send headers. A stream ends soon after its
token is revoked."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromQuery
from litestar.response import ServerSentEvent

from services.api.auth import READ, TICKET_TTL_SECONDS, authenticate_hash, issue_ticket, redeem_ticket
from services.api.context import allowed, bearer_token, require, svc
from services.api.errors import error_body
from services.platform.logs import get_logger

log = get_logger(__name__)


class EventsTicket(msgspec.Struct):
    ticket: str
    expires_in: int


@post(
    "/api/v1/events/ticket",
    status_code=201,
    summary="A single-use ticket to open the event stream with",
    description="For clients that cannot send headers (a browser's EventSource): pass it as "
    "`GET /api/v1/events?ticket=...` within `expires_in` seconds; it works once.",
)
async def events_ticket(request: Request) -> Response[EventsTicket]:
    principal = await require(request, READ)
    ticket = await issue_ticket(svc(request).pool, principal)
    return Response(EventsTicket(ticket, TICKET_TTL_SECONDS), status_code=201, headers={"Cache-Control": "no-store"})


HEARTBEAT_SECONDS = 15.0


@get(
    "/api/v1/events",
    summary="Server-Sent Events: timeline items and case changes, live",
    media_type="text/event-stream",
    description="Authorization: Bearer, or `ticket` from POST /api/v1/events/ticket. The stream ends "
    "(after a `revoked` event) soon after its token is revoked.",
)
async def live_events(request: Request, ticket: FromQuery[str | None] = None) -> ServerSentEvent:
    services = svc(request)
    if bearer_token(request) is None and ticket is not None:
        principal = await redeem_ticket(services.pool, services.settings.admin_token, ticket)
        if principal is None:
            raise NotAuthorizedException("invalid, used or expired ticket")
        allowed(principal, READ)
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
            return (
                await authenticate_hash(services.pool, services.settings.admin_token, principal.token_hash) is not None
            )
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
                        yield {
                            "event": "revoked",
                            "data": msgspec.json.encode(error_body("unauthorized", "token revoked")).decode(),
                        }
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
