"""Phone numbers in one spelling, E.164, so that an SMS and a WhatsApp message of the same person
resolve to the same `phone` identity.
"""

from __future__ import annotations

from channels.errors import Malformed
from services.domain.identity import InvalidIdentity
from services.domain.identity import normalize_phone as _normalize


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """The E.164 form of `raw`, or `Malformed`: the domain's normalisation (see
    `services.domain.identity.normalize_phone`), answered as a bad request at a channel's edge."""
    if not isinstance(raw, str):
        raise Malformed("phone number is not text")
    try:
        return _normalize(raw, default_region)
    except InvalidIdentity as exc:
        raise Malformed(str(exc)) from None


def phone_from_wa_id(wa_id: str) -> str:
    """A WhatsApp `wa_id` (`16505551234`: the number's digits without `+`) as an E.164 phone."""
    if not isinstance(wa_id, str) or not wa_id.isascii() or not wa_id.strip().lstrip("+").isdigit():
        raise Malformed("wa_id is not a phone number")
    return normalize_phone("+" + wa_id.strip().lstrip("+"))


def wa_id_from_phone(phone: str) -> str:
    """The `to` of a WhatsApp Cloud API send: the E.164 number without its `+`."""
    return normalize_phone(phone).lstrip("+")
