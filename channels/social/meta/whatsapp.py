"""WhatsApp Cloud API: a change `value` (messages and delivery statuses) as interactions."""

from __future__ import annotations

from datetime import datetime

import msgspec

from channels.errors import Malformed
from channels.phone import phone_from_wa_id
from channels.social.meta.envelope import _Loose
from channels.social.meta.fields import _id, _number, _when, _with_extension
from events.interactions import Attachment, Identity, Interaction, interaction_id


class _WAMetadata(_Loose):
    display_phone_number: str = ""
    phone_number_id: str = ""


class _WAProfile(_Loose):
    name: str = ""


class _WAContact(_Loose):
    wa_id: str = ""
    profile: _WAProfile | None = None


class _WAText(_Loose):
    body: str = ""


class _WAMedia(_Loose):
    id: str = ""
    mime_type: str = ""
    sha256: str = ""
    caption: str = ""
    filename: str = ""
    voice: bool = False


class _WALocation(_Loose):
    latitude: float | None = None
    longitude: float | None = None
    name: str = ""
    address: str = ""


class _WAReply(_Loose):
    id: str = ""
    title: str = ""
    description: str = ""


class _WAFlowReply(_Loose):
    name: str = ""
    body: str = ""


class _WAInteractive(_Loose):
    type: str = ""
    button_reply: _WAReply | None = None
    list_reply: _WAReply | None = None
    nfm_reply: _WAFlowReply | None = None


class _WAButton(_Loose):
    text: str = ""
    payload: str = ""


class _WAReaction(_Loose):
    message_id: str = ""
    emoji: str = ""


class _WAContext(_Loose):
    id: str = ""


class _WAName(_Loose):
    formatted_name: str = ""


class _WAPhone(_Loose):
    phone: str = ""


class _WASharedContact(_Loose):
    name: _WAName | None = None
    phones: list[_WAPhone] | None = None


class _WAError(_Loose):
    code: int | str | None = None
    title: str = ""


class _WAMessage(_Loose):
    id: str
    from_: str = msgspec.field(name="from")
    timestamp: str | int | None = None
    type: str = ""
    text: _WAText | None = None
    image: _WAMedia | None = None
    audio: _WAMedia | None = None
    video: _WAMedia | None = None
    document: _WAMedia | None = None
    sticker: _WAMedia | None = None
    location: _WALocation | None = None
    interactive: _WAInteractive | None = None
    button: _WAButton | None = None
    reaction: _WAReaction | None = None
    contacts: list[_WASharedContact] | None = None
    context: _WAContext | None = None
    errors: list[_WAError] | None = None


class _WAStatus(_Loose):
    id: str
    status: str
    timestamp: str | int | None = None
    recipient_id: str = ""
    errors: list[_WAError] | None = None


class _WAValue(_Loose):
    messaging_product: str = ""
    metadata: _WAMetadata | None = None
    contacts: list[_WAContact] | None = None
    messages: list[_WAMessage] | None = None
    statuses: list[_WAStatus] | None = None


_WA_VALUE = msgspec.json.Decoder(_WAValue)

_WA_MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")


def _whatsapp(raw: msgspec.Raw, fallback: datetime) -> list[Interaction]:
    try:
        value = _WA_VALUE.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise Malformed("not a WhatsApp change value") from exc
    metadata = value.metadata or _WAMetadata()
    base_meta = {"provider": "meta"}
    if metadata.phone_number_id:
        base_meta["phone_number_id"] = metadata.phone_number_id
    if metadata.display_phone_number:
        base_meta["display_phone_number"] = metadata.display_phone_number
    names = {c.wa_id: c.profile.name for c in value.contacts or [] if c.profile and c.profile.name}
    out = [_whatsapp_message(m, metadata, base_meta, names, fallback) for m in value.messages or []]
    out += [_whatsapp_status(s, metadata, base_meta, fallback) for s in value.statuses or []]
    return out


def _whatsapp_media(message: _WAMessage) -> _WAMedia | None:
    return getattr(message, message.type, None) if message.type in _WA_MEDIA_TYPES else None


def _whatsapp_message(
    message: _WAMessage,
    metadata: _WAMetadata,
    base_meta: dict[str, str],
    names: dict[str, str],
    fallback: datetime,
) -> Interaction:
    message_id = _id(message.id, "message id")
    wa_id = message.from_.strip()
    phone = phone_from_wa_id(wa_id)
    meta = {**base_meta, "type": message.type or "unknown"}
    if message.context and message.context.id:
        meta["in_reply_to"] = message.context.id
    kind = "message"
    text = ""
    attachments: list[Attachment] = []
    media = _whatsapp_media(message)
    type_ = message.type

    if type_ == "text" and message.text is not None:
        text = message.text.body
    elif media is not None:
        kind = "media"
        text = media.caption
        content_type = media.mime_type or "application/octet-stream"
        name = media.filename or _with_extension(media.id or message.type, media.mime_type)
        attachments.append(Attachment(name=name, content_type=content_type, size=0, sha256="", ref=media.id or None))
        if media.sha256:
            meta["media_sha256"] = media.sha256
        if media.voice:
            meta["voice"] = "true"
    elif (
        type_ == "location"
        and (loc := message.location) is not None
        and loc.latitude is not None
        and loc.longitude is not None
    ):
        kind = "location"
        meta["latitude"], meta["longitude"] = _number(loc.latitude), _number(loc.longitude)
        place = " ".join(p for p in (loc.name, loc.address) if p)
        text = f"Location: {meta['latitude']},{meta['longitude']}" + (f" {place}" if place else "")
    elif type_ == "interactive" and message.interactive is not None:
        interactive = message.interactive
        reply = interactive.button_reply or interactive.list_reply
        if reply is not None:
            text = reply.title
            meta["reply_id"] = reply.id
        elif interactive.nfm_reply is not None:
            text = interactive.nfm_reply.body or f"[flow reply: {interactive.nfm_reply.name}]"
        else:
            text = f"[unsupported: interactive {interactive.type or 'unknown'}]"
        meta["interactive_type"] = interactive.type
    elif type_ == "button" and message.button is not None:
        text = message.button.text
        if message.button.payload:
            meta["button_payload"] = message.button.payload
    elif type_ == "reaction" and message.reaction is not None:
        kind = "reaction"
        text = message.reaction.emoji  # empty when the customer removed their reaction
        meta["reacted_to"] = message.reaction.message_id
    elif type_ == "contacts" and message.contacts:
        cards = []
        for card in message.contacts:
            name = card.name.formatted_name if card.name else ""
            phones = " ".join(p.phone for p in card.phones or [] if p.phone)
            cards.append(" ".join(part for part in (name, phones) if part))
        text = "Contact: " + "; ".join(cards)
    else:
        text = f"[unsupported: {message.type or 'unknown'}]"
        codes = [str(e.code) for e in message.errors or [] if e.code is not None]
        if codes:
            meta["error_code"] = ",".join(codes)

    name = names.get(wa_id)
    return Interaction(
        id=interaction_id("whatsapp", message_id),
        channel="whatsapp",
        direction="inbound",
        occurred_at=_when(message.timestamp, fallback),
        identities=[Identity("phone", phone)],
        kind=kind,
        text=text,
        profile={"name": name} if name else {},
        thread_key=f"whatsapp:{metadata.phone_number_id}:{wa_id}",
        provider_message_id=message_id,
        attachments=attachments,
        meta=meta,
    )


def _whatsapp_status(
    status: _WAStatus, metadata: _WAMetadata, base_meta: dict[str, str], fallback: datetime
) -> Interaction:
    message_id = _id(status.id, "status id")
    state = status.status.strip().lower()
    if not state:
        raise Malformed("status is missing")
    identities = []
    if status.recipient_id:
        try:
            identities.append(Identity("phone", phone_from_wa_id(status.recipient_id)))
        except Malformed:
            pass  # a group or a business-scoped id: the status still belongs to its message
    meta = dict(base_meta)
    errors = status.errors or []
    codes = [str(e.code) for e in errors if e.code is not None]
    if codes:
        meta["error_code"] = ",".join(codes)
    titles = [e.title for e in errors if e.title]
    if titles:
        meta["error_title"] = "; ".join(titles)
    reasons = [f"{'' if e.code is None else e.code} {e.title}".strip() for e in errors]
    if any(reasons):
        # What the core records as the reason when a reply fails.
        meta["error"] = "; ".join(r for r in reasons if r)
    return Interaction(
        id=interaction_id("whatsapp", f"{message_id}:status:{state}"),
        channel="whatsapp",
        direction="outbound",
        occurred_at=_when(status.timestamp, fallback),
        identities=identities,
        kind="status",
        status=state,
        thread_key=f"whatsapp:{metadata.phone_number_id}:{status.recipient_id}" if status.recipient_id else None,
        provider_message_id=message_id,
        meta=meta,
    )
