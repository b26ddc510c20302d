"""Agents' passwords: argon2id hashes (argon2-cffi, RFC 9106 low-memory profile by default).

Hashing and verifying take tens of milliseconds and 64 MiB on purpose: callers on an event loop run
them in a worker thread. The hash is kept only in `sb_agent_credentials`, never in the log nor in a
log line.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Longer is refused before hashing: a password of megabytes would only cost the server time.
MAX_PASSWORD = 1024
MIN_PASSWORD = 8

_hasher = PasswordHasher()  # argon2id; its parameters are the library's current recommendation


class PasswordRejected(ValueError):
    """A password that may not be set (too short, too long)."""


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise PasswordRejected(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise PasswordRejected(f"a password has at most {MAX_PASSWORD} characters")
    return password


def generate_password() -> str:
    """A random password for a new agent: 144 bits, URL-safe, printed once."""
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


@cache
def _dummy_hash() -> str:
    # A hash of nothing anyone knows, made with the same parameters as real ones: verifying against
    # it costs what a real verification costs.
    return _hasher.hash(secrets.token_urlsafe(32))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches `stored_hash`. With no hash (an unknown email) a dummy hash is
    verified all the same, so an unknown email takes as long as a wrong password."""
    if len(password) > MAX_PASSWORD:
        password = password[:MAX_PASSWORD]  # still verified (and so still slow), never matching
        stored_hash = None
    try:
        matched = _hasher.verify(stored_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and stored_hash is not None


def rehash_password(password: str) -> str:
    """A fresh hash of a password that just verified (its length was fine when it was set)."""
    return _hasher.hash(password)


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with other argon2 parameters than today's (rehashed at sign-in)."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
