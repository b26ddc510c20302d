"""SMS replies, and WhatsApp replies to threads that came in through Twilio, by Twilio's REST API."""

from __future__ import annotations

from datetime import datetime

import httpx

from channels.errors import ProviderError
from channels.outbound.port import HTTP_TIMEOUT, Delivery, _identity, _phone, _thread_parts
from channels.sms.twilio import TwilioClient
from services.platform.settings import Settings

TWILIO_STATUS_PATH = "/channels/sms/twilio/status"


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
            client = TwilioClient(
                self.account_sid, self.auth_token, self.from_number, api_base=self.api_base, http=http
            )
            return await client.send_sms(to, text, status_callback=self.status_callback, from_=from_)

    async def send_sms(self, d: Delivery) -> str:
        to, from_ = self.sms_addresses(d)
        return await self.send(to, from_, d.text)

    def sms_addresses(self, d: Delivery) -> tuple[str, str]:
        """(to, from) of an SMS reply: from the number the customer wrote to, else ours."""
        parts = _thread_parts(d, "sms", 2)
        if parts is not None:
            ours, customer = parts
            return _phone(customer), ours
        return _phone(_identity(d, "phone")), self.from_number

    def whatsapp_addresses(self, ours: str | None, customer: str) -> tuple[str, str]:
        ours = ours or self.from_number.removeprefix("whatsapp:")
        return f"whatsapp:{_phone(customer)}", f"whatsapp:{ours}"

    async def find_sent(self, to: str, from_: str, text: str, since: datetime) -> str | None:
        """The SID of a message already sent to `to` from `from_` with `text` since `since`, or None."""
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            client = TwilioClient(
                self.account_sid, self.auth_token, self.from_number, api_base=self.api_base, http=http
            )
            return await client.find_sent(to, text, since, from_=from_)

    async def send_whatsapp(self, d: Delivery, ours: str | None, customer: str) -> str:
        if d.template is not None:
            # Twilio sends templates as Content API `ContentSid`s, not Graph API template objects.
            raise ProviderError(False, "whatsapp templates go out through the cloud api (meta), not twilio")
        to, from_ = self.whatsapp_addresses(ours, customer)
        return await self.send(to, from_, d.text)
