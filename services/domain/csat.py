"""Customer satisfaction surveys: what the survey says, which replies count as a score, and the
signed token of the rating link.

Pure: no I/O, no clock (times come in as arguments). The HMAC key is derived from the master key
by the caller (`csat_key`), like the chat token's.

What counts as a score (a reply to the survey on the case's channel, within the survey's window):
the whole message, trimmed, must be nothing but one rating from 1 to 5, written as

- a digit, with optional trailing `!` or `.`: "5", "5!", " 4. ";
- a digit out of five: "4/5", "4 out of 5", "4 de 5";
- a digit and the word star(s) (English, Spanish, French, German): "4 stars", "3 estrellas";
- a keycap emoji: "5️⃣";
- one to five star emoji and nothing else: "⭐⭐⭐⭐", "★★★".

Anything else is an ordinary message (it opens or joins a case as any message does): "5 items are
missing", "2 hours late", "0", "6", "10", "4 or 5", words for numbers ("five").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

# How long a survey may be answered after the case was resolved.
SURVEY_WINDOW = timedelta(days=7)
SURVEY_QUESTION = "How did we do? Reply with a number from 1 (bad) to 5 (great)"
# Channels whose survey carries the rating link (a link is clickable there, and costs nothing).
LINK_CHANNELS = frozenset({"email", "chat"})

_MAX_SCORE_TEXT = 32
_DIGIT = re.compile(
    r"^([1-5])\s*(?:(?:/|out\s+of|de|sur|von)\s*5|(?:stars?|estrellas?|[ée]toiles?|sterne?)\b)?\s*[!.]*$",
    re.IGNORECASE,
)
_STARS = re.compile(r"^(?:[⭐★]\s*){1,5}$")


def parse_score(text: str | None) -> int | None:
    """The score 1-5 this whole message is, or None when it is anything else (see the module doc)."""
    if not text:
        return None
    trimmed = text.strip()
    if not trimmed or len(trimmed) > _MAX_SCORE_TEXT:
        return None
    # Keycap digits ("5️⃣") are the digit, a variation selector and the combining keycap.
    trimmed = trimmed.replace("\ufe0f", "").replace("\u20e3", "").strip()
    found = _DIGIT.match(trimmed)
    if found:
        return int(found.group(1))
    if _STARS.match(trimmed):
        return sum(1 for ch in trimmed if ch in "⭐★")
    return None


def survey_text(channel: str, link: Callable[[int], str] | None) -> str:
    """The survey as sent on `channel`; with the rating links when `link(score)` is given and the
    channel is one that shows links."""
    if link is None or channel not in LINK_CHANNELS:
        return SURVEY_QUESTION
    lines = [SURVEY_QUESTION + ", or click a rating:"]
    lines += [f"{score} - {link(score)}" for score in range(1, 6)]
    return "\n".join(lines)


# -- the rating link's token ---------------------------------------------------------------------
# base64url( case id (16 bytes) | expiry, Unix seconds (8 bytes) | HMAC-SHA256 of those, 16 bytes ).

_TOKEN = struct.Struct(">16sQ")
_MAC_BYTES = 16


class BadToken(ValueError):
    """Not a token we signed (malformed, or the signature does not match)."""


class ExpiredToken(ValueError):
    """A token we signed whose survey window has closed."""


def csat_key(master_key: bytes) -> bytes:
    """The rating links' signing key, derived from the master key (never the master key itself)."""
    return hmac.new(master_key, b"switchboard/csat-token/v1", hashlib.sha256).digest()


def sign_token(key: bytes, case_id: UUID, expires: datetime) -> str:
    body = _TOKEN.pack(case_id.bytes, int(expires.timestamp()))
    mac = hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def verify_token(key: bytes, token: str, now: datetime) -> UUID:
    """The case id a valid token names; BadToken or ExpiredToken otherwise."""
    if not token.isascii() or len(token) > 64:
        raise BadToken("malformed rating token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise BadToken("malformed rating token") from None
    if len(raw) != _TOKEN.size + _MAC_BYTES:
        raise BadToken("malformed rating token")
    body, mac = raw[: _TOKEN.size], raw[_TOKEN.size :]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]):
        raise BadToken("rating token signature does not match")
    case_bytes, expires = _TOKEN.unpack(body)
    if now > datetime.fromtimestamp(expires, UTC):
        raise ExpiredToken("this survey has closed")
    return UUID(bytes=case_bytes)
