"""The shape of a Meta webhook body: the envelope and the Messenger/Instagram messaging events in it.

Decoding goes through msgspec Structs that name only the fields we read: Meta adds fields often,
and an unknown field must never turn a customer's message into a 400. WhatsApp's `value` is decoded
later, in `whatsapp`, and only for the fields we handle.
"""

from __future__ import annotations

import msgspec

Id = str | int  # Meta sends ids as strings; some docs and test tools send numbers


class _Loose(msgspec.Struct, forbid_unknown_fields=False):
    """Base of every decoded shape: unknown fields are accepted and ignored."""


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


_ENVELOPE = msgspec.json.Decoder(_Envelope)
