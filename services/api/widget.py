"""The embeddable chat widget (gateway role): `GET /widget.js`, and CORS for the public chat endpoints.

The widget runs on the company's website, another origin than Switchboard's. What it calls, the
session endpoint, answers CORS (preflights included) for the origins of `SWITCHBOARD_CHAT_ALLOWED_ORIGINS`
(default `*`: these endpoints use no cookies, a session is only as good as its token). Every other
route stays same-origin: no CORS header is ever added to the agent API. The WebSocket needs no CORS,
but a browser sends its `Origin`; a socket from an origin that is not allowed is refused (403), so the
setting means the same for both doors.

`GET /channels/chat/session` (chat token as a bearer) tells the widget whether its session still
exists, which a failed WebSocket handshake cannot tell a browser.

`/widget.js` is `services/api/static/widget.js` as written (no build step, no minifier), served with
a strong ETag (304 on `If-None-Match`), gzip when the client takes it, and
`Cross-Origin-Resource-Policy: cross-origin` so pages that isolate themselves can still load it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib

import msgspec
from litestar import Request, Response, get

from channels.errors import Unauthorized
from services.api.console import STATIC

SESSION_PATH = "/channels/chat/session"
# The public chat endpoints: what the widget calls from the website's origin.
CORS_PATHS = frozenset({"/channels/chat/sessions", SESSION_PATH})
WS_PATH = "/channels/chat/ws"
_ALLOW_HEADERS = b"authorization, content-type"
_MAX_AGE = b"600"
# The script may change with a deploy: caches revalidate after five minutes (a 304 is cheap).
CACHE_CONTROL = "public, max-age=300"


class WidgetScript(msgspec.Struct, frozen=True):
    raw: bytes
    gzipped: bytes
    etag: str
    etag_gzip: str


@functools.cache
def widget_script() -> WidgetScript:
    raw = (STATIC / "widget.js").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:32]
    # mtime=0: the same source gives the same bytes, so every process serves the same ETag.
    return WidgetScript(raw, gzip.compress(raw, 9, mtime=0), f'"{digest}"', f'"{digest}-gz"')


def _takes_gzip(accept_encoding: str) -> bool:
    """Whether `Accept-Encoding` takes gzip (`gzip` or `*`, with a q-value above zero)."""
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() not in ("gzip", "*"):
            continue
        q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


@get("/widget.js", include_in_schema=False, cache=False)
async def widget_js(request: Request) -> Response:
    script = widget_script()
    zipped = _takes_gzip(request.headers.get("accept-encoding", ""))
    etag = script.etag_gzip if zipped else script.etag
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Vary": "Accept-Encoding",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(b"", status_code=304, headers=headers)
    if zipped:
        headers["Content-Encoding"] = "gzip"
    return Response(script.gzipped if zipped else script.raw, media_type="text/javascript", headers=headers)


class ChatSessionState(msgspec.Struct):
    session_id: str


@get(SESSION_PATH, summary="Whether a chat session is still alive", cache=False)
async def chat_session_state(request: Request) -> ChatSessionState:
    """`Authorization: Bearer CHAT_TOKEN` -> the session, or 401 when the token is wrong or the
    session ended (expired by retention, or erased). A browser cannot see why a WebSocket handshake
    failed; the widget asks here after a few failed reconnects, and starts a new session on 401."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        raise Unauthorized("missing chat token (Authorization: Bearer TOKEN)")
    chat = request.app.state.services.chat
    session_id = chat.verify_token(token)
    await chat.get(session_id)
    return ChatSessionState(session_id=session_id)


def parse_origins(value: str | list[str] | None) -> frozenset[str] | None:
    """`SWITCHBOARD_CHAT_ALLOWED_ORIGINS` as a set of origins; None means any origin (`*`)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    origins = {item.strip().rstrip("/").lower() for item in items if item.strip()}
    if not origins or "*" in origins:
        return None
    return frozenset(origins)


def origin_allowed(allowed: frozenset[str] | None, origin: str) -> bool:
    return allowed is None or origin.lower() in allowed


class ChatCorsMiddleware:
    """CORS for `CORS_PATHS` only, and the same origin rule for the chat WebSocket's handshake."""

    def __init__(self, app):
        self.app = app
        self._allowed: frozenset[str] | None = None
        self._read = False

    def _origins(self, scope) -> frozenset[str] | None:
        if not self._read:
            settings = scope["app"].state.services.settings
            self._allowed = parse_origins(getattr(settings, "chat_allowed_origins", "*"))
            self._read = True
        return self._allowed

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "websocket" and path == WS_PATH:
            origin = _header(scope, b"origin")
            if origin and not origin_allowed(self._origins(scope), origin):
                await _refuse_websocket(scope, receive, send)
                return
        if scope["type"] != "http" or path not in CORS_PATHS:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if not origin:  # not a cross-origin browser request: nothing to add
            await self.app(scope, receive, send)
            return
        allowed = self._origins(scope)
        ok = origin_allowed(allowed, origin)
        cors = [(b"access-control-allow-origin", b"*" if allowed is None else origin.encode("latin-1"))] if ok else []
        if allowed is not None:
            cors.append((b"vary", b"Origin"))
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            if ok:
                cors += [
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (b"access-control-allow-headers", _ALLOW_HEADERS),
                    (b"access-control-max-age", _MAX_AGE),
                ]
            await send({"type": "http.response.start", "status": 204 if ok else 403, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        if not ok:
            body = msgspec.json.encode({"error": "forbidden", "detail": "this origin may not use the chat"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json"), *cors],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*(message.get("headers") or []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _refuse_websocket(scope, receive, send) -> None:
    await receive()  # websocket.connect
    body = msgspec.json.encode({"error": "forbidden", "detail": "this origin may not use the chat"})
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 4403, "reason": "forbidden"})


WIDGET_HANDLERS = [widget_js, chat_session_state]
