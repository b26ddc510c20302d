"""Charsets: bytes as text in the sender's charset, tolerating wrong and unknown labels."""

from __future__ import annotations

import codecs
import re

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
_NOT_MAIL_CHARSETS = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined", "mbcs", "oem"})
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
