"""Email replies through an SMTP relay, threaded onto the customer's last message."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr

from channels.errors import ProviderError
from channels.outbound.port import Delivery, _identity

SMTP_TIMEOUT = 30.0
# References grows with every message of a long thread; keep the root and the most recent ones.
_MAX_REFERENCES = 20


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
            references = references[:1] + references[-(_MAX_REFERENCES - 1) :]

        message = EmailMessage(policy=SMTP_POLICY)
        message["From"] = self.from_header
        try:
            message["To"] = Address(addr_spec=recipient)
        except (ValueError, HeaderParseError):
            raise ProviderError(False, "the customer's address cannot be written in a To header") from None
        subject = (meta.get("subject") or "").strip()
        if d.campaign:
            # A message of our own, not a reply: the campaign's name as it stands, no thread.
            subject = subject or "News"
            parent, references = "", []
        elif not subject:
            subject = "Re: your message"
        elif not subject.lower().startswith("re:"):
            subject = "Re: " + subject
        message["Subject"] = subject
        message["Date"] = format_datetime(now)
        message["Message-ID"] = f"<{message_id}>"
        if parent or references:
            message["In-Reply-To"] = f"<{parent or references[-1]}>"
            message["References"] = " ".join(f"<{i}>" for i in references)
        text = d.text
        if d.unsubscribe_url:
            # RFC 2369 / RFC 8058: mail clients offer one-click unsubscribe (a POST to the URL), and
            # the same link is in the body for a reader whose client does not.
            message["List-Unsubscribe"] = f"<{d.unsubscribe_url}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            text = f"{text.rstrip()}\n\n--\nUnsubscribe: {d.unsubscribe_url}\n"
        # Quoted-printable keeps non-ASCII text 7-bit clean for relays without 8BITMIME.
        message.set_content(text, cte=None if text.isascii() else "quoted-printable")
        return message, message_id, recipient

    def _send(self, message: EmailMessage, recipient: str) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                smtp.send_message(message, from_addr=self.envelope_from, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            # The exception's own text names the address: only the codes go into the reason.
            raise ProviderError(
                any(400 <= c < 500 for c in codes), f"smtp relay refused the recipient ({','.join(map(str, codes))})"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise ProviderError(
                400 <= exc.smtp_code < 500, f"smtp relay answered {exc.smtp_code}", status=exc.smtp_code
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ProviderError(True, f"smtp relay unreachable: {type(exc).__name__}") from None
