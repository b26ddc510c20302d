"""Reading one MIME part safely: its type, parameters, file name and decoded payload."""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.utils import collapse_rfc2231_value

from channels.email.parse.headers import _decode_words, _header_token, _lenient_base64, _raw_header
from channels.email.parse.text import _clean_line

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
