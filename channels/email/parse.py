"""A raw email (RFC 5322 bytes) as the normalized inbound `Interaction` of the email channel.

Pure: no network, no NATS, no database, no clock (the time of receipt comes in as an argument).
Lenient on purpose: real mail arrives with wrong charsets, broken base64 and headers no parser
accepts, and a customer's message must not be lost over that. Only input with no sender address at
all is refused, with `MalformedEmail`; every other input gives a best-effort `ParsedEmail`.

Parsing uses the standard library's `email` package with `email.policy.default`; where that policy's
structured header parser gives up, the compat32-era helpers (`getaddresses`, a compat32 `Message`)
read the raw header instead.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_to_datetime
from html import unescape

import msgspec
from bs4 import BeautifulSoup
from bs4.element import (
    Comment,
    Declaration,
    Doctype,
    NavigableString,
    PageElement,
    ProcessingInstruction,
    Tag,
)

from channels.email.trust import SenderTrust, from_is_verified
from events.interactions import Attachment, Identity, Interaction, InteractionKind, interaction_id

__all__ = ["EmailBudget", "MalformedEmail", "OverBudget", "ParsedEmail", "parse_email"]


class MalformedEmail(ValueError):
    """Input that is not a usable email: empty, unreadable, or without a sender address.

    The HTTP and SMTP adapters answer it as "malformed" (400 / 5xx reply) and record nothing. The
    message names the problem, never the content.
    """


class OverBudget(ValueError):
    """A message over its budget (parts, attachments, decoded bytes, HTML tags or nesting).

    Permanent: the same bytes will always be over it. `structural` tells a message too intricate
    (nesting, tag floods: HTTP 422) from one too big (HTTP 413); SMTP answers 552 5.3.4 for both.
    The detail names the limit, never the content.
    """

    def __init__(self, limit: str, detail: str, structural: bool = False):
        super().__init__(detail)
        self.limit = limit
        self.detail = detail
        self.structural = structural

    def __reduce__(self):  # crosses the parser pool's process boundary
        return (type(self), (self.limit, self.detail, self.structural))


class EmailBudget(msgspec.Struct, frozen=True, kw_only=True):
    """What one message may cost to read. Real mail stays far below every limit; abuse does not."""

    max_parts: int = 100
    max_attachments: int = 50
    max_decoded_bytes: int = 20 * 1024 * 1024
    max_html_tags: int = 50_000
    max_mime_depth: int = 24
    max_html_depth: int = 1_000

    @classmethod
    def from_settings(cls, settings) -> EmailBudget:
        return cls(
            max_parts=settings.email_max_parts,
            max_attachments=settings.email_max_attachments,
            max_decoded_bytes=settings.email_max_decoded_bytes,
            max_html_tags=settings.email_max_html_tags,
            max_mime_depth=settings.email_max_mime_depth,
            max_html_depth=settings.email_max_html_depth,
        )


class _Meter:
    """Spends a message's budget as it is read, so an abusive message stops early."""

    def __init__(self, budget: EmailBudget):
        self.budget = budget
        self.decoded_bytes = 0
        self.html_tags = 0

    def decoded(self, data: bytes) -> bytes:
        self.decoded_bytes += len(data)
        if self.decoded_bytes > self.budget.max_decoded_bytes:
            raise OverBudget("decoded_bytes", f"more than {self.budget.max_decoded_bytes} decoded bytes")
        return data

    def html(self, html: str) -> None:
        self.html_tags += html.count("<")
        if self.html_tags > self.budget.max_html_tags:
            raise OverBudget("html_tags", f"more than {self.budget.max_html_tags} HTML tags", structural=True)

    def check_structure(self, message: Message) -> None:
        """Counts the MIME parts and their nesting before any of them is decoded."""
        parts = 0
        stack = [(message, 0)]
        while stack:
            part, depth = stack.pop()
            parts += 1
            if parts > self.budget.max_parts:
                raise OverBudget("mime_parts", f"more than {self.budget.max_parts} MIME parts")
            if depth > self.budget.max_mime_depth:
                raise OverBudget("mime_depth", f"MIME parts nested deeper than {self.budget.max_mime_depth}",
                                 structural=True)
            stack.extend((child, depth + 1) for child in _children(part))

    def check_attachments(self, attachments: list[Attachment]) -> None:
        if len(attachments) > self.budget.max_attachments:
            raise OverBudget("attachments", f"more than {self.budget.max_attachments} attachments")


class ParsedEmail(msgspec.Struct, frozen=True, kw_only=True):
    """One inbound email, normalized.

    `interaction.text` is what the customer wrote in this message (earlier quoted replies cut away);
    `full_text` is the whole readable body, quotes included, for an agent who wants the context;
    `attachment_bytes[i]` holds the content of `interaction.attachments[i]`, for the blob store.
    """

    interaction: Interaction
    full_text: str
    attachment_bytes: list[bytes] = []


def parse_email(
    raw: bytes, *, received_at: datetime, budget: EmailBudget | None = None, trust: SenderTrust | None = None
) -> ParsedEmail:
    """Read one raw RFC 5322 message received at `received_at` (the fallback for a missing or bogus Date).

    Raises `MalformedEmail` for input that is not a usable message, `OverBudget` for one that costs
    more than `budget` allows (None: no budget), and nothing else for any bytes. The sender address
    is verified when `trust` vouches for it (None: the caller asserts it, as before doors had trust).
    """
    received_at = _as_utc(received_at)
    if not isinstance(raw, bytes | bytearray | memoryview) or not bytes(raw).strip():
        raise MalformedEmail("empty message")
    try:
        return _parse(bytes(raw), received_at, budget, trust)
    except (MalformedEmail, OverBudget):
        raise
    except Exception as exc:
        # Why: a message we cannot read must get a "malformed" answer, never crash the channel; the
        # fuzz tests hunt for whatever ends up here.
        raise MalformedEmail("unreadable message") from exc


# --- the message as a whole ----------------------------------------------------------------------


def _parse(raw: bytes, received_at: datetime, budget: EmailBudget | None, trust: SenderTrust | None) -> ParsedEmail:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    meter = _Meter(budget) if budget is not None else None
    if meter is not None:
        meter.check_structure(message)
    sender_name, sender_address = _sender(message)
    verified = trust is None or from_is_verified(message, sender_address, trust)
    message_id = _own_message_id(message, raw)
    in_reply_to = _first(_message_ids(_raw_header(message, "In-Reply-To")))
    references = _message_ids(_raw_header(message, "References"))
    subject = _header_text(message, "Subject")
    body = _Body(meter=meter)
    _collect(message, body, depth=0)
    if meter is not None:
        meter.check_attachments(body.attachments)
    full_text = _tidy_text("\n\n".join(body.texts))
    meta = {
        "subject": subject,
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": " ".join(references),
        "thread_ids": " ".join(_unique([message_id, in_reply_to, *references])),
        "to": _address_list(message, "To"),
        **body.report,
    }
    # Contact forms send as themselves with the customer in Reply-To; the core may want to know.
    reply_to = _address_list(message, "Reply-To")
    if reply_to:
        meta["reply_to"] = reply_to
    interaction = Interaction(
        id=interaction_id("email", message_id),
        channel="email",
        direction="inbound",
        occurred_at=_occurred_at(message, received_at),
        identities=[Identity("email", sender_address, verified=verified)],
        kind=_kind(message, sender_address, subject),
        text=_cut_quoted_reply(full_text),
        profile=_profile(sender_name, sender_address),
        thread_key=_first(references) or in_reply_to or message_id,
        provider_message_id=message_id,
        attachments=body.attachments,
        meta=meta,
    )
    return ParsedEmail(interaction=interaction, full_text=full_text, attachment_bytes=body.attachment_bytes)


def _as_utc(moment: datetime) -> datetime:
    # A naive time of receipt can only have come from a UTC clock in this service.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _profile(display_name: str, address: str) -> dict[str, str]:
    """What the sender calls themselves; a display name that only repeats the address says nothing."""
    name = display_name.strip().strip("\"'").strip()
    if not name or name.lower() == address:
        return {}
    return {"name": name}


# --- sender and recipients -----------------------------------------------------------------------

# The address is the customer's verified identity: it must look like one, or the message is refused.
_USABLE_ADDRESS = re.compile(r"[^@\s<>\"\ufffd]+@[^@\s<>\"\ufffd]+")
# The default policy's parser is not linear on some hostile inputs; a real address list is far shorter.
_MAX_STRUCTURED_HEADER = 8192


def _sender(message: Message) -> tuple[str, str]:
    """The From mailbox as (display name, lower-cased address)."""
    for name, address in _mailboxes(message, "From"):
        if _is_usable(address):
            return name, address
    raise MalformedEmail("no sender address in From")


def _is_usable(address: str) -> bool:
    return _USABLE_ADDRESS.fullmatch(address) is not None


def _mailboxes(message: Message, header_name: str) -> list[tuple[str, str]]:
    """The (display name, lower-cased address) pairs of an address header, best reading first."""
    raw = _raw_header(message, header_name)
    if raw is None:
        return []
    structured = _structured_mailboxes(message, header_name, raw)
    if any(_is_usable(address) for _, address in structured):
        return structured
    # compat32's reading of the raw value: tolerant of what the default policy rejects.
    try:
        pairs = getaddresses([raw[:_MAX_STRUCTURED_HEADER]])
    except RecursionError:
        # Thousands of nested comment parentheses: no address can be read out of that.
        return []
    return [(_clean_line(_decode_words(name)), _clean_address(address)) for name, address in pairs]


def _structured_mailboxes(message: Message, header_name: str, raw: str) -> list[tuple[str, str]]:
    if len(raw) > _MAX_STRUCTURED_HEADER:
        return []
    try:
        addresses = message[header_name].addresses
        return [(_clean_line(item.display_name), _clean_address(item.addr_spec)) for item in addresses]
    except Exception:
        # Why: the default policy's header parser raises on some broken headers instead of
        # registering a defect; the caller falls back to compat32.
        return []


def _address_list(message: Message, header_name: str) -> str:
    """The usable addresses of an address header, lower-cased, comma-separated."""
    return ", ".join(
        _unique(address for _, address in _mailboxes(message, header_name) if _is_usable(address))
    )


def _clean_address(address: str) -> str:
    return _clean_line(address).strip("<>").lower()


# --- headers -------------------------------------------------------------------------------------

_FOLDING = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _raw_header(message: Message, name: str) -> str | None:
    """The first header of that name exactly as sent (unfolded), without any policy's parsing."""
    wanted = name.lower()
    for header_name, value in message.raw_items():
        if header_name.lower() == wanted:
            return _LINE_BREAK.sub(" ", _FOLDING.sub("", str(value)))
    return None


def _header_text(message: Message, name: str) -> str:
    """A free-text header (Subject) as readable text, encoded-words decoded leniently."""
    raw = _raw_header(message, name)
    return _clean_line(_decode_words(raw)) if raw else ""


def _header_token(message: Message, name: str) -> str:
    """The first word of a keyword header ("auto-replied; owner-email=..." -> "auto-replied")."""
    raw = _raw_header(message, name)
    if raw is None:
        return ""
    words = _clean_line(raw).lower().replace(";", " ").split()
    return words[0] if words else ""


# RFC 2047 encoded-word; the charset may carry an RFC 2231 language suffix ("utf-8*en").
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")


def _decode_words(text: str) -> str:
    """Decode RFC 2047 encoded-words in a header, tolerating what the RFC forbids but mailers send.

    Our own decoder rather than the policy's because it reads a wrong declared charset the lenient
    way (`_decode_bytes`) and joins adjacent words before decoding: Japanese and Chinese mailers
    split one multi-byte character across two words.
    """
    text = _restore_8bit(text)
    pieces: list[list] = []  # [charset, bytes] for encoded words, [None, str] for plain text
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        # Whitespace between two encoded-words is folding, not content (RFC 2047 section 6.2).
        if between and not (between.isspace() and pieces and pieces[-1][0] is not None):
            pieces.append([None, between])
        position = match.end()
        charset = match.group(1).split("*", 1)[0].lower()
        data = _decode_word_payload(match.group(2), match.group(3))
        if data is None:
            pieces.append([None, match.group(0)])
        elif pieces and pieces[-1][0] == charset:
            pieces[-1][1] += data
        else:
            pieces.append([charset, data])
    pieces.append([None, text[position:]])
    return "".join(value if charset is None else _decode_bytes(value, charset) for charset, value in pieces)


def _decode_word_payload(encoding: str, payload: str) -> bytes | None:
    data = payload.encode("utf-8", "replace")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    return _lenient_base64(data)


def _lenient_base64(data: bytes) -> bytes | None:
    """Base64 as mailers get it wrong: stray characters, missing padding, a dangling character."""
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    try:
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))
    except binascii.Error:
        return None


# --- message ids and threading -------------------------------------------------------------------

_BRACKETED_ID = re.compile(r"<([^<>]*)>")


def _message_ids(raw: str | None) -> list[str]:
    """The message ids in a Message-ID / In-Reply-To / References header, without <> or whitespace."""
    if not raw:
        return []
    text = _clean_line(raw)
    bracketed = _BRACKETED_ID.findall(text)
    if bracketed:
        candidates = bracketed
    else:
        # Some mailers drop the brackets; keep what looks like an id, not trailing comments.
        words = text.replace(",", " ").split()
        candidates = [word for word in words if "@" in word] or words[:1]
    return _unique(re.sub(r"\s+", "", candidate) for candidate in candidates)


def _own_message_id(message: Message, raw: bytes) -> str:
    """The Message-ID; a message without one gets an id derived from its bytes, so a retry of the
    very same bytes is still recognised as the same message."""
    ids = _message_ids(_raw_header(message, "Message-ID"))
    if ids:
        return ids[0]
    return f"{hashlib.sha256(raw).hexdigest()}@sha256.switchboard.invalid"


def _first(values: list[str]) -> str:
    return values[0] if values else ""


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))


# --- when it was written -------------------------------------------------------------------------

# A Date outside these bounds is a broken clock or spam trickery: it would pin the message at the
# wrong end of the customer's timeline, so the time of receipt is used instead.
_EARLIEST_PLAUSIBLE_DATE = datetime(1990, 1, 1, tzinfo=UTC)
_ALLOWED_CLOCK_SKEW = timedelta(days=1)


def _occurred_at(message: Message, received_at: datetime) -> datetime:
    raw = _raw_header(message, "Date")
    if not raw:
        return received_at
    try:
        written = parsedate_to_datetime(_clean_line(raw)[:200])
        # "-0000" means "local time unknown" (RFC 5322): UTC is the honest reading.
        written = written.replace(tzinfo=UTC) if written.tzinfo is None else written.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return received_at
    if not _EARLIEST_PLAUSIBLE_DATE <= written <= received_at + _ALLOWED_CLOCK_SKEW:
        return received_at
    return written


# --- what kind of message: a person's, an auto-reply, a bounce -----------------------------------

_DELIVERY_FAILURE_SUBJECT = re.compile(
    r"undeliver|not be delivered|delivery (?:status notification|failure|failed|has failed|incomplete)"
    r"|mail delivery (?:failed|failure|subsystem)|returned mail|failure notice|non remis"
    r"|unzustellbar|nicht zugestellt|zustellung fehlgeschlagen|no se pudo entregar",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|autoreply"
    r"|abwesenheit|automatische antwort|r[ée]ponse automatique|absence|respuesta autom[áa]tica"
    r"|risposta automatica|automatisch antwoord|vacation)",
    re.IGNORECASE,
)
_MAILER_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})
_NEGATIVE_VALUES = frozenset({"no", "false", "0"})


def _kind(message: Message, sender_address: str, subject: str) -> InteractionKind:
    """A bounce or auto-reply must not look like the customer answering (nor reopen a case as one)."""
    if _is_bounce(message, sender_address, subject):
        return "bounce"
    if _is_auto_reply(message, subject):
        return "auto_reply"
    return "message"


def _is_bounce(message: Message, sender_address: str, subject: str) -> bool:
    if _report_type(message) == "delivery-status":
        return True
    local_part = sender_address.split("@", 1)[0]
    return local_part in _MAILER_SENDERS and _DELIVERY_FAILURE_SUBJECT.search(subject) is not None


def _is_auto_reply(message: Message, subject: str) -> bool:
    auto_submitted = _header_token(message, "Auto-Submitted")
    if auto_submitted and auto_submitted != "no":
        return True
    for flag in ("X-Autoreply", "X-Autorespond"):
        if _raw_header(message, flag) is not None and _header_token(message, flag) not in _NEGATIVE_VALUES:
            return True
    if _header_token(message, "Precedence") in _AUTO_PRECEDENCE:
        return True
    # Exchange marks its out-of-office replies this way; the header alone is also on ordinary mail.
    if _raw_header(message, "X-Auto-Response-Suppress") is not None and _AUTO_REPLY_SUBJECT.search(subject):
        return True
    # A read receipt (RFC 8098) is a machine's answer too.
    return _report_type(message) == "disposition-notification"


def _report_type(message: Message) -> str:
    if _content_type(message) != "multipart/report":
        return ""
    return _param(message, "report-type").lower()


# --- the MIME tree: readable text and attached files ---------------------------------------------

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
    recipients = _unique(
        _clean_address(value.split(";", 1)[-1]) for name, value in fields if name == "final-recipient"
    )
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


# --- reading one MIME part safely ----------------------------------------------------------------

# Names for unnamed files; a fixed table, because `mimetypes` answers differently per machine.
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/heic": ".heic",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
    "message/rfc822": ".eml",
}
_MAX_FILENAME_CHARS = 255


# A MIME type as RFC 6838 allows it; anything else is stored as opaque bytes.
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def _content_type(part: Message) -> str:
    try:
        content_type = part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"
    return content_type if _MIME_TYPE.fullmatch(content_type) else "application/octet-stream"


def _children(part: Message) -> list[Message]:
    payload = _raw_payload(part)
    if not isinstance(payload, list):
        return []
    return [child for child in payload if isinstance(child, Message)]


def _raw_payload(part: Message) -> str | list | None:
    """The parsed payload: the sub-parts of a multipart, else the body text (8-bit bytes as surrogates)."""
    try:
        return part.get_payload()
    except Exception:
        # Why: for 8-bit bodies the stdlib decodes with the declared charset and raises for some
        # (idna, punycode); the decoding path below reads such bodies all the same.
        return None


def _param(part: Message, name: str) -> str:
    """A Content-Type parameter as text ("" when absent or unreadable)."""
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    if value is None:
        return ""
    return _clean_line(collapse_rfc2231_value(value))


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def _disposition(part: Message) -> str:
    try:
        return part.get_content_disposition() or ""
    except Exception:
        return ""


def _filename(part: Message) -> str:
    """The file name the sender gave (RFC 2231 or RFC 2047 encoded), "" if none."""
    try:
        name = part.get_filename()
    except Exception:
        name = _compat32_filename(part)
    if not name:
        return ""
    name = str(name)
    # Outlook and Gmail put RFC 2047 words inside quoted file names; the compat32 path leaves them.
    return _clean_line(_decode_words(name) if "=?" in name else name)


def _compat32_filename(part: Message) -> str:
    # The default policy raised on these headers; compat32 reads parameters from the raw strings.
    shadow = Message(policy=policy.compat32)
    try:
        for header_name in ("Content-Disposition", "Content-Type"):
            raw = _raw_header(part, header_name)
            if raw is not None:
                shadow[header_name] = raw
        return shadow.get_filename() or ""
    except Exception:
        return ""


def _safe_filename(name: str) -> str:
    """A file name fit to show and store: no directories, no control characters, bounded length."""
    name = re.split(r"[/\\]", _clean_line(name))[-1].strip()
    if len(name) <= _MAX_FILENAME_CHARS:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and 0 < len(extension) <= 16:
        return stem[: _MAX_FILENAME_CHARS - len(extension) - 1] + "." + extension
    return name[:_MAX_FILENAME_CHARS]


def _payload_bytes(part: Message) -> bytes:
    """The part's content with its transfer encoding undone; broken base64 gives what it can."""
    payload = _raw_payload(part)
    if isinstance(payload, str) and _header_token(part, "Content-Transfer-Encoding") == "base64":
        # Our decoder, not the stdlib's: that one returns the undecoded text when a single
        # character too many dangles at the end, where ours drops the character and keeps the rest.
        data = _lenient_base64(_text_to_raw_bytes(payload))
        if data is not None:
            return data
    try:
        data = part.get_payload(decode=True)
    except Exception:
        # Why: the stdlib raises from some exotic transfer encodings (uuencode variants).
        data = None
    if isinstance(data, bytes):
        return data
    if isinstance(payload, str):
        return _text_to_raw_bytes(payload)
    if isinstance(payload, list):
        return b"\n".join(_message_bytes(item) for item in payload if isinstance(item, Message))
    return b""


def _text_to_raw_bytes(text: str) -> bytes:
    # The bytes parser keeps 8-bit bytes as lone surrogates; this gives the original bytes back.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _message_bytes(message: Message) -> bytes:
    try:
        return message.as_bytes(policy=policy.compat32)
    except Exception:
        # Why: serializing a broken embedded message can fail; its text is still worth keeping.
        try:
            return _text_to_raw_bytes(message.as_string(policy=policy.compat32))
        except Exception:
            return b""


# --- charsets ------------------------------------------------------------------------------------

# Labels mailers use that Python does not know.
_CHARSET_ALIASES = {
    "x-sjis": "shift_jis",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-e": "iso-8859-6",
    "x-gbk": "gbk",
    "cp-850": "cp850",
}
# Mailers label text with a charset but write it with the vendor's superset (Outlook's Shift_JIS is
# cp932, GB2312 text is GBK or GB18030, Korean is cp949): the superset reads both.
_SUPERSETS: dict[str, tuple[str, ...]] = {
    "shift_jis": ("cp932", "shift_jis_2004"),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "big5": ("big5hkscs", "cp950"),
    "euc_kr": ("cp949",),
    "iso2022_jp": ("iso2022_jp_2", "iso2022_jp_ext"),
    "euc_jp": ("euc_jis_2004", "euc_jp"),
}
# Labels that decode any byte sequence, so a failure cannot reveal that they are wrong; UTF-8
# labelled as Latin-1 or ASCII is the commonest mislabel, so UTF-8 is tried before them.
_LABELS_THAT_ACCEPT_ANYTHING = frozenset({"ascii", "iso8859-1", "iso8859-15", "cp1252"})
# Codecs that are not charsets a mail body can be written in.
_NOT_MAIL_CHARSETS = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined", "mbcs", "oem"}
)
# Share of unreadable characters up to which text counts as damaged rather than mislabelled.
_DAMAGE_TOLERATED = 0.02
# Some valid multi-byte UTF-8 sequence: damaged UTF-8 rather than a single-byte charset.
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _decode_bytes(data: bytes, declared: str | None) -> str:
    """Bytes as text in the sender's charset, tolerating wrong and unknown labels; never raises.

    A trustworthy declared charset (one that fails on bytes that are not its own) is tried first;
    then UTF-8, then Windows-1252, and as a last resort the replacement character.
    """
    codecs_to_try = _codecs_for(declared)
    for codec in codecs_to_try:
        text = _try_decode(data, codec)
        if text is not None:
            return text
    if codecs_to_try and codecs_to_try[-1] != "utf-8" and not _UTF8_SEQUENCE.search(data):
        # Damaged text in its declared charset (a byte lost in transit): keep the part that reads,
        # unless so much is unreadable that the label itself must be wrong.
        text = _try_decode(data, codecs_to_try[0], errors="replace")
        if text is not None and text.count("\ufffd") <= len(text) * _DAMAGE_TOLERATED:
            return text
    return _decode_unlabelled(data)


def _decode_unlabelled(data: bytes) -> str:
    """Bytes with no trustworthy label: UTF-8 (even damaged), else Windows-1252, the commonest."""
    text = _try_decode(data, "utf-8")
    if text is not None:
        return text
    if _UTF8_SEQUENCE.search(data):
        return data.decode("utf-8", "replace")
    text = _try_decode(data, "cp1252")
    return text if text is not None else data.decode("utf-8", "replace")


def _codecs_for(label: str | None) -> tuple[str, ...]:
    """The codecs to try for a declared charset label, superset first; () if it cannot be trusted."""
    if not label:
        return ()
    name = label.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return ()
    if info.name in _NOT_MAIL_CHARSETS or info.name in _LABELS_THAT_ACCEPT_ANYTHING:
        return ()
    if not getattr(info, "_is_text_encoding", True):
        return ()
    return (*_SUPERSETS.get(info.name, ()), info.name)


def _try_decode(data: bytes, codec: str, errors: str = "strict") -> str | None:
    try:
        return data.decode(codec, errors)
    except (UnicodeError, LookupError, ValueError, TypeError):
        return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _restore_8bit(text: str) -> str:
    """Headers parsed from bytes keep raw 8-bit bytes as lone surrogates; read them as the sender
    most likely meant (UTF-8, else Windows-1252)."""
    if not _SURROGATE.search(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return _decode_unlabelled(raw)


_HTML_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I)


def _html_meta_charset(data: bytes) -> str | None:
    """The charset an HTML body names in its <meta>, for parts whose MIME header names none."""
    match = _HTML_META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


# --- HTML as readable text -----------------------------------------------------------------------

_INVISIBLE_TAGS = frozenset({"head", "script", "style", "noscript", "template", "title", "meta", "link"})
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
    "nav", "ol", "pre", "section", "table", "tr", "ul",
})  # fmt: skip
# Private-use characters mark block and paragraph boundaries while the tree is written out as text.
_BLOCK = "\ue000"
_PARAGRAPH = "\ue001"
# Runs of spacing and marks; a single character class keeps the match linear on any input.
_SPACING_RUN = re.compile(f"[ \n{_BLOCK}{_PARAGRAPH}]+")
_SOURCE_WHITESPACE = re.compile(r"[ \t\r\n\f]+")
_NON_CONTENT_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)
# More tags than any real email has; past this, HTML is read by `_strip_tags`.
_MAX_HTML_TAGS = 50_000
# "[^<>]" rather than "[^>]": a tag never spans another "<", and the match stays linear on a flood of "<".
_ANY_TAG = re.compile(r"<[^<>]*>")
_LINE_BREAKING_TAG = re.compile(r"<(?:br|/?(?:p|div|tr|li|h[1-6]|table|blockquote))\b[^<>]*>", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"<\?xml[^<>]*>", re.IGNORECASE)
# A link label longer than this is layout, not a label; bounds the work for nested links.
_MAX_LINK_LABEL_PIECES = 64


def _html_to_text(html: str, max_depth: int | None = None) -> str:
    """An HTML body as the text a reader sees: blocks on lines of their own, quoted blocks "> "."""
    if "<" not in html:
        return _tidy_text(unescape(html))
    if html.count("<") > _MAX_HTML_TAGS:
        return _strip_tags(html)
    # XHTML mail opens with an XML declaration; it carries no text, and bs4 warns about it.
    html = _XML_DECLARATION.sub("", html)
    return _flatten(_HtmlText(max_depth).render(BeautifulSoup(html, "html.parser")))


def _strip_tags(html: str) -> str:
    """HTML with more tags than any real email (a flood of them costs bs4 seconds): a linear,
    structure-light reading that keeps the words and the line breaks."""
    text = _LINE_BREAKING_TAG.sub("\n", html)
    return _tidy_text(unescape(_ANY_TAG.sub("", text)))


class _HtmlText:
    """Writes parsed HTML out as text with boundary marks (which `_flatten` turns into lines).

    One iterative pass over the tree: hostile nesting must neither exhaust the stack nor cost time
    squared in the depth (which bs4's own tree edits would).
    """

    def __init__(self, max_depth: int | None = None) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self.out: list[str] = []
        self.preformatted = 0
        self.quote_starts: list[int] = []
        self.link_starts: list[int] = []

    def render(self, root: Tag) -> str:
        stack: list[tuple[PageElement, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                self.depth -= 1
                self.leave(node)
            elif isinstance(node, NavigableString):
                self.text(node)
            elif isinstance(node, Tag) and node.name not in _INVISIBLE_TAGS:
                if node.name == "br":
                    self.out.append("\n")
                    continue
                self.enter(node)
                self.depth += 1
                if self.max_depth is not None and self.depth > self.max_depth:
                    raise OverBudget("html_depth", f"HTML nested deeper than {self.max_depth}", structural=True)
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.contents))
        return "".join(self.out)

    def text(self, string: NavigableString) -> None:
        if isinstance(string, _NON_CONTENT_STRINGS):
            return
        # Line breaks in HTML source are not line breaks on screen, except inside <pre>.
        self.out.append(str(string) if self.preformatted else _SOURCE_WHITESPACE.sub(" ", string))

    def enter(self, tag: Tag) -> None:
        self.out.append(_boundary_of(tag))
        if tag.name == "li":
            self.out.append("- ")
        elif tag.name == "pre":
            self.preformatted += 1
        elif tag.name == "blockquote":
            self.quote_starts.append(len(self.out))
        elif tag.name == "a":
            self.link_starts.append(len(self.out))

    def leave(self, tag: Tag) -> None:
        if tag.name == "pre":
            self.preformatted -= 1
        elif tag.name == "blockquote":
            self.close_quote()
        elif tag.name == "a":
            self.close_link(tag)
        elif tag.name in ("td", "th"):
            self.out.append(" ")
        self.out.append(_boundary_of(tag))

    def close_quote(self) -> None:
        """Quoted blocks become "> " lines, the way plain-text mail quotes, so quote cutting sees
        them. Only the outermost is marked: inner levels are older history all the same."""
        start = self.quote_starts.pop()
        if self.quote_starts:
            return
        lines = _flatten("".join(self.out[start:])).split("\n")
        del self.out[start:]
        self.out.append("\n".join(f"> {line}" if line else ">" for line in lines))

    def close_link(self, tag: Tag) -> None:
        # A customer's "here" link to their order page is content; the target must stay visible.
        start = self.link_starts.pop()
        href = str(tag.get("href") or "").strip()
        if (
            not href.lower().startswith(("http://", "https://"))
            or len(self.out) - start > _MAX_LINK_LABEL_PIECES
        ):
            return
        label = "".join(self.out[start:]).strip(f" \n{_BLOCK}{_PARAGRAPH}")
        if label and label != href:
            self.out.append(f" ({href})")


def _boundary_of(tag: Tag) -> str:
    if tag.name == "p":
        # Outlook writes every line as its own <p class=MsoNormal>: lines, not paragraphs.
        classes = tag.get("class") or []
        classes = [classes] if isinstance(classes, str) else classes
        return _BLOCK if any("msonormal" in str(c).lower() for c in classes) else _PARAGRAPH
    return _BLOCK if tag.name in _BLOCK_TAGS else ""


def _flatten(text: str) -> str:
    """Text with boundary marks into lines: a block boundary is a line break, a paragraph's a blank line."""
    text = _SPACING_RUN.sub(_boundary_breaks, text)
    lines = [line.strip() for line in _normalize_newlines(text).replace("\xa0", " ").split("\n")]
    return _tidy_text("\n".join(lines))


def _boundary_breaks(run: re.Match[str]) -> str:
    spacing = run.group(0)
    if _BLOCK not in spacing and _PARAGRAPH not in spacing:
        return spacing
    minimum = 2 if _PARAGRAPH in spacing else 1
    return "\n" * max(minimum, spacing.count("\n") + 1)


# --- plain text ----------------------------------------------------------------------------------

# Controls that are noise in text (and NUL, which PostgreSQL text refuses); tab and newline stay.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufeff\ue000\ue001]")
_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _normalize_newlines(text: str) -> str:
    return _LINE_BREAK.sub("\n", text)


def _clean_line(text: str) -> str:
    """One-line text (a header, a name) safe to store: real characters, single spaces."""
    text = _restore_8bit(text)
    return _WHITESPACE.sub(" ", _CONTROL_CHARACTERS.sub("", text)).strip()


def _tidy_text(text: str) -> str:
    """Body text safe to store and pleasant to read: no controls, no trailing spaces, few blank lines."""
    text = _CONTROL_CHARACTERS.sub("", _normalize_newlines(_restore_8bit(text)))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


def _unflow(text: str, *, delete_space: bool) -> str:
    """format=flowed (RFC 3676): a line ending in a space goes on in the next line; rejoin them."""
    paragraphs: list[list] = []  # [quote depth, text]
    continues = False
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content  # undo space-stuffing
        if continues and paragraphs and paragraphs[-1][0] == depth:
            paragraphs[-1][1] += content
        else:
            paragraphs.append([depth, content])
        continues = content.endswith(" ") and content != "-- "
        if continues and delete_space:
            paragraphs[-1][1] = paragraphs[-1][1][:-1]
    return "\n".join((">" * depth + " " if depth else "") + content for depth, content in paragraphs)


# --- cutting the quoted earlier conversation -----------------------------------------------------
#
# Our own small rules rather than a reply-parser library: the ones on PyPI are either unmaintained
# (email-reply-parser, talon) or large regex tables whose behaviour on hostile input we would have
# to vet anyway (mail-parser-reply). These lines cover the mailers our customers use, are bounded in
# time on any input, and are tested line by line.

_ATTRIBUTION = re.compile(
    r"""^\s*(?:
        On\s.{1,300}\swrote\s?:                    # English: Gmail, Apple Mail, Thunderbird
      | Am\s.{1,300}\sschrieb(?:\s.{0,200})?:      # German: "Am 3. Mai 2024 um 10:00 schrieb Anna <a@x>:"
      | Le\s.{1,300}\sa\s[ée]crit\s?:              # French: "Le 3 mai 2024 à 10:00, Anne <a@x> a écrit :"
      | El\s.{1,300}\sescribi[óo]\s?:              # Spanish
      | Il\s.{1,300}\sha\sscritto\s?:              # Italian
      | Op\s.{1,300}\sschreef(?:\s.{0,200})?:      # Dutch
      | Em\s.{1,300}\sescreveu\s?:                 # Portuguese
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_ATTRIBUTION_START = re.compile(r"^\s*(?:On|Am|Le|El|Il|Op|Em)\s", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(?:Original Message|Urspr[üu]ngliche Nachricht|Message d'origine|Mensaje original"
    r"|Messaggio originale|Oorspronkelijk bericht|Mensagem original)\s*-{2,}\s*$",
    re.IGNORECASE,
)
# Outlook's header block: "From: ..." with "Sent: ..." (or "Date:") a few lines below, localized.
_HEADER_FROM = re.compile(r"^\s*\*?(?:From|Von|De|Da|Van|Fr[åa]n|Fra)\s?:\*?\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(
    r"^\s*\*?(?:Sent|Date|Gesendet|Datum|Envoy[ée]|Enviado|Inviato|Verzonden|Skickat|Sendt|Data)"
    r"(?:\s\w+)?\s?:",
    re.IGNORECASE,
)
_RULE_LINE = re.compile(r"^\s*(?:_{8,}|-{8,})\s*$")
# An inline forward is something the customer wants us to read, not an old reply to cut.
_FORWARD_MARKER = re.compile(r"forward|weitergeleitet|transf[ée]r|reenviado|inoltrato|doorgestuurd", re.I)
_HEADER_BLOCK_REACH = 6


def _cut_quoted_reply(text: str) -> str:
    """What the customer wrote in this message: the earlier conversation they quoted is cut away.

    Cut at the first reply header ("On ... wrote:", "-----Original Message-----", Outlook's
    "From:/Sent:" block) with everything after it, and drop "> " lines above it. When nothing is
    left (a reply written below the quote), keep every line that is not quoted.
    """
    lines = text.split("\n")
    end = _quote_start(lines)
    reply = _tidy_text("\n".join(line for line in lines[:end] if not _is_quoted(line)))
    if reply:
        return reply
    unquoted = (line for line in lines if not _is_quoted(line) and not _is_reply_header(line))
    return _tidy_text("\n".join(unquoted)) or text


def _quote_start(lines: list[str]) -> int:
    for index in range(len(lines)):
        if (
            _starts_attribution(lines, index)
            or _ORIGINAL_MESSAGE.match(lines[index])
            or _starts_header_block(lines, index)
        ):
            return _include_rule_above(lines, index)
    return len(lines)


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _is_reply_header(line: str) -> bool:
    return bool(_ATTRIBUTION.match(line) or _ORIGINAL_MESSAGE.match(line) or _RULE_LINE.match(line))


def _starts_attribution(lines: list[str], index: int) -> bool:
    if not _ATTRIBUTION_START.match(lines[index]):
        return False
    # Gmail wraps a long attribution over two or three lines.
    for span in (1, 2, 3):
        joined = " ".join(line.strip() for line in lines[index : index + span])
        if _ATTRIBUTION.match(joined):
            return True
    return False


def _starts_header_block(lines: list[str], index: int) -> bool:
    if not _HEADER_FROM.match(lines[index]):
        return False
    following = lines[index + 1 : index + 1 + _HEADER_BLOCK_REACH]
    if not any(_HEADER_SENT.match(line) for line in following):
        return False
    return not _FORWARD_MARKER.search(_previous_nonblank(lines, index))


def _include_rule_above(lines: list[str], index: int) -> int:
    """Outlook draws a line of underscores above its header block; it belongs to the quote."""
    above = index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    return above if above >= 0 and _RULE_LINE.match(lines[above]) else index


def _previous_nonblank(lines: list[str], index: int) -> str:
    for line in reversed(lines[max(0, index - 3) : index]):
        if line.strip():
            return line
    return ""
