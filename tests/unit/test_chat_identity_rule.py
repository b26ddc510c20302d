"""The chat identity rule of the contract: what an `identity_hash` verifies, and what it never does."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import pytest

from channels.chat import ChatSession, InboundFrame, SessionRequest, chat_interaction, identity_hash, verify_identity
from channels.errors import Malformed, Unauthorized
from services.domain.customer import Customer

pytestmark = pytest.mark.unit

SECRET = "s3cret-of-the-website"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def hex_hmac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def test_the_hash_is_hmac_sha256_of_user_id_email_and_phone_joined_by_bars():
    assert identity_hash(SECRET, "u1", "a@example.org", "+447700900001") == hex_hmac(
        SECRET, "u1|a@example.org|+447700900001"
    )
    assert identity_hash(SECRET, "u1") == hex_hmac(SECRET, "u1||")
    assert identity_hash(SECRET, "u1", phone="+1") == hex_hmac(SECRET, "u1||+1")
    assert identity_hash(SECRET, "u1", user_id_only=True) == hex_hmac(SECRET, "u1")


def test_a_hash_over_all_three_verifies_all_three():
    request = SessionRequest(
        user_id="u1",
        email="A@Example.org",
        phone="+44 7700 900001",
        identity_hash=hex_hmac(SECRET, "u1|A@Example.org|+44 7700 900001"),
    )
    verification = verify_identity(SECRET, request)
    assert verification.external and verification.contacts


def test_the_hash_covers_the_values_as_sent_not_as_normalised():
    request = SessionRequest(user_id="u1", email="A@Example.org", identity_hash=hex_hmac(SECRET, "u1|a@example.org|"))
    with pytest.raises(Unauthorized):
        verify_identity(SECRET, request)


def test_upper_case_hex_is_accepted():
    request = SessionRequest(user_id="u1", identity_hash=hex_hmac(SECRET, "u1").upper())
    assert verify_identity(SECRET, request).external


def test_a_hash_of_user_id_alone_verifies_user_id_only():
    request = SessionRequest(
        user_id="u1", email="a@example.org", phone="+447700900001", identity_hash=hex_hmac(SECRET, "u1")
    )
    verification = verify_identity(SECRET, request)
    assert verification.external and not verification.contacts


@pytest.mark.parametrize(
    "signed",
    [
        "u2|a@example.org|",  # another user
        "u1|b@example.org|",  # another email than the one sent
        "u1|a@example.org|+1555",  # a phone that was not sent
        "u1a@example.org",  # no separators
    ],
)
def test_a_hash_matching_neither_form_is_refused(signed):
    request = SessionRequest(user_id="u1", email="a@example.org", identity_hash=hex_hmac(SECRET, signed))
    with pytest.raises(Unauthorized):
        verify_identity(SECRET, request)


@pytest.mark.parametrize("secret", [None, ""])
def test_without_a_secret_every_hash_is_refused_even_one_made_with_an_empty_key(secret):
    request = SessionRequest(user_id="u1", identity_hash=hex_hmac("", "u1"))
    with pytest.raises(Unauthorized):
        verify_identity(secret, request)
    assert verify_identity(secret, SessionRequest(name="Ada", email="a@example.org")).external is False


def test_user_id_and_hash_go_together():
    for request in (SessionRequest(user_id="u1"), SessionRequest(identity_hash=hex_hmac(SECRET, "|a@example.org|"))):
        with pytest.raises(Malformed):
            verify_identity(SECRET, request)


def _identities(session: ChatSession):
    frame = InboundFrame(type="message", text="hi", client_id="1")
    return [(i.kind, i.value, i.verified) for i in chat_interaction(session, frame, T0).identities]


def test_what_a_session_carries_into_its_interactions():
    both = ChatSession(
        "s1", email="a@example.org", phone="+447700900001", user_id="u1", external_verified=True, contacts_verified=True
    )
    assert _identities(both) == [
        ("chat", "s1", True),
        ("external", "u1", True),
        ("email", "a@example.org", True),
        ("phone", "+447700900001", True),
    ]
    alone = ChatSession("s2", email="a@example.org", user_id="u1", external_verified=True)
    assert _identities(alone) == [("chat", "s2", True), ("external", "u1", True), ("email", "a@example.org", False)]
    anonymous = ChatSession("s3", email="a@example.org", user_id="u1")
    assert _identities(anonymous) == [("chat", "s3", True), ("email", "a@example.org", False)]


def test_a_session_stored_under_the_old_rule_keeps_its_user_id_but_not_its_contacts():
    legacy = ChatSession("s4", email="a@example.org", user_id="u1", verified=True)
    assert _identities(legacy) == [("chat", "s4", True), ("external", "u1", True), ("email", "a@example.org", False)]


def test_a_customer_with_an_external_id_would_not_take_a_second_one():
    customer = Customer.register(uuid.uuid4(), T0)
    assert not customer.would_hold_two_external_ids({"u1"})
    customer.link("external", "u1", T0)
    assert not customer.would_hold_two_external_ids(set())
    assert not customer.would_hold_two_external_ids({"u1"})
    assert customer.would_hold_two_external_ids({"u2"})


def test_a_non_ascii_hash_is_refused_not_an_error():
    request = SessionRequest(user_id="u1", identity_hash="é" * 64)
    with pytest.raises(Unauthorized):
        verify_identity(SECRET, request)
