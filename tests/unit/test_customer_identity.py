"""Identity normalisation: one spelling per identity, so lookups and merges are exact."""

from __future__ import annotations

import pytest

from events.interactions import Identity
from services.domain.identity import InvalidIdentity, normalize, normalized_identities, normalized_value

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "kind,raw,expected",
    [
        ("email", "Ada.Lovelace@Example.ORG", "ada.lovelace@example.org"),
        ("email", " <ada@example.org> ", "ada@example.org"),
        ("phone", "+44 7700 900123", "+447700900123"),
        ("phone", "+44 (0)7700-900-123", "+447700900123"),
        ("phone", "447700900123", "+447700900123"),  # a WhatsApp wa_id is a phone, digits only
        ("phone", "whatsapp:+447700900123", "+447700900123"),  # Twilio's WhatsApp sender
        ("phone", "+1 415-555-2671", "+14155552671"),
        ("messenger", " 1234567890 ", "1234567890"),
        ("external", "user-42", "user-42"),
    ],
)
def test_values_are_normalised(kind, raw, expected):
    assert normalized_value(kind, raw) == expected
    assert normalize(Identity(kind, raw, verified=False)) == Identity(kind, expected, verified=False)


@pytest.mark.parametrize(
    "kind,raw",
    [
        ("email", "not-an-address"),
        ("email", "@example.org"),
        ("email", "a b@example.org"),
        ("phone", "12"),
        ("phone", "call me maybe"),
        ("phone", "07700900123"),  # national form: no country
        ("telegram", "   "),
        ("chat", ""),
    ],
)
def test_values_without_a_normal_form_are_refused(kind, raw):
    with pytest.raises(InvalidIdentity):
        normalized_value(kind, raw)


def test_an_identity_already_normal_is_returned_as_it_is():
    identity = Identity("email", "ada@example.org")
    assert normalize(identity) is identity


def test_an_interactions_identities_are_normalised_and_a_bad_claim_is_kept_as_typed():
    claims_garbage = Identity("phone", "call me maybe", verified=False)
    out = normalized_identities([Identity("email", " Ana@Example.COM "), claims_garbage])
    assert out == [Identity("email", "ana@example.com"), claims_garbage]


def test_a_verified_identity_without_a_normal_form_is_refused_with_its_kind():
    with pytest.raises(InvalidIdentity, match="invalid verified phone identity"):
        normalized_identities([Identity("phone", "not a number")])
