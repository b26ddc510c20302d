"""Telegram: a Bot API `Update` posted to our webhook, and the bot's `sendMessage`.

Telegram authenticates its webhook calls with the `secret_token` we registered through
`setWebhook`, echoed in `X-Telegram-Bot-Api-Secret-Token`.
"""

from __future__ import annotations

import hmac
import mimetypes
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from channels.errors import (
    Malformed,
    ProviderError,
    Unauthorized,
    http_failure,
    transport_failure,
)
from channels.phone import normalize_phone
from events.interactions import Attachment, Identity, Interaction, interaction_id

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_API_BASE = "https://api.telegram.org"


class _Loose(msgspec.Struct, forbid_unknown_fields=False):
    """Base of every decoded shape: the Bot API grows often; unknown fields are ignored."""


class _User(_Loose):
    id: int
    is_bot: bool = False
    first_name: str = ""
    last_name: str = ""
    username: str = ""


class _Chat(_Loose):
    id: int
    type: str = ""


class _PhotoSize(_Loose):
    file_id: str
    file_unique_id: str = ""
    width: int = 0
    height: int = 0
    file_size: int = 0


class _File(_Loose):
    file_id: str
    file_unique_id: str = ""
    file_name: str = ""
    mime_type: str = ""
    file_size: int = 0


class _Sticker(_Loose):
    file_id: str
    file_unique_id: str = ""
    emoji: str = ""
    is_animated: bool = False
    is_video: bool = False
    file_size: int = 0


class _Contact(_Loose):
    phone_number: str
    first_name: str = ""
    last_name: str = ""
    user_id: int | None = None


class _Location(_Loose):
    latitude: float
    longitude: float


class _Venue(_Loose):
    location: _Location
    title: str = ""
    address: str = ""


class _MessageRef(_Loose):
    message_id: int


class _Message(_Loose):
    message_id: int
    date: int
    chat: _Chat
    from_: _User | None = msgspec.field(default=None, name="from")
    sender_chat: _Chat | None = None
    edit_date: int | None = None
    text: str | None = None
    caption: str | None = None
    photo: list[_PhotoSize] | None = None
    document: _File | None = None
    voice: _File | None = None
    audio: _File | None = None
    video: _File | None = None
    video_note: _File | None = None
    animation: _File | None = None
    sticker: _Sticker | None = None
    contact: _Contact | None = None
    location: _Location | None = None
    venue: _Venue | None = None
    reply_to_message: _MessageRef | None = None


class _Update(_Loose):
    update_id: int
    message: _Message | None = None
    edited_message: _Message | None = None
    channel_post: _Message | None = None
    edited_channel_post: _Message | None = None
    business_message: _Message | None = None
    edited_business_message: _Message | None = None


_UPDATE = msgspec.json.Decoder(_Update)

# The update fields that carry a message, in the Bot API's order; an Update holds at most one.
_MESSAGE_FIELDS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
)

# Default content types where the Bot API documents a format but may omit `mime_type`.
_DEFAULT_TYPES = {
    "voice": ("audio/ogg", ".ogg"),
    "audio": ("audio/mpeg", ".mp3"),
    "video": ("video/mp4", ".mp4"),
    "video_note": ("video/mp4", ".mp4"),
    "animation": ("video/mp4", ".mp4"),
    "document": ("application/octet-stream", ""),
}


def verify_telegram_secret(expected: str, header: str | None) -> None:
    """Raises `Unauthorized` unless `header` is the webhook's secret token."""
    if not header:
        raise Unauthorized("X-Telegram-Bot-Api-Secret-Token is missing")
    if not expected or not hmac.compare_digest(header.encode("utf-8"), expected.encode("utf-8")):
        raise Unauthorized("X-Telegram-Bot-Api-Secret-Token does not match")


def _when(epoch: int) -> datetime:
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Malformed("date out of range") from exc


def _file(kind: str, file: _File) -> Attachment:
    default_type, default_ext = _DEFAULT_TYPES[kind]
    content_type = (
        file.mime_type or (mimetypes.guess_type(file.file_name)[0] if file.file_name else None) or default_type
    )
    name = file.file_name or f"{file.file_unique_id or kind}{default_ext}"
    return Attachment(
        name=name,
        content_type=content_type,
        size=max(file.file_size, 0),
        sha256="",
        ref=file.file_id,
    )


def _attachments(message: _Message) -> list[Attachment]:
    attachments = []
    if message.photo:
        # Telegram sends one photo in several sizes, smallest first: keep the largest.
        best = max(message.photo, key=lambda p: (p.width * p.height, p.file_size))
        attachments.append(
            Attachment(
                name=f"{best.file_unique_id or 'photo'}.jpg",
                content_type="image/jpeg",
                size=max(best.file_size, 0),
                sha256="",
                ref=best.file_id,
            )
        )
    for kind in ("document", "voice", "audio", "video", "video_note", "animation"):
        file = getattr(message, kind)
        if file is not None:
            attachments.append(_file(kind, file))
    if message.sticker is not None:
        sticker = message.sticker
        content_type, ext = (
            ("video/webm", ".webm")
            if sticker.is_video
            else ("application/x-tgsticker", ".tgs")
            if sticker.is_animated
            else ("image/webp", ".webp")
        )
        attachments.append(
            Attachment(
                name=f"{sticker.file_unique_id or 'sticker'}{ext}",
                content_type=content_type,
                size=max(sticker.file_size, 0),
                sha256="",
                ref=sticker.file_id,
            )
        )
    return attachments


def _location_text(location: _Location, place: str = "") -> str:
    text = f"Location: {location.latitude!r},{location.longitude!r}"
    return f"{text} {place}" if place else text


def _interaction(update_type: str, message: _Message) -> Interaction:
    chat_id = message.chat.id
    sender = message.from_
    # Channel posts come from the channel itself, not from a person.
    sender_id = (
        sender.id if sender is not None else (message.sender_chat.id if message.sender_chat is not None else chat_id)
    )
    identities = [Identity("telegram", str(sender_id))]
    profile: dict[str, str] = {}
    if sender is not None:
        name = " ".join(p for p in (sender.first_name.strip(), sender.last_name.strip()) if p)
        if name:
            profile["name"] = name
        if sender.username:
            profile["username"] = sender.username

    meta = {
        "provider": "telegram",
        "update_type": update_type,
        "chat_id": str(chat_id),
        "message_id": str(message.message_id),
    }
    if message.chat.type:
        meta["chat_type"] = message.chat.type
    if message.reply_to_message is not None:
        meta["in_reply_to"] = f"{chat_id}:{message.reply_to_message.message_id}"

    text = message.text if message.text is not None else (message.caption or "")
    attachments = _attachments(message)
    kind = "media" if attachments else "message"
    if message.venue is not None:
        kind = "location"
        location = message.venue.location
        place = " ".join(p for p in (message.venue.title, message.venue.address) if p)
        text = text or _location_text(location, place)
        meta["latitude"], meta["longitude"] = repr(location.latitude), repr(location.longitude)
    elif message.location is not None:
        kind = "location"
        text = text or _location_text(message.location)
        meta["latitude"] = repr(message.location.latitude)
        meta["longitude"] = repr(message.location.longitude)
    if message.contact is not None:
        contact = message.contact
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p)
        text = text or " ".join(p for p in ("Contact:", name, contact.phone_number) if p)
        # A shared contact of the sender's own account: Telegram vouches that it is theirs, yet
        # it is recorded as a claim, like any number a person gives us about themselves.
        if sender is not None and contact.user_id == sender.id:
            try:
                identities.append(Identity("phone", normalize_phone(contact.phone_number), verified=False))
            except Malformed:
                pass
    if not text and not attachments:
        text = "[unsupported: message]"

    provider_message_id = f"{chat_id}:{message.message_id}"
    dedup_key = provider_message_id
    occurred_at = _when(message.date)
    if update_type.startswith("edited_"):
        # An edit is a new entry on the timeline, not a retry of the original: its own id.
        edit_date = message.edit_date if message.edit_date is not None else message.date
        dedup_key = f"{provider_message_id}:edit:{edit_date}"
        occurred_at = _when(edit_date)
        meta["edited"] = "true"
        meta["edit_of"] = provider_message_id

    return Interaction(
        id=interaction_id("telegram", dedup_key),
        channel="telegram",
        direction="inbound",
        occurred_at=occurred_at,
        identities=identities,
        kind=kind,
        text=text,
        profile=profile,
        thread_key=f"telegram:{chat_id}",
        provider_message_id=provider_message_id,
        attachments=attachments,
        meta=meta,
    )


def parse_telegram_update(body: bytes) -> list[Interaction]:
    """The message an `Update` carries, as a list of zero or one interaction.

    Updates without a message (callback queries, member changes, polls) yield `[]`.
    Raises `Malformed` when the body is not an `Update`.
    """
    try:
        update = _UPDATE.decode(body)
    except (msgspec.DecodeError, RecursionError, TypeError) as exc:
        raise Malformed("not a Telegram Update JSON body") from exc
    for field in _MESSAGE_FIELDS:
        message = getattr(update, field)
        if message is not None:
            return [_interaction(field, message)]
    return []


class TelegramClient:
    """Sends messages as our bot through the Bot API."""

    def __init__(
        self,
        bot_token: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ):
        # The URL holds the token: it never goes into an error message or a log line.
        self._url = f"{api_base.rstrip('/')}/bot{bot_token}/sendMessage"
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def send_message(self, chat_id: int | str, text: str) -> str:
        """Sends `text` to `chat_id`; returns `"{chat_id}:{message_id}"`, the same spelling as the
        provider message id of inbound Telegram messages (message ids are unique per chat only)."""
        try:
            response = await self._http.post(self._url, json={"chat_id": chat_id, "text": text})
        except httpx.HTTPError as exc:
            raise transport_failure("telegram", exc) from None
        try:
            payload: Any = response.json()
        except ValueError:
            payload = None
        if not response.is_success or not (isinstance(payload, dict) and payload.get("ok")):
            code = payload.get("error_code") if isinstance(payload, dict) else None
            failure = http_failure("telegram", response, provider_code=str(code) if code is not None else None)
            parameters = payload.get("parameters") if isinstance(payload, dict) else None
            if isinstance(parameters, dict) and isinstance(parameters.get("retry_after"), int | float):
                failure.retry_after = float(parameters["retry_after"])
            if response.is_success:  # 200 with ok=false: a refusal, not a hiccup
                failure.retryable = False
            raise failure
        result = payload.get("result")
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if not isinstance(message_id, int):
            raise ProviderError(False, "telegram answered without a message id", status=response.status_code)
        chat = result.get("chat")
        sent_chat_id = chat.get("id", chat_id) if isinstance(chat, dict) else chat_id
        return f"{sent_chat_id}:{message_id}"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> TelegramClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
