"""WhatsApp replies leave the way the customer's message came: through Twilio or the Cloud API."""

from __future__ import annotations

from channels.errors import ProviderError
from channels.outbound.meta import MetaSender
from channels.outbound.port import Delivery, _identity, _phone, _thread_parts
from channels.outbound.twilio import TwilioSender


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

    def twilio_route(self, d: Delivery) -> tuple[str, str] | None:
        """(to, from) when this reply leaves through Twilio (which can be asked what it sent), else None."""
        if self.twilio is None:
            return None
        parts = _thread_parts(d, "whatsapp", 2)
        if parts is not None:
            return self.twilio.whatsapp_addresses(parts[0], parts[1]) if parts[0].startswith("+") else None
        if self.meta is not None and (d.thread_meta or {}).get("phone_number_id"):
            return None
        return self.twilio.whatsapp_addresses(None, _identity(d, "phone"))
