"""Meta's request checks: the `X-Hub-Signature-256` of every webhook, and the subscription handshake."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from channels.errors import Malformed, Unauthorized

SIGNATURE_HEADER = "X-Hub-Signature-256"


def meta_signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value Meta sends: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_meta_signature(app_secret: str, body: bytes, header: str | None) -> None:
    """Raises `Unauthorized` unless `header` is the app secret's signature of exactly `body`."""
    if not header:
        raise Unauthorized(f"{SIGNATURE_HEADER} is missing")
    if not app_secret:
        raise Unauthorized("no app secret configured")
    scheme, _, received = header.strip().partition("=")
    if scheme.lower() != "sha256" or not received:
        raise Unauthorized(f"{SIGNATURE_HEADER} is not sha256=<hex>")
    expected = meta_signature(app_secret, body).partition("=")[2]
    if not hmac.compare_digest(expected.encode("ascii"), received.strip().lower().encode("utf-8")):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body")


def _param(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value if isinstance(value, str) else ""


def verify_handshake(params: Mapping[str, str], verify_token: str) -> str:
    """Meta's subscription check (`GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C`):
    returns the challenge, to be answered as the plain-text body, when the token is ours."""
    mode = _param(params, "hub.mode")
    challenge = _param(params, "hub.challenge")
    if mode != "subscribe" or not challenge:
        raise Malformed("expected hub.mode=subscribe and a hub.challenge")
    token = _param(params, "hub.verify_token")
    if not token or not verify_token:
        raise Unauthorized("hub.verify_token is missing")
    if not hmac.compare_digest(token.encode("utf-8"), verify_token.encode("utf-8")):
        raise Unauthorized("hub.verify_token does not match")
    return challenge
