"""Agents' passwords: argon2id, verified the same way whether or not there is a hash, rehashed when
the parameters change."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from services.agents import access, passwords

pytestmark = pytest.mark.unit


def test_a_hash_is_argon2id_and_verifies_only_its_password():
    stored = passwords.hash_password("correct horse")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert passwords.verify_password(stored, "correct horse")
    assert not passwords.verify_password(stored, "wrong horse")
    assert not passwords.verify_password("not a hash", "correct horse")


def test_an_unknown_email_still_runs_argon2_and_never_matches(monkeypatch):
    verified = []

    class Counting(PasswordHasher):
        def verify(self, hash, password):  # noqa: A002 — the library's own parameter name
            verified.append(hash)
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "_hasher", Counting())
    assert not passwords.verify_password(None, "anything")
    assert len(verified) == 1 and verified[0].startswith("$argon2id$")


def test_an_overlong_password_is_refused_before_hashing_and_never_matches():
    with pytest.raises(passwords.PasswordRejected):
        passwords.hash_password("x" * (passwords.MAX_PASSWORD + 1))
    with pytest.raises(passwords.PasswordRejected):
        passwords.hash_password("short")
    stored = passwords.hash_password("x" * passwords.MAX_PASSWORD)
    assert not passwords.verify_password(stored, "x" * (passwords.MAX_PASSWORD + 1))


def test_a_hash_made_with_other_parameters_needs_a_rehash():
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("correct horse")
    assert passwords.needs_rehash(old)
    assert passwords.verify_password(old, "correct horse")
    fresh = passwords.rehash_password("correct horse")
    assert not passwords.needs_rehash(fresh)


def test_generated_passwords_and_session_tokens_are_random_and_long():
    assert len({passwords.generate_password() for _ in range(50)}) == 50
    assert len(passwords.generate_password()) >= 24
    token = access.new_session_token()
    assert token.startswith("sbs_") and len(token) > 40


def test_failure_keys_hide_the_email_and_differ_by_kind():
    key = access.failure_key(b"k" * 32, "email", "ana@example.com")
    assert b"ana" not in key and len(key) == 32
    assert key != access.failure_key(b"k" * 32, "ip", "ana@example.com")
    assert key != access.failure_key(b"j" * 32, "email", "ana@example.com")
