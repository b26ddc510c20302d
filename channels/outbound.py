"""Agents' replies out through each provider, in the customer's own thread.

`provider_senders(settings)` gives the relay one sender per configured channel; a channel without
credentials gets none (the relay records such a reply as failed: "not configured"). A sender takes
a `Delivery` and returns the provider's message id, or raises `ProviderError` saying whether a
retry may succeed.

Where a reply goes comes from the case's thread key, written by the inbound adapter that opened it:

| channel   | thread key                                   | sent with                          |
| --------- | -------------------------------------------- | ---------------------------------- |
| email     | root Message-ID of the thread                | SMTP relay, In-Reply-To/References |
| sms       | `sms:<our number>:<customer>`                | Twilio REST                        |
| whatsapp  | `whatsapp:<+our number>:<+customer>`         | Twilio REST (`whatsapp:` addresses)|
| whatsapp  | `whatsapp:<phone_number_id>:<wa_id>`         | Graph API (Cloud API)              |
| messenger | `messenger:<page id>:<PSID>`                 | Graph API                          |
| instagram | `instagram:<account id>:<IGSID>`             | Graph API                          |
| telegram  | `telegram:<chat id>`                         | Bot API `sendMessage`              |

Replies are human-paced, so each send opens its own HTTP client: nothing outlives the call, and
no connection pool is shared across event loops.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from uuid import UUID

import httpx

from channels.errors import ProviderError
from channels.phone import normalize_phone
from channels.sms.twilio import TwilioClient
from channels.social.meta import MetaClient
from channels.social.telegram import TelegramClient
from services.platform.settings import Settings


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


Sender = Callable[[Delivery], Awaitable[str | None]]

HTTP_TIMEOUT = 15.0
SMTP_TIMEOUT = 30.0
# References grows with every message of a long thread; keep the root and the most recent ones.
_MAX_REFERENCES = 20
TWILIO_STATUS_PATH = "/channels/sms/twilio/status"


def provider_senders(settings: Settings) -> dict[str, Sender]:
    senders: dict[str, Sender] = {}
    if settings.smtp_relay and settings.email_from:
        senders["email"] = EmailSender(settings.smtp_relay, settings.email_from)
    twilio = TwilioSender(settings) if (
        settings.twilio_account_sid and settings.twilio_from and settings.twilio_auth_token) else None
    meta = MetaSender(settings) if settings.meta_access_token else None
    if twilio is not None:
        senders["sms"] = twilio.send_sms
    if twilio is not None or meta is not None:
        senders["whatsapp"] = WhatsAppSender(twilio, meta)
    if meta is not None:
        senders["messenger"] = meta.send_messenger
        senders["instagram"] = meta.send_instagram
    if settings.telegram_bot_token:
        senders["telegram"] = TelegramSender(settings)
    return senders


def _thread_parts(d: Delivery, channel: str, count: int) -> list[str] | None:
    """The `count` fields after `channel:` in the thread key, or None when it is not such a key."""
    key = d.thread_key or ""
    if not key.startswith(channel + ":"):
        return None
    parts = key[len(channel) + 1:].split(":", count - 1)
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


# -- email -----------------------------------------------------------------------------------------


class EmailSender:
    """Sends through an SMTP relay (`host:port`), threaded onto the customer's last message."""

    def __init__(self, relay: str, from_address: str, timeout: float = SMTP_TIMEOUT):
        host, _, port = relay.strip().rpartition(":")
        if not host:
            host, port = relay.strip(), "25"
        self.host = host.strip("[]")
        self.port = int(port)
        self.from_header = from_address
        self.envelope_from = parseaddr(from_address)[1] or from_address
        self.domain = self.envelope_from.rpartition("@")[2] or "switchboard.invalid"
        self.timeout = timeout

    async def __call__(self, d: Delivery) -> str:
        message, message_id, recipient = self.compose(d, datetime.now(UTC))
        await asyncio.to_thread(self._send, message, recipient)
        return message_id

    def compose(self, d: Delivery, now: datetime) -> tuple[EmailMessage, str, str]:
        """The reply as a MIME message, its Message-ID (without <>), and the recipient address."""
        meta = d.thread_meta or {}
        recipient = meta.get("from") or _identity(d, "email")
        # Derived from the reply id: a retried send carries the same Message-ID, so the
        # customer's mail system can tell a repeat from a second message.
        message_id = f"{d.reply_id}@{self.domain}"
        parent = meta.get("message_id") or meta.get("provider_message_id") or ""
        chain = [i for i in (meta.get("references") or "").split() if i]
        if not chain and not parent and d.thread_key and "@" in d.thread_key:
            chain = [d.thread_key]
        references = list(dict.fromkeys([*chain, parent] if parent else chain))
        if len(references) > _MAX_REFERENCES:
            references = references[:1] + references[-(_MAX_REFERENCES - 1):]

        message = EmailMessage(policy=SMTP_POLICY)
        message["From"] = self.from_header
        try:
            message["To"] = Address(addr_spec=recipient)
        except (ValueError, HeaderParseError):
            raise ProviderError(False, "the customer's address cannot be written in a To header") from None
        subject = (meta.get("subject") or "").strip()
        if not subject:
            subject = "Re: your message"
        elif not subject.lower().startswith("re:"):
            subject = "Re: " + subject
        message["Subject"] = subject
        message["Date"] = format_datetime(now)
        message["Message-ID"] = f"<{message_id}>"
        if parent or references:
            message["In-Reply-To"] = f"<{parent or references[-1]}>"
            message["References"] = " ".join(f"<{i}>" for i in references)
        # Quoted-printable keeps non-ASCII text 7-bit clean for relays without 8BITMIME.
        message.set_content(d.text, cte=None if d.text.isascii() else "quoted-printable")
        return message, message_id, recipient

    def _send(self, message: EmailMessage, recipient: str) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                smtp.send_message(message, from_addr=self.envelope_from, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            # The exception's own text names the address: only the codes go into the reason.
            raise ProviderError(any(400 <= c < 500 for c in codes),
                                f"smtp relay refused the recipient ({','.join(map(str, codes))})") from None
        except smtplib.SMTPResponseException as exc:
            raise ProviderError(400 <= exc.smtp_code < 500, f"smtp relay answered {exc.smtp_code}",
                                status=exc.smtp_code) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ProviderError(True, f"smtp relay unreachable: {type(exc).__name__}") from None


# -- Twilio (SMS, and WhatsApp through Twilio) -----------------------------------------------------


class TwilioSender:
    def __init__(self, settings: Settings):
        self.account_sid = settings.twilio_account_sid or ""
        self.auth_token = settings.twilio_auth_token or ""
        self.from_number = settings.twilio_from or ""
        self.api_base = settings.twilio_api_base
        base = (settings.public_url or "").rstrip("/")
        self.status_callback = base + TWILIO_STATUS_PATH if base else None

    async def send(self, to: str, from_: str, text: str) -> str:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            client = TwilioClient(self.account_sid, self.auth_token, self.from_number, api_base=self.api_base,
                                  http=http)
            return await client.send_sms(to, text, status_callback=self.status_callback, from_=from_)

    async def send_sms(self, d: Delivery) -> str:
        parts = _thread_parts(d, "sms", 2)
        if parts is not None:
            ours, customer = parts  # answer from the number the customer wrote to
            return await self.send(_phone(customer), ours, d.text)
        return await self.send(_phone(_identity(d, "phone")), self.from_number, d.text)

    async def send_whatsapp(self, d: Delivery, ours: str | None, customer: str) -> str:
        ours = ours or self.from_number.removeprefix("whatsapp:")
        return await self.send(f"whatsapp:{_phone(customer)}", f"whatsapp:{ours}", d.text)


# -- Meta (WhatsApp Cloud API, Messenger, Instagram) -----------------------------------------------


class MetaSender:
    def __init__(self, settings: Settings):
        self.access_token = settings.meta_access_token or ""
        self.graph_base = settings.meta_graph_base

    def _client(self, http: httpx.AsyncClient) -> MetaClient:
        return MetaClient(self.access_token, graph_base=self.graph_base, http=http)

    async def send_whatsapp(self, d: Delivery, phone_number_id: str, wa_id: str) -> str:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            return await self._client(http).send_whatsapp(phone_number_id, wa_id, d.text)

    async def send_messenger(self, d: Delivery) -> str:
        recipient = self._recipient(d, "messenger")
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            return await self._client(http).send_messenger(recipient, d.text)

    async def send_instagram(self, d: Delivery) -> str:
        recipient = self._recipient(d, "instagram")
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            return await self._client(http).send_instagram(recipient, d.text)

    @staticmethod
    def _recipient(d: Delivery, channel: str) -> str:
        parts = _thread_parts(d, channel, 2)
        return parts[1] if parts is not None else _identity(d, channel)


class WhatsAppSender:
    """WhatsApp threads came in through Twilio (`+` numbers) or the Cloud API (a phone number id):
    the reply leaves the way the customer's message came."""

    def __init__(self, twilio: TwilioSender | None, meta: MetaSender | None):
        self.twilio = twilio
        self.meta = meta

    async def __call__(self, d: Delivery) -> str:
        parts = _thread_parts(d, "whatsapp", 2)
        if parts is not None and parts[0].startswith("+"):
            if self.twilio is None:
                raise ProviderError(False, "outbound whatsapp through twilio is not configured")
            return await self.twilio.send_whatsapp(d, parts[0], parts[1])
        if parts is not None:
            if self.meta is None:
                raise ProviderError(False, "outbound whatsapp through meta is not configured")
            return await self.meta.send_whatsapp(d, parts[0], parts[1])
        phone_number_id = (d.thread_meta or {}).get("phone_number_id")
        if self.meta is not None and phone_number_id:
            return await self.meta.send_whatsapp(d, phone_number_id, _phone(_identity(d, "phone")).lstrip("+"))
        if self.twilio is not None:
            return await self.twilio.send_whatsapp(d, None, _identity(d, "phone"))
        raise ProviderError(False, "whatsapp thread without a business number to reply from")


# -- Telegram --------------------------------------------------------------------------------------


class TelegramSender:
    def __init__(self, settings: Settings):
        self.bot_token = settings.telegram_bot_token or ""
        self.api_base = settings.telegram_api_base

    async def __call__(self, d: Delivery) -> str:
        parts = _thread_parts(d, "telegram", 1)
        chat_id = parts[0] if parts is not None else _identity(d, "telegram")  # a private chat's id is the user's
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            client = TelegramClient(self.bot_token, api_base=self.api_base, http=http)
            return await client.send_message(int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id, d.text)
