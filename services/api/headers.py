"""Security headers on every HTTP response: the console gets a strict Content-Security-Policy, the
API and the channel endpoints a policy that forbids rendering anything at all.

The console (`GET /`) loads only its own script and style (`/console.js`, `/console.css`), talks only
to its own origin, and may not be framed (clickjacking); no page of ours sends a Referer (URLs may
carry ids). JSON answers are data, never documents: `default-src 'none'` and `nosniff` keep a
browser from running anything a customer managed to put into one. The OpenAPI pages under `/schema`
load their viewers from a CDN, so they get only the framing and referrer rules.
"""

from __future__ import annotations

CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SCHEMA_CSP = "frame-ancestors 'none'"

_COMMON = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"))
_CONSOLE_PAGES = {"/", "/console.js", "/console.css"}


def policy_for(path: str) -> str:
    if path in _CONSOLE_PAGES:
        return CONSOLE_CSP
    if path == "/schema" or path.startswith("/schema/"):
        return SCHEMA_CSP
    return API_CSP


class SecurityHeadersMiddleware:
    """Adds the headers a response does not set itself (plain ASGI, so streams pass untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = policy_for(scope.get("path", "")).encode()

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                for name, value in (*_COMMON, (b"content-security-policy", csp)):
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
