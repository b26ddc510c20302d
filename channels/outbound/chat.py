"""Chat replies: into the session's outbox stream, where the visitor's WebSocket reads them.

The chat gateway (`channels/chat_gateway.py`) fans the outbox out to this process's sockets and,
on reconnect, replays what was sent while the visitor was away; `Nats-Msg-Id` is the reply id, so a
retried delivery is stored once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from channels.errors import ProviderError
from channels.outbound.port import Delivery


class ChatSender:
    """Chat replies go to the session's outbox; the visitor's WebSocket (now or on reconnect) reads it."""

    def __init__(self, js, names):
        self.js = js
        self.names = names

    async def __call__(self, d: Delivery) -> str | None:
        if not d.thread_key or not d.thread_key.startswith("chat:"):
            raise ProviderError(False, "chat case without a session")
        session_id = d.thread_key.split(":", 1)[1]
        frame = {
            "type": "message",
            "id": str(d.reply_id),
            "text": d.text,
            "from": "agent",
            "sent_at": datetime.now(UTC).isoformat(),
        }
        await self.js.publish(
            self.names.chat_outbox_subject(session_id),
            msgspec.json.encode(frame),
            headers={"Nats-Msg-Id": str(d.reply_id)},
        )
        return f"chat:{d.reply_id}"
