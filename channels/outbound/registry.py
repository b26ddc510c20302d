"""Which senders a process has: one per channel it can reply on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from channels.errors import ProviderError
from channels.outbound.chat import ChatSender
from channels.outbound.email import EmailSender
from channels.outbound.meta import MetaSender
from channels.outbound.port import Delivery, Sender
from channels.outbound.telegram import TelegramSender
from channels.outbound.twilio import TwilioSender
from channels.outbound.whatsapp import WhatsAppSender
from services.platform.settings import Settings
from services.platform.streams import Names

Lookup = Callable[[datetime], Awaitable[str | None]]


def provider_senders(settings: Settings) -> dict[str, Sender]:
    """One sender per provider channel whose credentials are configured; a channel without gets none
    (the relay records such a reply as failed: "not configured")."""
    senders: dict[str, Sender] = {}
    if settings.smtp_relay and settings.email_from:
        senders["email"] = EmailSender(settings.smtp_relay, settings.email_from)
    twilio = (
        TwilioSender(settings)
        if (settings.twilio_account_sid and settings.twilio_from and settings.twilio_auth_token)
        else None
    )
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


# Channels whose provider drops a resent message itself: chat's outbox dedupes by message id, and an
# email carries a Message-ID derived from the reply, so a resend is the same message to the mailbox.
RESEND_SAFE = frozenset({"chat", "email"})


def provider_lookup(settings: Settings, d: Delivery) -> Lookup | None:
    """How to ask the provider whether this message was sent already (for an attempt in doubt), or
    None where the provider cannot be asked: Twilio's message list, for SMS and WhatsApp through Twilio."""
    if not (settings.twilio_account_sid and settings.twilio_from and settings.twilio_auth_token):
        return None
    twilio = TwilioSender(settings)
    meta = MetaSender(settings) if settings.meta_access_token else None
    try:
        if d.channel == "sms":
            to, from_ = twilio.sms_addresses(d)
        elif d.channel == "whatsapp":
            route = WhatsAppSender(twilio, meta).twilio_route(d)
            if route is None:
                return None
            to, from_ = route
        else:
            return None
    except ProviderError:
        return None

    async def lookup(since: datetime) -> str | None:
        return await twilio.find_sent(to, from_, d.text, since)

    return lookup


def channel_senders(settings: Settings, js, names: Names) -> dict[str, Sender]:
    """Every sender of a relay process: chat always (its outbox is a stream of ours, reached through
    `js`), each provider when its credentials are configured."""
    senders: dict[str, Sender] = {"chat": ChatSender(js, names)}
    senders.update(provider_senders(settings))
    return senders
