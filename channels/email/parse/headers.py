"""Headers: raw and decoded values, RFC 2047 encoded words (with lenient base64)."""

from __future__ import annotations

import binascii
import re
from email.message import Message

from channels.email.parse.charsets import _decode_bytes, _restore_8bit
from channels.email.parse.text import _LINE_BREAK, _clean_line

_FOLDING = re.compile(r"\r?\n(?=[ \t])")


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
