"""Phone numbers in one spelling, E.164, so that an SMS and a WhatsApp message of the same person
resolve to the same `phone` identity.
"""

from __future__ import annotations

import phonenumbers

from channels.errors import Malformed

# Twilio writes WhatsApp addresses as `whatsapp:+14155238886`; the number is what identifies.
_ADDRESS_PREFIXES = ("whatsapp:", "tel:")


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """The E.164 form of `raw` (`+14155550100`), or `Malformed`.

    Without `default_region` a number must be international: with a leading `+`, or all digits
    (a WhatsApp `wa_id`, an international number without its `+`). With a region (`"GB"`),
    national spellings of that region are accepted too.

    Plausibility, not validity, is checked: fictional ranges that providers and their docs use
    (`+1 555 867 5310`, `+44 7700 900123`) are rejected by `is_valid_number` yet are real traffic
    in tests and sandboxes, and a number range opened after our metadata was built must not bounce.
    """
    if not isinstance(raw, str):
        raise Malformed("phone number is not text")
    text = raw.strip()
    for prefix in _ADDRESS_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix):].strip()
            break
    if not text:
        raise Malformed("phone number is empty")
    if default_region is None and not text.startswith("+") and text.isascii() and text.isdigit():
        text = "+" + text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise Malformed("not a phone number") from exc
    if not phonenumbers.is_possible_number(number):
        raise Malformed("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_from_wa_id(wa_id: str) -> str:
    """A WhatsApp `wa_id` (`16505551234`: the number's digits without `+`) as an E.164 phone."""
    if not isinstance(wa_id, str) or not wa_id.isascii() or not wa_id.strip().lstrip("+").isdigit():
        raise Malformed("wa_id is not a phone number")
    return normalize_phone("+" + wa_id.strip().lstrip("+"))


def wa_id_from_phone(phone: str) -> str:
    """The `to` of a WhatsApp Cloud API send: the E.164 number without its `+`."""
    return normalize_phone(phone).lstrip("+")
