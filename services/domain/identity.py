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


# Twilio writes WhatsApp addresses as `whatsapp:+14155238886`; the number is what identifies.
_ADDRESS_PREFIXES = ("whatsapp:", "tel:")


# Cached: every SMS and WhatsApp message parses two numbers (ours, always the same, and the sender's),
# and phonenumbers' parse is the dearest step of a webhook. An invalid number raises, and is not kept.
@functools.lru_cache(maxsize=65_536)
def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """The E.164 form of `raw` (`+14155550100`), or InvalidIdentity.

    Without `default_region` a number must be international: with a leading `+`, or all digits
    (a WhatsApp `wa_id`, an international number without its `+`). With a region (`"GB"`),
    national spellings of that region are accepted too.

    Plausibility, not validity, is checked: fictional ranges that providers and their docs use
    (`+1 555 867 5310`, `+44 7700 900123`) are rejected by `is_valid_number` yet are real traffic
    in tests and sandboxes, and a number range opened after our metadata was built must not bounce.
    """
    text = raw.strip()
    for prefix in _ADDRESS_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :].strip()
            break
    if not text:
        raise InvalidIdentity("phone number is empty")
    if default_region is None and not text.startswith("+") and text.isascii() and text.isdigit():
        text = "+" + text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentity("not a phone number") from exc
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


def normalized_identities(identities: list[Identity]) -> list[Identity]:
    """An interaction's identities, each in its one spelling.

    A verified identity that has none is an error (InvalidIdentity: the channel vouched for garbage);
    a visitor's claim is kept as typed: it never links anyone.
    """
    out = []
    for identity in identities:
        try:
            value = normalized_value(identity.kind, identity.value)
        except InvalidIdentity as exc:
            if identity.verified:
                raise InvalidIdentity(f"invalid verified {identity.kind} identity: {exc}") from exc
            out.append(identity)
            continue
        out.append(identity if value == identity.value else Identity(identity.kind, value, identity.verified))
    return out


def registers_on_claims_alone(channel: str, direction: str, identities: list[Identity]) -> bool:
    """Whether an interaction none of whose identities is verified still has a sender to record.

    An email whose From no trusted upstream vouched for carries only the address as a claim, yet
    someone wrote it: it registers a customer of its own who holds the claim (never linked, so it
    merges with nobody; an agent may merge by hand). Every other channel asserts its sender, so
    claims alone there mean a broken connector, and the interaction is refused.
    """
    return (
        channel == "email" and direction == "inbound" and any(i.kind == "email" and not i.verified for i in identities)
    )
