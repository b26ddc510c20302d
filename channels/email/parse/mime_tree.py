"""The MIME tree: readable text and attached files, delivery reports and embedded messages."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email.message import Message

from channels.email.parse.addresses import _clean_address
from channels.email.parse.budget import _Meter
from channels.email.parse.charsets import _decode_bytes, _html_meta_charset
from channels.email.parse.headers import _FOLDING, _header_text, _raw_header
from channels.email.parse.html_text import _html_to_text
from channels.email.parse.message_ids import _first, _message_ids, _unique
from channels.email.parse.parts import (
    _EXTENSIONS,
    _charset,
    _children,
    _content_type,
    _disposition,
    _filename,
    _param,
    _payload_bytes,
    _raw_payload,
    _safe_filename,
)
from channels.email.parse.text import _clean_line, _normalize_newlines, _unflow
from events.interactions import Attachment

# Hostile nesting is cut off here; nothing a person wrote lives deeper.
_MAX_MIME_DEPTH = 24
_READABLE_TYPES = frozenset({"text/plain", "text/html"})
_EMBEDDED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_DELIVERY_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RETURNED_MESSAGE_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)


@dataclass
class _Body:
    """What a MIME (sub)tree holds for us: readable text, files, and a delivery report's details."""

    texts: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    attachment_bytes: list[bytes] = field(default_factory=list)
    report: dict[str, str] = field(default_factory=dict)
    files_seen: set[tuple[str, str]] = field(default_factory=set)
    meter: _Meter | None = None

    def add_file(self, attachment: Attachment, data: bytes) -> None:
        # The same file in two renderings of one message is one attachment.
        key = (attachment.sha256, attachment.name)
        if key in self.files_seen:
            return
        self.files_seen.add(key)
        self.attachments.append(attachment)
        self.attachment_bytes.append(data)

    def add_files_of(self, other: _Body) -> None:
        for attachment, data in zip(other.attachments, other.attachment_bytes, strict=True):
            self.add_file(attachment, data)


def _collect(part: Message, body: _Body, depth: int) -> None:
    if depth > _MAX_MIME_DEPTH:
        return
    content_type = _content_type(part)
    if content_type.startswith("multipart/") and part.is_multipart():
        _collect_multipart(part, content_type, body, depth)
    elif content_type in _EMBEDDED_MESSAGE_TYPES:
        _collect_embedded_message(part, content_type, body)
    elif _is_readable(part, content_type, depth):
        body.texts.append(_readable_text(part, content_type, body.meter))
    else:
        _collect_file(part, content_type, body)


def _collect_multipart(part: Message, content_type: str, body: _Body, depth: int) -> None:
    children = _children(part)
    if content_type == "multipart/alternative":
        _collect_alternative(children, body, depth)
    elif content_type == "multipart/report":
        _collect_report(children, body, depth)
    else:
        for child in children:
            _collect(child, body, depth + 1)


def _collect_alternative(children: list[Message], body: _Body, depth: int) -> None:
    """Renderings of one message: read the plain text (what the sender typed), else the richest one.

    Files may sit in any rendering (Apple Mail puts pasted images beside the HTML only), so they are
    kept from every rendering that is a tree of its own.
    """
    renderings = []
    for child in children:
        rendering = _Body(meter=body.meter)
        _collect(child, rendering, depth + 1)
        renderings.append((child, rendering))
    chosen = _preferred_rendering(renderings)
    if chosen is not None:
        body.texts.extend(chosen.texts)
        body.report.update(chosen.report)
    for child, rendering in renderings:
        if rendering is chosen or child.is_multipart():
            body.add_files_of(rendering)


def _preferred_rendering(renderings: list[tuple[Message, _Body]]) -> _Body | None:
    readable = [(child, rendering) for child, rendering in renderings if "".join(rendering.texts).strip()]
    for child, rendering in readable:
        if _content_type(child) == "text/plain":
            return rendering
    # RFC 2046: alternatives come in increasing order of richness.
    return readable[-1][1] if readable else None


def _collect_report(children: list[Message], body: _Body, depth: int) -> None:
    """A delivery or read report (RFC 6522): the first part is written for people, the others for
    machines; they tell which recipient failed and which of our messages it was."""
    if not children:
        return
    _collect(children[0], body, depth + 1)
    for child in children[1:]:
        content_type = _content_type(child)
        if content_type in _DELIVERY_STATUS_TYPES:
            body.report.update(_delivery_status(child))
        elif content_type in _RETURNED_MESSAGE_TYPES:
            returned_id = _returned_message_id(child, content_type)
            if returned_id:
                body.report["bounced_message_id"] = returned_id
        elif content_type != "message/disposition-notification":
            _collect(child, body, depth + 1)


def _delivery_status(part: Message) -> dict[str, str]:
    fields = _report_fields(part)
    recipients = _unique(_clean_address(value.split(";", 1)[-1]) for name, value in fields if name == "final-recipient")
    if not recipients:
        recipients = _unique(
            _clean_address(value.split(";", 1)[-1]) for name, value in fields if name == "original-recipient"
        )
    statuses = [value for name, value in fields if name == "status"]
    report = {}
    if recipients:
        report["bounce_recipients"] = " ".join(recipients)
    if statuses:
        report["bounce_status"] = statuses[0]
    return report


def _report_fields(part: Message) -> list[tuple[str, str]]:
    """The "Name: value" fields of a delivery-status part, lower-cased names, in order."""
    payload = _raw_payload(part)
    if isinstance(payload, list):
        return [
            (name.lower(), _clean_line(str(value)))
            for block in payload
            if isinstance(block, Message)
            for name, value in block.raw_items()
        ]
    text = _decode_bytes(_payload_bytes(part), None)
    found = re.findall(r"(?m)^([A-Za-z-]+)[ \t]*:[ \t]*(.*)$", _FOLDING.sub("", text))
    return [(name.lower(), _clean_line(value)) for name, value in found]


def _returned_message_id(part: Message, content_type: str) -> str:
    payload = _raw_payload(part)
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return _first(_message_ids(_raw_header(payload[0], "Message-ID")))
    headers = _decode_bytes(_payload_bytes(part), None)
    match = re.search(r"(?im)^message-id[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", headers)
    return _first(_message_ids(match.group(1))) if match else ""


def _collect_embedded_message(part: Message, content_type: str, body: _Body) -> None:
    """A forwarded or returned email is a file of its own (.eml), not text of this message."""
    data = _payload_bytes(part)
    if body.meter is not None:
        body.meter.decoded(data)
    name = _filename(part)
    if not name:
        embedded = _raw_payload(part)
        subject = ""
        if isinstance(embedded, list) and embedded and isinstance(embedded[0], Message):
            subject = _header_text(embedded[0], "Subject")
        name = f"{subject or 'message'}.eml"
    _add_file(body, _safe_filename(name) or "message.eml", content_type, data)


def _is_readable(part: Message, content_type: str, depth: int) -> bool:
    if content_type.startswith("multipart/"):
        # A multipart whose boundary is lost: its raw text is the best reading there is.
        return True
    if content_type not in _READABLE_TYPES:
        return False
    disposition = _disposition(part)
    if disposition == "attachment":
        return False
    # Some mailers name every part; a named text is still the body when it is the whole message or
    # meant to be shown inline. Otherwise it is a file the sender attached (notes.txt).
    return depth == 0 or disposition == "inline" or not _filename(part)


def _readable_text(part: Message, content_type: str, meter: _Meter | None = None) -> str:
    data = _payload_bytes(part)
    if meter is not None:
        meter.decoded(data)
    charset = _charset(part)
    if content_type == "text/html":
        html = _decode_bytes(data, charset or _html_meta_charset(data))
        if meter is not None:
            meter.html(html)
        return _html_to_text(html, meter.budget.max_html_depth if meter is not None else None)
    text = _normalize_newlines(_decode_bytes(data, charset))
    if _param(part, "format").lower() == "flowed":
        text = _unflow(text, delete_space=_param(part, "delsp").lower() == "yes")
    return text


def _collect_file(part: Message, content_type: str, body: _Body) -> None:
    name = _safe_filename(_filename(part)) or f"attachment{_EXTENSIONS.get(content_type, '')}"
    data = _payload_bytes(part)
    if body.meter is not None:
        body.meter.decoded(data)
    _add_file(body, name, content_type, data)


def _add_file(body: _Body, name: str, content_type: str, data: bytes) -> None:
    attachment = Attachment(
        name=name,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        ref=None,
    )
    body.add_file(attachment, data)
