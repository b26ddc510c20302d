"""The outbound port: what a sender is given (`Delivery`), what it promises (`Sender`), and how
senders read a case's thread key and the customer's identities.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from channels.errors import ProviderError
from channels.phone import normalize_phone


@dataclass(frozen=True)
class Delivery:
    """Everything a sender needs to know about one reply (the outbound port: the relay builds it,
    a sender delivers it)."""

    reply_id: UUID
    case_id: UUID
    customer_id: UUID
    channel: str
    thread_key: str | None
    text: str
    identities: frozenset[tuple[str, str]]
    thread_meta: dict
    # A campaign's message rather than a reply: a WhatsApp template (the Graph API `template` object,
    # sent instead of `text`), and for email the unsubscribe link (List-Unsubscribe, RFC 8058, and in
    # the body; the subject then is the campaign's name as it stands, not "Re: ...").
    campaign: bool = False
    template: dict | None = None
    unsubscribe_url: str | None = None


class Sender(Protocol):
    """Delivers one reply; returns the provider's message id (None when the provider gives none).

    Raises `ProviderError` saying whether a retry may succeed: the relay retries a retryable failure
    with backoff and records any other as the reply's failure. A sender is a coroutine function or a
    bound async method (`TwilioSender.send_sms`), one per channel.
    """

    def __call__(self, d: Delivery, /) -> Awaitable[str | None]: ...


# Replies are human-paced, so each send opens its own HTTP client: nothing outlives the call, and
# no connection pool is shared across event loops.
HTTP_TIMEOUT = 15.0


def _thread_parts(d: Delivery, channel: str, count: int) -> list[str] | None:
    """The `count` fields after `channel:` in the thread key, or None when it is not such a key."""
    key = d.thread_key or ""
    if not key.startswith(channel + ":"):
        return None
    parts = key[len(channel) + 1 :].split(":", count - 1)
    return parts if len(parts) == count and all(parts) else None


def _identity(d: Delivery, kind: str) -> str:
    """The customer's only identity of that kind; a refusal when there is none or the choice is a guess."""
    values = sorted(value for k, value in d.identities if k == kind)
    if len(values) != 1:
        raise ProviderError(False, f"no unambiguous {kind} to reply to")
    return values[0]


def _phone(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except Exception:  # noqa: BLE001 — Malformed: the recorded thread is not a phone thread
        raise ProviderError(False, "thread has no phone number to reply to") from None
