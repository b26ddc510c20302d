"""Signing in: sessions, failed attempts and the fresh facts a request is authorised by.

A session token is random (`sbs_` + 256 bits) and shown once; only its SHA-256 is kept
(`sb_agent_sessions`), with the expiry it was issued under (idle and absolute), so every API process
judges it alike without the settings. `services.api.auth.authenticate` finds it there.

Failed sign-ins are counted per email and per client address (each as a keyed hash, so the table
holds no address in clear) within a window; past the limit a sign-in is refused with 429 before any
password is checked.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

SESSION_PREFIX = "sbs_"


@dataclass(frozen=True)
class Credentials:
    agent_id: UUID
    hash: str
    role: str
    disabled: bool


@dataclass(frozen=True)
class LoginLimits:
    per_email: int
    per_ip: int
    window_seconds: float


def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def failure_key(secret: bytes, kind: str, value: str) -> bytes:
    """The keyed hash failed sign-ins are counted under (`kind`: "email" or "ip")."""
    return hmac.new(secret, f"login-failure:{kind}:{value}".encode(), hashlib.sha256).digest()


async def credentials(conn: AsyncConnection[Any], agent_id: UUID) -> Credentials | None:
    cur = await conn.execute(
        "SELECT agent_id, hash, role, disabled FROM sb_agent_credentials WHERE agent_id = %s", (agent_id,)
    )
    row = await cur.fetchone()
    return Credentials(*row) if row else None


async def enabled_agent(conn: AsyncConnection[Any], agent_id: UUID) -> bool:
    cur = await conn.execute("SELECT 1 FROM sb_agent_credentials WHERE agent_id = %s AND NOT disabled", (agent_id,))
    found = await cur.fetchone()
    return found is not None


async def retry_after(conn: AsyncConnection[Any], keys: list[tuple[bytes, int]], window_seconds: float) -> int | None:
    """Seconds until a sign-in may be tried again, when any key reached its limit of failures in the
    window; None when none did."""
    wait = 0.0
    for key, limit in keys:
        cur = await conn.execute(
            "SELECT count(*), EXTRACT(EPOCH FROM (min(failed_at) + make_interval(secs => %s) - now())) "
            "FROM (SELECT failed_at FROM sb_login_failures WHERE key = %s "
            "AND failed_at > now() - make_interval(secs => %s) ORDER BY failed_at DESC LIMIT %s) recent",
            (window_seconds, key, window_seconds, limit),
        )
        row = await cur.fetchone()
        count, remaining = row if row else (0, None)
        if count >= limit:
            wait = max(wait, float(remaining or 1))
    return max(1, math.ceil(wait)) if wait else None


async def record_failure(conn: AsyncConnection[Any], keys: list[bytes], window_seconds: float) -> None:
    for key in keys:
        # Old failures of this key go as new ones come: the table stays as small as the window.
        await conn.execute(
            "DELETE FROM sb_login_failures WHERE key = %s AND failed_at < now() - make_interval(secs => %s)",
            (key, window_seconds),
        )
        await conn.execute("INSERT INTO sb_login_failures (key) VALUES (%s)", (key,))


async def clear_failures(conn: AsyncConnection[Any], key: bytes) -> None:
    await conn.execute("DELETE FROM sb_login_failures WHERE key = %s", (key,))


async def start_session(
    conn: AsyncConnection[Any], agent_id: UUID, token_hash: bytes, idle_seconds: float, max_seconds: float
) -> None:
    await conn.execute(
        "INSERT INTO sb_agent_sessions (token_hash, agent_id, expires_at, idle_seconds) "
        "VALUES (%s, %s, now() + make_interval(secs => %s), %s)",
        (token_hash, agent_id, max_seconds, idle_seconds),
    )


async def end_session(conn: AsyncConnection[Any], token_hash: bytes) -> bool:
    cur = await conn.execute(
        "UPDATE sb_agent_sessions SET ended_at = now() WHERE token_hash = %s AND ended_at IS NULL", (token_hash,)
    )
    return bool(cur.rowcount == 1)


async def rehash(conn: AsyncConnection[Any], agent_id: UUID, old_hash: str, new_hash: str) -> None:
    """Replaces a hash made with older argon2 parameters (unless the password changed meanwhile)."""
    await conn.execute(
        "UPDATE sb_agent_credentials SET hash = %s, updated_at = now() WHERE agent_id = %s AND hash = %s",
        (new_hash, agent_id, old_hash),
    )
