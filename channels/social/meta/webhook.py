"""One webhook request, whatever it carries, as the interactions in it."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from channels.errors import Malformed
from channels.social.meta.envelope import _ENVELOPE
from channels.social.meta.messenger import _messaging
from channels.social.meta.whatsapp import _whatsapp
from events.interactions import Interaction


def parse_meta_webhook(body: bytes, *, received_at: datetime | None = None) -> list[Interaction]:
    """Every customer message and delivery status in one Meta webhook request, in order.

    Echoes of our own sends, read receipts and webhook fields we do not handle yield nothing;
    a message type we do not know yet is kept as `[unsupported: TYPE]` rather than dropped.
    Raises `Malformed` when the body is not a Meta webhook.
    """
    try:
        envelope = _ENVELOPE.decode(body)
    except (msgspec.DecodeError, RecursionError, TypeError) as exc:
        raise Malformed("not a Meta webhook JSON body") from exc
    fallback = received_at or datetime.now(UTC)
    interactions: list[Interaction] = []
    for entry in envelope.entry or []:
        if envelope.object == "whatsapp_business_account":
            for change in entry.changes or []:
                if change.field in ("messages", ""):
                    interactions.extend(_whatsapp(change.value, fallback))
        elif envelope.object in ("page", "instagram"):
            channel = "messenger" if envelope.object == "page" else "instagram"
            for event in entry.messaging or []:
                interactions.extend(_messaging(channel, entry, event, fallback))
    return interactions
