"""The providers' webhooks served straight on ASGI, in front of the framework.

Why: a signed SMS or WhatsApp webhook is verify, parse, publish, wait for the JetStream ack, answer.
Measured under tests/benchmarks/webhooks.py, Litestar's share of it (routing, the five middlewares,
the Request, Headers and Response objects, the signature model) was a fifth of the gateway's CPU
per webhook, more than the signature check and the parse together. Here those routes cost a dict
lookup, a header dict and one answer.

What it serves: a POST to one of `channels.routes.FAST_ROUTES`, without a query string, with a
`Content-Length` within `max_body_bytes`. Everything else (another method or path, a query string,
a chunked or oversized body) passes to the app untouched, so the answers the framework gives there
(405, the hygiene 400, 413) stay its own, and the OpenAPI document still describes the routes.
The same functions answer either way (channels.routes); this adds what the app's middleware and
exception handlers would: the security headers, the contract's error body for a `ChannelError`
(counted as `channel_rejected_CODE`, with `Retry-After` on a 503).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import msgspec

from channels.errors import ChannelError, TooLarge
from channels.routes import FAST_ROUTES
from services.api.headers import _COMMON, API_CSP
from services.platform.logs import get_logger

log = get_logger(__name__)

_SECURITY_HEADERS = [*_COMMON, (b"content-security-policy", API_CSP.encode())]
# What Litestar sends for each media type the webhooks answer with (text types get their charset).
_CONTENT_TYPES = {"text/xml": b"text/xml; charset=utf-8", "application/json": b"application/json"}
_INTERNAL = msgspec.json.encode({"error": "internal", "detail": "internal error"})


class _Headers(Mapping[str, str]):
    """A request's headers by lower-case name, the first of a repeated one (as the framework's
    `Headers.get`), decoded as Latin-1 only when asked for: a webhook reads four of a dozen."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self._raw = dict(reversed(raw))  # the first of a repeated name wins

    def __getitem__(self, name: str) -> str:
        return self._raw[name.encode("latin-1")].decode("latin-1")

    def get(self, name: str, default=None):  # type: ignore[override]
        value = self._raw.get(name.encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name in self._raw)

    def __len__(self) -> int:
        return len(self._raw)


class WebhookFastPath:
    """ASGI: serves `FAST_ROUTES` itself and hands every other request to `app`."""

    def __init__(self, app, services, max_body_bytes: int):
        self.app = app
        self.services = services
        self.max_body_bytes = max_body_bytes

    def __getattr__(self, name: str):  # the wrapped app's own attributes (state, ...) stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("query_string"):
            answer = FAST_ROUTES.get(scope["path"])
            if answer is not None:
                headers = _Headers(scope["headers"])
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) <= self.max_body_bytes:
                    await self._serve(answer, scope, headers, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, answer, scope, headers, receive, send) -> None:
        services = self.services
        extra: list[tuple[bytes, bytes]] = []
        try:
            body = await self._body(receive)
            if body is None:
                return  # the client left: nobody to answer
            status, media_type, content = await answer(services, scope, headers, body)
            content_type = _CONTENT_TYPES.get(media_type) or media_type.encode("latin-1")
        except ChannelError as exc:
            services.count(f"channel_rejected_{exc.code}")
            retry_after = getattr(exc, "retry_after", None)
            if retry_after:
                extra.append((b"retry-after", str(retry_after).encode()))
            status, content_type = exc.status, b"application/json"
            content = msgspec.json.encode({"error": exc.code, "detail": exc.detail})
        except Exception:  # noqa: BLE001 — a bug, not the provider's fault: 500 in the contract's shape
            log.exception("webhook_failed", path=scope["path"])
            status, content_type, content = 500, b"application/json", _INTERNAL
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(content)),
                    *extra,
                    *_SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _body(self, receive) -> bytes | None:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        if not message.get("more_body"):
            return body  # the whole body in one message: the usual case
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise TooLarge("the body is larger than the limit")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)
