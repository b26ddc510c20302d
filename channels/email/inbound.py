"""One inbound email, from either door (the SMTP listener or the raw-MIME webhook), into Switchboard.

Parse, keep the attachment bytes, publish: the caller answers success only when this returns.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from channels.blobs import blob_ref, blobs_of
from channels.email.parse import MalformedEmail, parse_email
from events.interactions import Interaction

__all__ = ["MalformedEmail", "receive_email"]


async def receive_email(
    services, raw: bytes, received_at: datetime | None = None
) -> tuple[Interaction, bool]:
    """Records one raw RFC 5322 message; returns the interaction and whether it was new.

    Raises `MalformedEmail` (nothing stored) for input that is not a usable message. Attachment
    bytes are stored before the interaction is published, so a recorded `blob:` ref always
    resolves.
    """
    parsed = parse_email(raw, received_at=received_at or datetime.now(UTC))
    interaction = parsed.interaction
    changes: dict = {}
    if interaction.attachments:
        blobs = await blobs_of(services)
        attachments = []
        for attachment, data in zip(interaction.attachments, parsed.attachment_bytes, strict=True):
            digest = await blobs.put(data)
            attachments.append(msgspec.structs.replace(attachment, sha256=digest, ref=blob_ref(digest)))
        changes["attachments"] = attachments
    meta = dict(interaction.meta)
    # Where a reply goes: the verified sender of this very message (a customer may have several).
    meta["from"] = interaction.identities[0].value
    if parsed.full_text and parsed.full_text != interaction.text:
        # The quoted conversation the customer's text was cut from, for an agent who wants it.
        meta["full_text"] = parsed.full_text
    changes["meta"] = meta
    interaction = msgspec.structs.replace(interaction, **changes)
    is_new = await services.publisher.publish(interaction)
    return interaction, is_new
