"""Messenger and Instagram messaging events (messages, postbacks, reactions, edits, deliveries) as
interactions.
"""

from __future__ import annotations

import mimetypes
from datetime import datetime
from typing import Any

from channels.social.meta.envelope import _Entry, _MessagingEvent, _MessengerAttachment
from channels.social.meta.fields import _id, _number, _url_name, _when
from events.interactions import Attachment, Identity, Interaction, interaction_id


def _messenger_attachment(index: int, attachment: _MessengerAttachment) -> Attachment | None:
    payload = attachment.payload
    url = payload.url if payload and payload.url else ""
    if not url:
        return None
    name = _url_name(url, f"{attachment.type or 'attachment'}{index}")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Attachment(name=name, content_type=content_type, size=0, sha256="", ref=url)


def _messaging(channel: str, entry: _Entry, event: _MessagingEvent, fallback: datetime) -> list[Interaction]:
    message = event.message
    if message is not None and message.is_echo:
        return []  # our own send, coming back: recorded when we sent it
    if (
        message is None
        and event.postback is None
        and event.reaction is None
        and event.delivery is None
        and event.message_edit is None
    ):
        return []  # read receipts, referrals, opt-ins: nothing for the timeline

    sender_id = _id(event.sender.id if event.sender else None, "sender.id")
    account_id = str(event.recipient.id) if event.recipient and event.recipient.id != "" else ""
    account_id = account_id or str(entry.id)
    occurred_at = _when(event.timestamp, fallback)
    identity = Identity(channel, sender_id)
    thread_key = f"{channel}:{account_id}:{sender_id}"
    id_key = "page_id" if channel == "messenger" else "instagram_id"
    meta = {"provider": "meta"}
    if account_id:
        meta[id_key] = account_id

    def build(provider_id: str, dedup_key: str, **fields: Any) -> Interaction:
        return Interaction(
            id=interaction_id(channel, dedup_key),
            channel=channel,
            direction=fields.pop("direction", "inbound"),
            occurred_at=occurred_at,
            identities=[identity],
            thread_key=thread_key,
            provider_message_id=provider_id,
            **fields,
        )

    if message is not None:
        if message.is_deleted:
            return []  # an unsend: the original stays on the record
        mid = _id(message.mid, "message.mid")
        text = message.text or ""
        kind = "message"
        attachments: list[Attachment] = []
        msg_meta = dict(meta)
        for index, attachment in enumerate(message.attachments or []):
            payload = attachment.payload
            if attachment.type == "location" and payload and payload.coordinates:
                coords = payload.coordinates
                if coords.lat is not None and coords.long is not None:
                    kind = "location"
                    msg_meta["latitude"] = _number(coords.lat)
                    msg_meta["longitude"] = _number(coords.long)
                    text = text or f"Location: {msg_meta['latitude']},{msg_meta['longitude']}"
                    continue
            built = _messenger_attachment(index, attachment)
            if built is not None:
                attachments.append(built)
            elif not text:
                text = f"[unsupported: {attachment.type or 'attachment'}]"
        if attachments and kind == "message":
            kind = "media"
            msg_meta["attachment_types"] = ",".join(a.type for a in message.attachments or [])
        if not text and not attachments and kind == "message":
            text = "[unsupported: message]"
        if message.quick_reply and message.quick_reply.payload:
            msg_meta["quick_reply_payload"] = message.quick_reply.payload
        if message.reply_to and message.reply_to.mid:
            msg_meta["in_reply_to"] = message.reply_to.mid
        return [build(mid, mid, kind=kind, text=text, attachments=attachments, meta=msg_meta)]

    if event.postback is not None:
        postback = event.postback
        # Older postbacks carry no mid: the sender and the moment identify the tap.
        mid = postback.mid or f"postback:{sender_id}:{event.timestamp}"
        pb_meta = {**meta, "postback_payload": postback.payload or ""}
        return [build(mid, mid, text=postback.title or "[postback]", meta=pb_meta)]

    if event.reaction is not None:
        reaction = event.reaction
        mid = _id(reaction.mid, "reaction.mid")
        emoji = (reaction.emoji or "") if reaction.action != "unreact" else ""
        key = f"{mid}:reaction:{sender_id}:{event.timestamp}:{reaction.action}"
        r_meta = {**meta, "reacted_to": mid, "reaction_action": reaction.action}
        return [build(mid, key, kind="reaction", text=emoji, meta=r_meta)]

    if event.message_edit is not None:
        edit = event.message_edit
        mid = _id(edit.mid, "message_edit.mid")
        e_meta = {**meta, "edit_of": mid, "edited": "true"}
        key = f"{mid}:edit:{edit.num_edit}"
        return [build(mid, key, text=edit.text or "", meta=e_meta)]

    # Delivery receipts: one status per message delivered to the customer.
    statuses = []
    for mid in (event.delivery.mids if event.delivery else None) or []:
        if not isinstance(mid, str) or not mid:
            continue
        statuses.append(
            build(
                mid, f"{mid}:status:delivered", kind="status", status="delivered", direction="outbound", meta=dict(meta)
            )
        )
    return statuses
