"""Bearer tokens for the agent API. Only a token's SHA-256 is stored; the token itself is shown once.

A token travels only in the `Authorization` header. The one exception is Server-Sent Events, which a
browser's `EventSource` cannot send headers with: it gets a ticket (`POST /api/v1/events/ticket`),
random, single-use and valid for `TICKET_TTL_SECONDS`, bound to the token that asked for it, so a
URL that leaks into a log or a proxy holds nothing reusable.

Besides API tokens (`switchboard token create`, for connectors and scripts), agents sign in with
email and password (`POST /api/v1/auth/login`) and get a session token (services/agents/access.py):
its principal carries `agent_id`, is named `agent:<id>` (what events record as `by`: the email is
personal data, and `by` is stored unsealed), and its role and disabled state are read afresh on
`sb_agent_credentials` (through a per-process cache that a change empties at once, by a PostgreSQL
notice, and that keeps nothing longer than a few seconds: services/api/principals.py), so a role
change or a disable holds from the next request.

What the roles mean, as the tuples below that handlers `require`:
- READ: every role may read (the auditor only reads, plus replay and export: AUDIT).
- WRITE: agents, supervisors and admins work cases (reply, assign, resolve, notes, tags...).
- MANAGE (= SUPERVISE): supervisors and admins manage queues, SLA policies, canned responses, merge
  suggestions, and agents' teams, skills and capacity.
- ADMIN: only admins create agents, change their name, role or password, disable them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.api.principals import PrincipalCache

ROLES = ("agent", "supervisor", "auditor", "admin")
READ = ROLES
WRITE = ("agent", "supervisor", "admin")
SUPERVISE = ("supervisor", "admin")
MANAGE = SUPERVISE  # queues, SLA policies, canned responses, merge suggestions, agents' teams/skills/capacity
ADMIN = ("admin",)
AUDIT = ("auditor", "admin")

# Long enough to open an EventSource right after asking, short enough that a leaked URL is dead.
TICKET_TTL_SECONDS = 30
# Tokens are printable ASCII (generated ones URL-safe); anything else cannot match one.
_MAX_TOKEN = 512


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    # SHA-256 of the bearer token it came with: what a ticket is bound to and what a long-lived
    # stream re-checks.
    token_hash: bytes = b""
    # The signed-in agent's id for a sign-in session; None for API tokens (and the admin token).
    agent_id: str | None = None
    # For a session, the seconds until it ends by itself (absolute or idle expiry), as of the lookup:
    # a cached principal is never served past that (services/api/principals.py).
    valid_for: float | None = field(default=None, compare=False)


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


def plausible_token(token: str) -> bool:
    """Whether `token` could be a token at all: bounded, printable URL-safe ASCII. Anything else
    (a header of latin-1 bytes, control characters) is refused before it reaches a lookup."""
    return 0 < len(token) <= _MAX_TOKEN and all("!" <= c <= "~" for c in token)


async def authenticate(
    pool, admin_token: str | None, token: str, cache: PrincipalCache | None = None
) -> Principal | None:
    """The principal of a bearer token, if still valid. With `cache` (services/api/principals.py), a
    token looked up in the last seconds is not looked up again unless a revocation was notified."""
    if not plausible_token(token):
        return None
    digest = token_hash(token)
    if cache is None:
        return await authenticate_hash(pool, admin_token, digest)
    return await cache.lookup(digest, lambda: authenticate_hash(pool, admin_token, digest))


async def authenticate_hash(pool, admin_token: str | None, digest: bytes) -> Principal | None:
    """The principal of the token whose SHA-256 is `digest`, if that token is still valid (looked up)."""
    if admin_token and hmac.compare_digest(digest, token_hash(admin_token)):
        return Principal("admin", "admin", digest)
    async with pool.connection() as conn:
        cur = await conn.execute(_PRINCIPAL, {"digest": digest})
        row = await cur.fetchone()
        if row is not None and row[2] is not None:
            # Sessions expire after idle time: note the use, at most every half minute (not a write
            # per request).
            await conn.execute(
                "UPDATE sb_agent_sessions SET last_used_at = now() "
                "WHERE token_hash = %s AND last_used_at < now() - interval '30 seconds'",
                (digest,),
            )
    if row is None:
        return None
    return Principal(row[0], row[1], digest, str(row[2]) if row[2] is not None else None, row[3])


# An API token, or an agent's live session (not ended, not expired, the agent not disabled), with
# the agent's role as it is now.
_PRINCIPAL = (
    "SELECT name, role, NULL::uuid, NULL::float8 FROM sb_tokens WHERE token_hash = %(digest)s AND revoked_at IS NULL "
    "UNION ALL "
    "SELECT 'agent:' || s.agent_id, c.role, s.agent_id, "
    "extract(epoch FROM least(s.expires_at, s.last_used_at + make_interval(secs => s.idle_seconds)) - now())::float8 "
    "FROM sb_agent_sessions s "
    "JOIN sb_agent_credentials c ON c.agent_id = s.agent_id "
    "WHERE s.token_hash = %(digest)s AND s.ended_at IS NULL AND NOT c.disabled AND s.expires_at > now() "
    "AND s.last_used_at > now() - make_interval(secs => s.idle_seconds) "
    "LIMIT 1"
)


async def issue_ticket(pool, principal: Principal, ttl_seconds: int = TICKET_TTL_SECONDS) -> str:
    """A new single-use ticket for `principal`'s token. Kept in PostgreSQL (as a hash), so any API
    process can redeem it; expired ones are swept on the way."""
    ticket = "sbt_" + secrets.token_urlsafe(32)
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM sb_event_tickets WHERE expires_at < now()")
        await conn.execute(
            "INSERT INTO sb_event_tickets (ticket_hash, token_hash, expires_at) "
            "VALUES (%s, %s, now() + make_interval(secs => %s))",
            (token_hash(ticket), principal.token_hash, ttl_seconds),
        )
    return ticket


async def redeem_ticket(pool, admin_token: str | None, ticket: str) -> Principal | None:
    """The principal a ticket was issued to, once: the row is deleted as it is read, so a second
    use (from any process) finds nothing. An expired ticket, or one whose token was revoked since,
    gives None."""
    if not plausible_token(ticket):
        return None
    async with pool.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM sb_event_tickets WHERE ticket_hash = %s RETURNING token_hash, expires_at > now()",
            (token_hash(ticket),),
        )
        row = await cur.fetchone()
    if row is None or not row[1]:
        return None
    return await authenticate_hash(pool, admin_token, bytes(row[0]))
