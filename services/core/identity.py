"""Identity normalisation: one spelling per identity, so that lookups and merges are exact."""

from __future__ import annotations

import phonenumbers

from events.interactions import Identity


class InvalidIdentity(ValueError):
    pass


def normalize_phone(raw: str) -> str:
    text = raw.strip()
    if text.startswith("whatsapp:"):
        text = text[len("whatsapp:"):]
    if not text.startswith("+") and text.isdigit():
        text = "+" + text  # a WhatsApp wa_id, or a number already in international form without '+'
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentity("not an international phone number") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentity("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    value = raw.strip().lower()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or " " in value:
        raise InvalidIdentity("not an email address")
    return value


def normalize(identity: Identity) -> Identity:
    kind, value = identity.kind, identity.value
    if kind == "email":
        value = normalize_email(value)
    elif kind == "phone":
        value = normalize_phone(value)
    else:
        value = value.strip()
        if not value:
            raise InvalidIdentity(f"empty {kind} identity")
    return Identity(kind=kind, value=value, verified=identity.verified)
