"""Identity normalisation: one spelling per identity, so that lookups and merges are exact.

Emails are lower-cased; phones become E.164 (a WhatsApp `wa_id` is a phone: digits without '+');
every other kind is trimmed. The same few identities arrive again and again (a customer writes many
times), and parsing a phone number is the costliest step of handling an interaction, so results are
memoised.
"""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=262_144)
def normalized_value(kind: str, value: str) -> str:
    """The one spelling of this identity's value; InvalidIdentity if it has none (not cached)."""
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value)
    value = value.strip()
    if not value:
        raise InvalidIdentity(f"empty {kind} identity")
    return value


def normalize(identity: Identity) -> Identity:
    value = normalized_value(identity.kind, identity.value)
    if value == identity.value:
        return identity
    return Identity(kind=identity.kind, value=value, verified=identity.verified)
