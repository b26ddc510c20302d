"""Message ids and threading: Message-ID, In-Reply-To and References as lists of ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from email.message import Message

from channels.email.parse.headers import _raw_header
from channels.email.parse.text import _clean_line

_BRACKETED_ID = re.compile(r"<([^<>]*)>")


def _message_ids(raw: str | None) -> list[str]:
    """The message ids in a Message-ID / In-Reply-To / References header, without <> or whitespace."""
    if not raw:
        return []
    text = _clean_line(raw)
    bracketed = _BRACKETED_ID.findall(text)
    if bracketed:
        candidates = bracketed
    else:
        # Some mailers drop the brackets; keep what looks like an id, not trailing comments.
        words = text.replace(",", " ").split()
        candidates = [word for word in words if "@" in word] or words[:1]
    return _unique(re.sub(r"\s+", "", candidate) for candidate in candidates)


def _own_message_id(message: Message, raw: bytes) -> str:
    """The Message-ID; a message without one gets an id derived from its bytes, so a retry of the
    very same bytes is still recognised as the same message."""
    ids = _message_ids(_raw_header(message, "Message-ID"))
    if ids:
        return ids[0]
    return f"{hashlib.sha256(raw).hexdigest()}@sha256.switchboard.invalid"


def _first(values: list[str]) -> str:
    return values[0] if values else ""


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))
