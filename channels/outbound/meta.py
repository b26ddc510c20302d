"""WhatsApp Cloud API, Messenger and Instagram replies through Meta's Graph API."""

from __future__ import annotations

import httpx

from channels.outbound.port import HTTP_TIMEOUT, Delivery, _identity, _thread_parts
from channels.social.meta import MetaClient
from services.platform.settings import Settings


class MetaSender:
    def __init__(self, settings: Settings):
        self.access_token = settings.meta_access_token or ""
        self.graph_base = settings.meta_graph_base

    def _client(self, http: httpx.AsyncClient) -> MetaClient:
        return MetaClient(self.access_token, graph_base=self.graph_base, http=http)

    async def send_whatsapp(self, d: Delivery, phone_number_id: str, wa_id: str) -> str:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            if d.template is not None:
                return await self._client(http).send_whatsapp_template(phone_number_id, wa_id, d.template)
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
