"""The outbound ledger: every message we hand to a provider, sent at most once and never dropped silently.

One row per message (`sb_outbound_ledger`, keyed by what it is: `reply:<reply id>`, a campaign's
`campaign:<campaign id>:<customer id>`). The attempt is recorded BEFORE the provider is called
(state `sending`, with the process that makes it and when it began), its outcome right after
(`sent` with the provider's id, or `failed` with the reason). A crash, a timeout or a shutdown
between the provider's answer and our record leaves the row `sending`: the attempt is in doubt.
Whoever picks the message up again then settles the doubt before anything is resent:

- the provider can be asked (`lookup`: Twilio's message list, matched on To/From/Body and time):
  found means sent (recorded with the provider's id, not sent again); not found means never sent;
- the provider dedupes a resend itself (`resend_safe`: chat's outbox by message id, email by its
  deterministic Message-ID): sent again;
- otherwise the message ends `failed` with `UNKNOWN_OUTCOME` rather than risk a double send.

An attempt is only in doubt once the process that made it is gone: each dispatcher holds a
PostgreSQL advisory lock on its own instance id for as long as it lives (on a connection of its
own), so `pg_try_advisory_lock(owner)` succeeding means the owner died. While the owner lives the
message is tried again later; an attempt of this very process that timed out is in doubt at once.

The provider's id stays in the row only until the outcome is on its way to the log
(`forget_provider_id`): a wamid encodes the customer's number.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg

from channels.errors import ProviderError
from services.platform.logs import get_logger

log = get_logger(__name__)

UNKNOWN_OUTCOME = "outcome unknown after interruption; not resent to avoid a duplicate"
# A test hook: `after_provider` ends the process (as a kill would) right after the provider
# answered and before the answer is recorded; `before_send` right after the attempt is recorded.
CRASH_ENV = "SWITCHBOARD_TEST_OUTBOUND_CRASH_AT"

Lookup = Callable[[datetime], Awaitable[str | None]]


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        log.warning("outbound_test_crash", point=name)
        os._exit(70)


def owner_lock_key(owner: uuid.UUID) -> int:
    return int.from_bytes(
        hashlib.blake2b(b"sb-outbound-owner:" + owner.bytes, digest_size=8).digest(), "big", signed=True
    )


@dataclass(frozen=True)
class Row:
    state: str  # sending | sent | failed | pending
    fresh: bool  # this call recorded the attempt (nothing was tried before, or the last try surely failed)
    owner: uuid.UUID | None
    started_at: datetime | None
    provider_message_id: str | None
    reason: str | None
    attempts: int


@dataclass(frozen=True)
class Result:
    status: Literal["sent", "failed", "retry"]
    provider_message_id: str | None = None
    reason: str | None = None
    error: ProviderError | None = None


class OutboundLedger:
    """The ledger's rows, through the event store's connection pool (synchronous: call in a thread)."""

    def __init__(self, store, database_conninfo: str | None = None):
        self.datastore = store.datastore
        self.owner = uuid.uuid4()
        self._conninfo = database_conninfo
        self._lock_conn: psycopg.Connection | None = None

    # -- the owner's liveness ----------------------------------------------------------------------

    def hold_owner_lock(self) -> None:
        """Holds this instance's advisory lock on a connection of its own, for as long as it lives."""
        if self._conninfo is None or self._lock_conn is not None:
            return
        conn = psycopg.connect(self._conninfo, autocommit=True)
        conn.execute("SELECT pg_advisory_lock(%s)", (owner_lock_key(self.owner),))
        self._lock_conn = conn

    def release_owner_lock(self) -> None:
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            finally:
                self._lock_conn = None

    def owner_alive(self, owner: uuid.UUID | None) -> bool:
        if owner is None or owner == self.owner:
            return False
        key = owner_lock_key(owner)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_try_advisory_xact_lock(%s) AS got", (key,))
            row = curs.fetchone()
            return not row["got"]

    # -- rows -----------------------------------------------------------------------------------------

    def begin(self, key: str, channel: str) -> Row:
        """Records an attempt about to be made, unless one is settled (`sent`, `failed`) or in doubt
        (`sending`): then the row as it stands, for the caller to settle."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO sb_outbound_ledger (key, channel, state, owner, started_at, attempts) "
                "VALUES (%s, %s, 'sending', %s, now(), 1) ON CONFLICT (key) DO NOTHING RETURNING started_at",
                (key, channel, self.owner),
            )
            created = curs.fetchone()
            if created is not None:
                return Row("sending", True, self.owner, created["started_at"], None, None, 1)
            curs.execute(
                "SELECT state, owner, started_at, provider_message_id, reason, attempts "
                "FROM sb_outbound_ledger WHERE key = %s FOR UPDATE",
                (key,),
            )
            row = curs.fetchone()
            if row["state"] == "pending":
                curs.execute(
                    "UPDATE sb_outbound_ledger SET state = 'sending', owner = %s, started_at = now(), "
                    "attempts = attempts + 1, updated_at = now() WHERE key = %s RETURNING started_at, attempts",
                    (self.owner, key),
                )
                again = curs.fetchone()
                return Row("sending", True, self.owner, again["started_at"], None, None, again["attempts"])
            return Row(
                row["state"],
                False,
                row["owner"],
                row["started_at"],
                row["provider_message_id"],
                row["reason"],
                row["attempts"],
            )

    def restart(self, key: str) -> None:
        """An attempt in doubt turned out never to have reached the provider: a new attempt, ours."""
        self._update(
            key,
            "state = 'sending', owner = %s, started_at = now(), attempts = attempts + 1",
            (self.owner,),
        )

    def mark_sent(self, key: str, provider_message_id: str | None) -> None:
        self._update(key, "state = 'sent', provider_message_id = %s, reason = NULL", (provider_message_id,))

    def mark_failed(self, key: str, reason: str) -> None:
        self._update(key, "state = 'failed', reason = %s", (reason[:300],))

    def mark_pending(self, key: str, reason: str) -> None:
        """The provider said no for now (nothing was sent): may be tried again without a doubt."""
        self._update(key, "state = 'pending', reason = %s", (reason[:300],))

    def give_up(self, key: str, channel: str, reason: str) -> str:
        """Ends a message `failed` after its last try; an attempt still in doubt says so. The reason recorded."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO sb_outbound_ledger AS l (key, channel, state, reason, attempts) "
                "VALUES (%s, %s, 'failed', %s, 0) ON CONFLICT (key) DO UPDATE SET "
                "state = 'failed', updated_at = now(), "
                "reason = CASE WHEN l.state = 'sending' THEN %s ELSE EXCLUDED.reason END "
                "RETURNING reason",
                (key, channel, reason[:300], UNKNOWN_OUTCOME),
            )
            return curs.fetchone()["reason"]

    def forget_provider_id(self, key: str) -> None:
        """The outcome is in the log now; the provider's id (personal, for some) need not stay here."""
        self._update(key, "provider_message_id = NULL", ())

    def state(self, key: str) -> str | None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT state FROM sb_outbound_ledger WHERE key = %s", (key,))
            row = curs.fetchone()
            return None if row is None else row["state"]

    def _update(self, key: str, assignments: str, params: tuple) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"UPDATE sb_outbound_ledger SET {assignments}, updated_at = now() WHERE key = %s",  # noqa: S608
                (*params, key),
            )


async def deliver(
    ledger: OutboundLedger,
    key: str,
    channel: str,
    send: Callable[[], Awaitable[str | None]],
    *,
    lookup: Lookup | None = None,
    resend_safe: bool = False,
) -> Result:
    """Sends one message through the ledger: at most once, and an outcome for every message.

    `retry` means: nothing is settled yet, hand the message back to be tried later (a provider
    outage, or an attempt in doubt whose owner still lives or whose provider cannot be asked now).
    """
    row = await asyncio.to_thread(ledger.begin, key, channel)
    if row.state == "sent":
        return Result("sent", row.provider_message_id)
    if row.state == "failed":
        return Result("failed", reason=row.reason)
    if not row.fresh:  # `sending`: an attempt whose outcome was never recorded
        if await asyncio.to_thread(ledger.owner_alive, row.owner):
            return Result("retry", error=ProviderError(True, "an earlier attempt is still under way"))
        if lookup is not None and row.started_at is not None:
            try:
                found = await lookup(row.started_at)
            except ProviderError as exc:
                return Result("retry", error=exc)
            if found:
                log.info("outbound_in_doubt_found_sent", key=key, channel=channel)
                await asyncio.to_thread(ledger.mark_sent, key, found)
                return Result("sent", found)
            log.info("outbound_in_doubt_not_sent", key=key, channel=channel)
        elif not resend_safe:
            log.warning("outbound_in_doubt_failed", key=key, channel=channel)
            await asyncio.to_thread(ledger.mark_failed, key, UNKNOWN_OUTCOME)
            return Result("failed", reason=UNKNOWN_OUTCOME)
        await asyncio.to_thread(ledger.restart, key)
    _crash_point("before_send")
    try:
        provider_id = await send()
    except ProviderError as exc:
        if not exc.retryable:
            await asyncio.to_thread(ledger.mark_failed, key, exc.detail)
            return Result("failed", reason=exc.detail, error=exc)
        if not in_doubt(exc):
            await asyncio.to_thread(ledger.mark_pending, key, exc.detail)
        # else: the provider may have taken it (a timeout): stays `sending`, settled on the next try
        return Result("retry", error=exc)
    _crash_point("after_provider")
    await asyncio.to_thread(ledger.mark_sent, key, provider_id)
    return Result("sent", provider_id)


def in_doubt(exc: ProviderError) -> bool:
    """Whether a failed call may still have reached the provider: a timeout or a dropped connection
    after the request went out. An answer (any HTTP status) or a refused connection is no doubt."""
    return exc.in_doubt
