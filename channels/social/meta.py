"""Meta's webhooks (WhatsApp Cloud API, Messenger, Instagram messaging) and the Graph API sends.

One endpoint receives all three: the envelope's `object` tells them apart
(`whatsapp_business_account`, `page`, `instagram`). Every request is signed with the app secret
(`X-Hub-Signature-256`); the endpoint's GET answers Meta's subscription handshake.

Decoding goes through msgspec Structs that name only the fields we read: Meta adds fields often,
and an unknown field must never turn a customer's message into a 400.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from channels.errors import (
    Malformed,
    ProviderError,
    Unauthorized,
    http_failure,
    transport_failure,
)
from channels.phone import phone_from_wa_id
from events.interactions import Attachment, Identity, Interaction, interaction_id

SIGNATURE_HEADER = "X-Hub-Signature-256"
DEFAULT_GRAPH_BASE = "https://graph.facebook.com/v21.0"

Id = str | int  # Meta sends ids as strings; some docs and test tools send numbers


class _Loose(msgspec.Struct, forbid_unknown_fields=False):
    """Base of every decoded shape: unknown fields are accepted and ignored."""


# -- envelope ------------------------------------------------------------------------------------


class _Party(_Loose):
    id: Id = ""


class _Change(_Loose):
    field: str = ""
    # Decoded later and only for the fields we handle: other webhook fields (template status,
    # account updates, comments) have shapes of their own.
    value: msgspec.Raw = msgspec.Raw(b"null")


class _MessengerPayload(_Loose):
    url: str | None = None
    sticker_id: Id | None = None
    title: str | None = None
    coordinates: _Coordinates | None = None


class _Coordinates(_Loose):
    lat: float | None = None
    long: float | None = None


class _MessengerAttachment(_Loose):
    type: str = ""
    payload: _MessengerPayload | None = None
    title: str | None = None


class _MessengerQuickReply(_Loose):
    payload: str = ""


class _MessengerReplyTo(_Loose):
    mid: str = ""


class _MessengerMessage(_Loose):
    mid: str = ""
    text: str | None = None
    is_echo: bool = False
    is_deleted: bool = False
    is_unsupported: bool = False
    attachments: list[_MessengerAttachment] | None = None
    quick_reply: _MessengerQuickReply | None = None
    reply_to: _MessengerReplyTo | None = None


class _MessengerPostback(_Loose):
    mid: str = ""
    title: str | None = None
    payload: str | None = None


class _MessengerReaction(_Loose):
    mid: str = ""
    action: str = ""
    emoji: str | None = None
    reaction: str | None = None


class _MessengerDelivery(_Loose):
    mids: list[str] | None = None


class _MessengerEdit(_Loose):
    mid: str = ""
    text: str | None = None
    num_edit: int = 0


class _MessagingEvent(_Loose):
    sender: _Party | None = None
    recipient: _Party | None = None
    timestamp: int | float | str | None = None
    message: _MessengerMessage | None = None
    postback: _MessengerPostback | None = None
    reaction: _MessengerReaction | None = None
    delivery: _MessengerDelivery | None = None
    message_edit: _MessengerEdit | None = None


class _Entry(_Loose):
    id: Id = ""
    time: int | float | None = None
    changes: list[_Change] | None = None
    messaging: list[_MessagingEvent] | None = None


class _Envelope(_Loose):
    object: str
    entry: list[_Entry] | None = None


# -- WhatsApp `value` ----------------------------------------------------------------------------


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


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_WA_VALUE = msgspec.json.Decoder(_WAValue)

_WA_MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")


# -- verification --------------------------------------------------------------------------------


def meta_signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value Meta sends: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_meta_signature(app_secret: str, body: bytes, header: str | None) -> None:
    """Raises `Unauthorized` unless `header` is the app secret's signature of exactly `body`."""
    if not header:
        raise Unauthorized(f"{SIGNATURE_HEADER} is missing")
    if not app_secret:
        raise Unauthorized("no app secret configured")
    scheme, _, received = header.strip().partition("=")
    if scheme.lower() != "sha256" or not received:
        raise Unauthorized(f"{SIGNATURE_HEADER} is not sha256=<hex>")
    expected = meta_signature(app_secret, body).partition("=")[2]
    if not hmac.compare_digest(expected.encode("ascii"), received.strip().lower().encode("utf-8")):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body")


def _param(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value if isinstance(value, str) else ""


def verify_handshake(params: Mapping[str, str], verify_token: str) -> str:
    """Meta's subscription check (`GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C`):
    returns the challenge, to be answered as the plain-text body, when the token is ours."""
    mode = _param(params, "hub.mode")
    challenge = _param(params, "hub.challenge")
    if mode != "subscribe" or not challenge:
        raise Malformed("expected hub.mode=subscribe and a hub.challenge")
    token = _param(params, "hub.verify_token")
    if not token or not verify_token:
        raise Unauthorized("hub.verify_token is missing")
    if not hmac.compare_digest(token.encode("utf-8"), verify_token.encode("utf-8")):
        raise Unauthorized("hub.verify_token does not match")
    return challenge


# -- parsing -------------------------------------------------------------------------------------


def _when(value: int | float | str | None, fallback: datetime) -> datetime:
    """Meta's timestamps: epoch seconds (WhatsApp, as a string) or milliseconds (Messenger)."""
    if value is None or value == "":
        return fallback
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise Malformed("timestamp is not an epoch time")
        value = int(value)
    # Seconds stay below 1e11 until the year 5138; milliseconds passed it in 1973.
    seconds = value / 1000 if value >= 100_000_000_000 else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Malformed("timestamp out of range") from exc


def _id(value: Id | None, what: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise Malformed(f"{what} is missing")
    return text


def _number(value: float) -> str:
    return repr(value)


def _url_name(url: str, fallback: str) -> str:
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    return path.rstrip("/").rsplit("/", 1)[-1] or fallback


def _with_extension(name: str, content_type: str) -> str:
    if "." in name or not content_type:
        return name
    return name + (mimetypes.guess_extension(content_type.split(";")[0].strip()) or "")


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


# WhatsApp --------------------------------------------------------------------------------------


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
    names = {
        c.wa_id: c.profile.name for c in value.contacts or [] if c.profile and c.profile.name
    }
    out = [
        _whatsapp_message(m, metadata, base_meta, names, fallback) for m in value.messages or []
    ]
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
        attachments.append(
            Attachment(name=name, content_type=content_type, size=0, sha256="", ref=media.id or None)
        )
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
        thread_key=f"whatsapp:{metadata.phone_number_id}:{status.recipient_id}"
        if status.recipient_id
        else None,
        provider_message_id=message_id,
        meta=meta,
    )


# Messenger and Instagram -----------------------------------------------------------------------


def _messenger_attachment(index: int, attachment: _MessengerAttachment) -> Attachment | None:
    payload = attachment.payload
    url = payload.url if payload and payload.url else ""
    if not url:
        return None
    name = _url_name(url, f"{attachment.type or 'attachment'}{index}")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Attachment(name=name, content_type=content_type, size=0, sha256="", ref=url)


def _messaging(
    channel: str, entry: _Entry, event: _MessagingEvent, fallback: datetime
) -> list[Interaction]:
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
            build(mid, f"{mid}:status:delivered", kind="status", status="delivered",
                  direction="outbound", meta=dict(meta))
        )
    return statuses


# -- outbound ------------------------------------------------------------------------------------

# Graph API error codes that mean "later": throttling and transient failures.
_RETRYABLE_CODES = {1, 2, 4, 17, 32, 341, 613, 80007, 130429, 131056}


class MetaClient:
    """Sends replies through the Graph API: WhatsApp Cloud API, Messenger and Instagram."""

    def __init__(
        self,
        access_token: str,
        *,
        graph_base: str = DEFAULT_GRAPH_BASE,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ):
        self._graph_base = graph_base.rstrip("/")
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def send_whatsapp(self, phone_number_id: str, to_wa_id: str, text: str) -> str:
        """Sends a text from our number `phone_number_id`; returns the `wamid` of the message."""
        to = to_wa_id.strip()
        if to.lower().startswith("whatsapp:"):
            to = to[len("whatsapp:"):]
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.lstrip("+"),
            "type": "text",
            "text": {"preview_url": False, "body": text},
        }
        payload = await self._post(f"{self._graph_base}/{phone_number_id}/messages", body)
        messages = payload.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            message_id = messages[0].get("id")
            if isinstance(message_id, str) and message_id:
                return message_id
        raise ProviderError(False, "meta answered without a message id")

    async def send_messenger(self, recipient_id: str, text: str) -> str:
        """Sends a reply to a Messenger user (page-scoped id); returns the message id."""
        return await self._send_page_message(recipient_id, text)

    async def send_instagram(self, recipient_id: str, text: str) -> str:
        """Sends a reply to an Instagram user (Instagram-scoped id); returns the message id."""
        return await self._send_page_message(recipient_id, text)

    async def _send_page_message(self, recipient_id: str, text: str) -> str:
        body = {
            "recipient": {"id": recipient_id},
            "messaging_type": "RESPONSE",
            "message": {"text": text},
        }
        payload = await self._post(f"{self._graph_base}/me/messages", body)
        message_id = payload.get("message_id")
        if isinstance(message_id, str) and message_id:
            return message_id
        raise ProviderError(False, "meta answered without a message id")

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.post(url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise transport_failure("meta", exc) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not response.is_success:
            error = payload.get("error") if isinstance(payload, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            transient = isinstance(error, dict) and error.get("is_transient") is True
            retryable = (
                response.status_code >= 500
                or response.status_code in (408, 429)
                or transient
                or code in _RETRYABLE_CODES
            )
            raise http_failure(
                "meta",
                response,
                provider_code=str(code) if code is not None else None,
                retryable=retryable,
            )
        if not isinstance(payload, dict):
            raise ProviderError(False, "meta answered without JSON", status=response.status_code)
        return payload

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> MetaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
