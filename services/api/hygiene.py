"""Query strings with control characters are refused at the door, as the contract's 400.

Command bodies are cleaned by the one sanitiser (`events.sanitize`), but a query parameter is a
question, not text to keep: `?q=%00` would otherwise reach PostgreSQL (which cannot hold NUL in
text) and end as a 500. NUL and the C0 controls other than tab, newline and carriage return, spelt
percent-encoded, get 400 `malformed` before any handler runs.
"""

from __future__ import annotations

import re

import msgspec

_CONTROL = re.compile(rb"%(0[0-8bcefBCEF]|1[0-9a-fA-F])")
_BODY = msgspec.json.encode({"error": "malformed", "detail": "query parameters must not contain control characters"})


_PATH_CONTROL = re.compile("[\x00-\x1f]")
_PATH_BODY = msgspec.json.encode({"error": "malformed", "detail": "the path must not contain control characters"})


class RejectControlCharacters:
    """ASGI middleware: 400 for an HTTP request whose query string spells a control character, or
    whose (decoded) path holds one: a path parameter is an id, never text."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            body = (
                _BODY
                if _CONTROL.search(scope.get("query_string") or b"")
                else _PATH_BODY
                if _PATH_CONTROL.search(scope.get("path", ""))
                else None
            )
            if body is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
