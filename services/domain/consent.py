"""Consent to marketing, per channel and purpose: the keywords that give and withdraw it, and the
rule that says whether a customer may receive marketing on a channel now.

Keywords are Twilio's (its standard opt-out and opt-in words, and those of its Advanced Opt-Out),
with their Spanish counterparts. Like Twilio, a keyword counts only as the whole message (trimmed,
any case): "stop" withdraws, "please stop sending me the invoice twice" is a message for an agent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from events.interactions import Interaction

PURPOSES = ("marketing",)
# Where a keyword in a message changes consent: the channels whose providers define them.
KEYWORD_CHANNELS = frozenset({"sms", "whatsapp"})
OPT_OUT = frozenset(
    {
        # Twilio's standard opt-out keywords, and its Advanced Opt-Out additions
        "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE", "STOP ALL",
        # Spanish: "baja" (darse de baja), "cancelar", "parar", "detener", "no más"
        "BAJA", "CANCELAR", "PARAR", "DETENER", "NO MAS", "NO MÁS",
    }
)  # fmt: skip
OPT_IN = frozenset({"START", "UNSTOP", "YES", "ALTA", "SUSCRIBIR", "REANUDAR"})

# What a customer who never said yes or no may receive: `implied` (they wrote to us on the channel,
# as Twilio treats a number that never sent STOP) or only after an `explicit` grant.
Policy = Literal["implied", "explicit"]
POLICIES: tuple[Policy, ...] = ("implied", "explicit")


@dataclass(frozen=True)
class Keyword:
    word: str
    granted: bool


def keyword_of(interaction: Interaction) -> Keyword | None:
    """The consent keyword this inbound message is, if it is one."""
    if interaction.direction != "inbound" or interaction.channel not in KEYWORD_CHANNELS:
        return None
    if interaction.kind != "message" or len(interaction.text) > 20:
        return None
    word = " ".join(interaction.text.strip().strip(".!¡").split()).upper()
    if word in OPT_OUT:
        return Keyword(word, False)
    if word in OPT_IN:
        return Keyword(word, True)
    return None


def allowed(recorded: bool | None, wrote_on_channel: bool, policy: Policy) -> bool:
    """May marketing go out: a recorded yes or no decides; without one, the policy does."""
    if recorded is not None:
        return recorded
    return policy == "implied" and wrote_on_channel


# -- unsubscribe links ----------------------------------------------------------------------------
# base64url( customer id (16 bytes) | channel (1 byte) | purpose (1 byte) | HMAC-SHA256 of those, 16 bytes ).
# No expiry: a link in an old email must still work. Nothing personal in it but an opaque id.

_MAC_BYTES = 16
_UNSUBSCRIBE_CHANNELS = ("email", "sms", "whatsapp", "messenger", "instagram", "telegram", "chat")


class BadUnsubscribeToken(ValueError):
    pass


def unsubscribe_key(master_key: bytes) -> bytes:
    """The links' signing key, derived from the master key (never the master key itself)."""
    return hmac.new(master_key, b"switchboard/unsubscribe-token/v1", hashlib.sha256).digest()


def sign_unsubscribe(key: bytes, customer_id: UUID, channel: str, purpose: str = "marketing") -> str:
    body = customer_id.bytes + bytes([_UNSUBSCRIBE_CHANNELS.index(channel), PURPOSES.index(purpose)])
    mac = hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def verify_unsubscribe(key: bytes, token: str) -> tuple[UUID, str, str]:
    """(customer, channel, purpose) of a link we signed; BadUnsubscribeToken otherwise."""
    if not token.isascii() or len(token) > 64:
        raise BadUnsubscribeToken("malformed unsubscribe token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise BadUnsubscribeToken("malformed unsubscribe token") from None
    if len(raw) != 18 + _MAC_BYTES:
        raise BadUnsubscribeToken("malformed unsubscribe token")
    body, mac = raw[:18], raw[18:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]):
        raise BadUnsubscribeToken("unsubscribe token signature does not match")
    if body[16] >= len(_UNSUBSCRIBE_CHANNELS) or body[17] >= len(PURPOSES):
        raise BadUnsubscribeToken("malformed unsubscribe token")
    return UUID(bytes=body[:16]), _UNSUBSCRIBE_CHANNELS[body[16]], PURPOSES[body[17]]


def unsubscribe_headers(
    public_url: str | None, key: bytes, customer_id: UUID, channel: str = "email", purpose: str = "marketing"
) -> dict[str, str]:
    """`List-Unsubscribe` (RFC 2369) with one-click (RFC 8058) for a marketing email; none without a
    public URL to point at (the link must reach this service from the reader's mail client)."""
    if not public_url:
        return {}
    url = f"{public_url.rstrip('/')}/unsubscribe/{sign_unsubscribe(key, customer_id, channel, purpose)}"
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
