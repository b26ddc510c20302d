"""The chat channel's doors (gateway role): `POST /channels/chat/sessions` and `WS /channels/chat/ws`.

What protects them, all per gateway process and set in the settings (`chat_*`):

- the largest WebSocket message (uvicorn's `ws_max_size`: a larger one closes the socket with 1009);
- open sockets, in all and per client address (refused before the handshake: 503 / 429);
- new sessions per client address and messages per session, as token buckets (429 with
  `Retry-After` over HTTP, an error frame on the socket);
- the session store's size and age (a JetStream KV bucket; full: 503).

Agent replies reach visitors through ONE JetStream subscription per process (an ordered consumer
on the whole chat outbox) that fans out to this process's sockets by session id; a socket that
(re)connects first reads what was sent while it was away straight from the stream (by subject,
without a consumer) and then follows the live fan-out, each reply once, in order, by its stream
sequence. An erasure tells every gateway on `Names.chat_control_subject`, and each one closes the
erased customer's open sockets.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import msgspec
from litestar import MediaType, Request, Response, post, websocket
from litestar.connection import WebSocket
from litestar.exceptions import WebSocketDisconnect

from channels.chat import chat_interaction, parse_frame, utcnow
from channels.errors import ChannelError, Malformed, Unavailable, UnsupportedMediaType
from channels.limits import ConnectionSlots, TokenBuckets, retry_after_header
from channels.openapi import CHAT_SESSION
from channels.proxies import client_ip, trusted_networks
from events.interactions import Identity
from services.domain.identity import InvalidIdentity, normalize
from services.platform.logs import get_logger

log = get_logger(__name__)

WS_PATH = "/channels/chat/ws"
# Close codes: 1008 policy (erased), 1013 try again later (a reader too slow for its replies).
CLOSE_SESSION_ENDED = 1008
CLOSE_TOO_SLOW = 1013
# Replies queued for one socket before it is closed as too slow; it reconnects and reads the backlog.
_SOCKET_QUEUE = 256


class _CloseOrder(msgspec.Struct):
    sessions: list[str]


_close_order = msgspec.json.Decoder(_CloseOrder)


def _error(code: str, detail: str) -> dict:
    return {"error": code, "detail": detail}


def client_address(scope, trusted_proxies=None) -> str:
    """The client's address: the peer's, or, when the peer is one of `SWITCHBOARD_TRUSTED_PROXIES`,
    the address it forwarded for (`X-Forwarded-For`); an untrusted peer's header counts for nothing."""
    forwarded = ", ".join(v.decode("latin-1") for k, v in scope.get("headers") or () if k.lower() == b"x-forwarded-for")
    address = client_ip(scope, {"x-forwarded-for": forwarded} if forwarded else {}, trusted_networks(trusted_proxies))
    return address or "unknown"


def chat_after(text: str | None) -> int:
    """`after=N` of the chat WebSocket: the outbox sequence the visitor already has. ASCII digits
    only (`str.isdigit` also takes `²`, which `int` refuses) and within JetStream's range."""
    if text is None or text == "":
        return 0
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
        raise Malformed("after must be a non-negative stream sequence number")
    return int(text)


@dataclass(eq=False)
class _Listener:
    session_id: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=_SOCKET_QUEUE))
    closing: tuple[int, str] | None = None


class ChatGateway:
    """Per-process state of the chat channel: limits, the outbox fan-out, the erasure listener."""

    def __init__(self, settings, names, *, clock=time.monotonic):
        self.settings = settings
        self.names = names
        self.clock = clock
        self.slots = ConnectionSlots(settings.chat_max_connections, settings.chat_max_connections_per_ip)
        self.session_rate = TokenBuckets(settings.chat_sessions_per_minute_per_ip / 60.0, settings.chat_session_burst)
        self.message_rate = TokenBuckets(settings.chat_messages_per_minute / 60.0, settings.chat_message_burst)
        self.listeners: dict[str, set[_Listener]] = {}
        self.js = None
        self._outbox_sub = None
        self._control_sub = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, nc, js) -> None:
        from nats.js.api import DeliverPolicy  # noqa: PLC0415

        self.js = js
        # One ordered (ephemeral, flow-controlled, self-healing) consumer for every socket of this
        # process. It starts at "new": what was sent before a socket connected is read by that socket
        # from the stream itself (`_backlog`).
        self._outbox_sub = await js.subscribe(
            self.names.subject("sb.chat.outbox.>"),
            stream=self.names.chat_outbox,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            cb=self._on_reply,
        )
        self._control_sub = await nc.subscribe(self.names.chat_control_subject, cb=self._on_control)

    async def stop(self) -> None:
        for sub in (self._outbox_sub, self._control_sub):
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception:  # noqa: BLE001 — the connection is going away anyway
                    pass

    # -- fan-out -------------------------------------------------------------------------------

    def _session_of(self, subject: str) -> str:
        return subject.rsplit(".", 1)[-1]

    async def _on_reply(self, msg) -> None:
        listeners = self.listeners.get(self._session_of(msg.subject))
        if not listeners:
            return
        seq = msg.metadata.sequence.stream
        for listener in list(listeners):
            self._offer(listener, (seq, msg.data))

    def _offer(self, listener: _Listener, item) -> None:
        if listener.closing is not None:
            return
        try:
            listener.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._close(listener, CLOSE_TOO_SLOW, "too many replies waiting; reconnect")

    def _close(self, listener: _Listener, code: int, reason: str) -> None:
        listener.closing = (code, reason)
        while not listener.queue.empty():  # make room for the close order
            listener.queue.get_nowait()
        listener.queue.put_nowait(None)

    async def _on_control(self, msg) -> None:
        try:
            order = _close_order.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("chat_control_ignored")
            return
        closed = 0
        for session_id in order.sessions:
            for listener in list(self.listeners.get(session_id, ())):
                self._close(listener, CLOSE_SESSION_ENDED, "session ended")
                closed += 1
        if closed:
            log.info("chat_sockets_closed", sockets=closed, reason="erased")

    def register(self, session_id: str) -> _Listener:
        listener = _Listener(session_id)
        self.listeners.setdefault(session_id, set()).add(listener)
        return listener

    def unregister(self, listener: _Listener) -> None:
        listeners = self.listeners.get(listener.session_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                # The session's message bucket stays (bounded by its LRU): reconnecting must not refill it.
                del self.listeners[listener.session_id]

    async def _backlog(self, session_id: str, after: int):
        """Replies for this session stored after `after`, oldest first, read by subject (no consumer)."""
        from nats.js.errors import NotFoundError  # noqa: PLC0415

        subject = self.names.chat_outbox_subject(session_id)
        seq = after + 1
        while True:
            try:
                raw = await self.js.get_msg(self.names.chat_outbox, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return
            yield raw.seq, raw.data
            seq = raw.seq + 1

    async def push_replies(self, socket: WebSocket, listener: _Listener, after: int) -> None:
        """Sends the backlog, then live replies; each stream sequence once, in order."""
        last = after
        try:
            async for seq, data in self._backlog(listener.session_id, after):
                if listener.closing is not None:
                    break
                await _send_reply(socket, seq, data)
                last = seq
            while True:
                item = await listener.queue.get()
                if item is None:
                    code, reason = listener.closing or (CLOSE_SESSION_ENDED, "closed")
                    await socket.close(code=code, reason=reason)
                    return
                seq, data = item
                if seq <= last:
                    continue  # read with the backlog already, or redelivered after a consumer reset
                await _send_reply(socket, seq, data)
                last = seq
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 — the socket went away mid-send; the receive loop ends it
            log.debug("chat_push_ended")


async def _send_reply(socket: WebSocket, seq: int, data: bytes) -> None:
    frame = msgspec.json.decode(data)
    frame["seq"] = seq
    await socket.send_json(frame)


def _gateway(connection: Request | WebSocket) -> ChatGateway:
    return connection.app.state.services.chat_gateway


def _services(connection: Request | WebSocket):
    return connection.app.state.services


# -- HTTP ------------------------------------------------------------------------------------------


@post("/channels/chat/sessions", status_code=201, summary="Start a chat session", operation_class=CHAT_SESSION)
async def create_chat_session(request: Request) -> Response:
    services = _services(request)
    gateway = _gateway(request)
    wait = gateway.session_rate.take(client_address(request.scope, services.settings.trusted_proxies), gateway.clock())
    if wait:
        services.count("channel_rejected_rate_limited")
        return Response(
            _error("rate_limited", "too many new chat sessions from this address; retry later"),
            status_code=429,
            media_type=MediaType.JSON,
            headers={"Retry-After": retry_after_header(wait)},
        )
    if "json" not in request.headers.get("content-type", "application/json"):
        raise UnsupportedMediaType("expected application/json")
    body = await request.body()
    chat = services.chat
    session_request = chat.parse_request(body)
    verification = chat.verify(session_request)
    if verification.contacts:
        # Signed contacts become verified identities: they must be valid ones, or the core refuses them.
        for kind in ("email", "phone"):
            value = getattr(session_request, kind)
            if value:
                try:
                    normalize(Identity(kind, value))
                except InvalidIdentity as exc:
                    raise Malformed(f"{kind}: {exc}") from None
    session, token = await chat.create(session_request, utcnow(), verification)
    services.count("chat_sessions")
    log.info(
        "chat_session_created",
        session_id=session.session_id,
        external_verified=session.external_verified,
        contacts_verified=session.contacts_verified,
    )
    return Response({"session_id": session.session_id, "token": token}, status_code=201, media_type=MediaType.JSON)


# -- WebSocket -------------------------------------------------------------------------------------


@websocket(WS_PATH)
async def chat_socket(socket: WebSocket) -> None:
    services = _services(socket)
    gateway = _gateway(socket)
    session_id = socket.scope["sb_chat_session_id"]  # verified by ChatTokenMiddleware
    # Registered before the session is read: an erasure purges the session and then orders its
    # sockets closed, so a socket that still read it is already listening for that order. And
    # before the backlog is read: no reply falls between the backlog and the live feed.
    listener = gateway.register(session_id)
    try:
        session = await services.chat.get(session_id)
    except ChannelError:
        gateway.unregister(listener)
        await socket.close(code=CLOSE_SESSION_ENDED, reason="session ended")
        return
    await socket.accept()
    after = socket.scope["sb_chat_after"]  # validated by ChatTokenMiddleware
    pusher = asyncio.create_task(gateway.push_replies(socket, listener, after))
    try:
        while listener.closing is None:
            raw = await socket.receive_data(mode="text")
            # Every frame spends a token, a malformed one too: answering garbage is work as well.
            wait = gateway.message_rate.take(session_id, gateway.clock())
            try:
                frame = parse_frame(raw, services.settings.max_chat_text)
            except ChannelError as exc:
                await socket.send_json({"type": "error", **_error(exc.code, exc.detail)})
                continue
            if wait:
                services.count("channel_rejected_rate_limited")
                await socket.send_json(
                    {
                        "type": "error",
                        "client_id": frame.client_id,
                        "retry_after": round(wait, 1),
                        **_error("rate_limited", "too many messages; this one was not sent"),
                    }
                )
                continue
            interaction = chat_interaction(session, frame, utcnow())
            try:
                await services.publisher.publish(interaction)
            except Unavailable as exc:
                # Not stored: an error instead of the ack, with when to try again.
                await socket.send_json(
                    {
                        "type": "error",
                        "client_id": frame.client_id,
                        "retry_after": exc.retry_after,
                        **_error(exc.code, exc.detail),
                    }
                )
                continue
            services.count("interactions_chat")
            await socket.send_json({"type": "ack", "client_id": frame.client_id, "id": str(interaction.id)})
    except WebSocketDisconnect:
        pass
    finally:
        gateway.unregister(listener)
        if listener.closing is not None:
            try:
                await asyncio.wait_for(pusher, 5)  # it sends the close frame
            except (TimeoutError, asyncio.CancelledError):
                pass
        pusher.cancel()


class ChatTokenMiddleware:
    """Before the WebSocket handshake: the chat token (401) and the connection limits (503 / 429)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket" or scope["path"] != WS_PATH:
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services if "app" in scope else self.app.state.services
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token", [None])[0]
        try:
            after = chat_after(query.get("after", [None])[0])
            session_id = services.chat.verify_token(token)
            await services.chat.get(session_id)
        except ChannelError as exc:
            await _deny_websocket(scope, receive, send, exc)
            return
        gateway: ChatGateway = services.chat_gateway
        client = client_address(scope, services.settings.trusted_proxies)
        refused = gateway.slots.acquire(client)
        if refused is not None:
            services.count("channel_rejected_too_many_connections")
            log.warning("chat_connection_refused", limit=refused)
            exc = (
                ChannelError("too many open chat connections on this server", status=503, code="unavailable")
                if refused == "total"
                else ChannelError(
                    "too many open chat connections from this address", status=429, code="too_many_connections"
                )
            )
            await _deny_websocket(scope, receive, send, exc)
            return
        scope["sb_chat_session_id"] = session_id
        scope["sb_chat_after"] = after
        try:
            await self.app(scope, receive, send)
        finally:
            gateway.slots.release(client)


async def _deny_websocket(scope, receive, send, exc: ChannelError) -> None:
    await receive()  # websocket.connect
    body = msgspec.json.encode(_error(exc.code, exc.detail))
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": exc.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 4000 + exc.status, "reason": exc.code})


async def close_chat_sessions(nc, names, session_ids) -> None:
    """Asks every gateway process to close the open sockets of these sessions (an erasure's last word)."""
    if not session_ids:
        return
    await nc.publish(names.chat_control_subject, msgspec.json.encode(_CloseOrder(sorted(session_ids))))
    await nc.flush(timeout=5)


CHAT_HANDLERS = [create_chat_session, chat_socket]
