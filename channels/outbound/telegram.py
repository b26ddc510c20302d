"""Telegram replies through the Bot API's `sendMessage`."""

from __future__ import annotations

import httpx

from channels.outbound.port import HTTP_TIMEOUT, Delivery, _identity, _thread_parts
from channels.social.telegram import TelegramClient
from services.platform.settings import Settings


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
