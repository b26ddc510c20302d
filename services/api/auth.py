"""Bearer tokens for the agent API. Only a token's SHA-256 is stored; the token itself is shown once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

ROLES = ("agent", "supervisor", "auditor", "admin")
READ = ROLES
WRITE = ("agent", "supervisor", "admin")
SUPERVISE = ("supervisor", "admin")
AUDIT = ("auditor", "admin")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sb_tokens (
    name text PRIMARY KEY,
    role text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
"""


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return "sb_" + secrets.token_urlsafe(32)


def create_token(conn, role: str, name: str | None = None) -> tuple[str, str]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = new_token()
    name = name or f"{role}-{secrets.token_hex(4)}"
    conn.execute("INSERT INTO sb_tokens (name, role, token_hash) VALUES (%s, %s, %s)", (name, role, token_hash(token)))
    return name, token


def revoke_token(conn, name: str) -> bool:
    cur = conn.execute("UPDATE sb_tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL", (name,))
    return cur.rowcount == 1


async def authenticate(pool, admin_token: str | None, token: str) -> Principal | None:
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin", "admin")
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT name, role FROM sb_tokens WHERE token_hash = %s AND revoked_at IS NULL",
                                 (token_hash(token),))
        row = await cur.fetchone()
    return Principal(row[0], row[1]) if row else None
