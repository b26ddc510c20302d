"""Sender and recipients: the From mailbox (the customer's identity) and address lists, also from
headers the default policy's parser refuses.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import getaddresses

from channels.email.parse.errors import MalformedEmail
from channels.email.parse.headers import _decode_words, _raw_header
from channels.email.parse.message_ids import _unique
from channels.email.parse.text import _clean_line

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
    return ", ".join(_unique(address for _, address in _mailboxes(message, header_name) if _is_usable(address)))


def _clean_address(address: str) -> str:
    return _clean_line(address).strip("<>").lower()
