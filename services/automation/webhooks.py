"""Automation webhooks out of the outbox (`sb_webhook_outbox`), signed, retried, then dead-lettered.

The rule runner writes a delivery row in the transaction that records the firing, so a webhook is
neither lost (the firing committed: the row is there) nor invented (the firing rolled back: so did
the row). This sender, in every process of the automation role, claims a due row (a lease: `next_at`
moves past the call's timeout, so a sender that dies holding it delays that delivery by the lease
at most; `FOR UPDATE SKIP LOCKED` keeps two senders off one row) and POSTs the body as stored, with:

- `X-Switchboard-Signature: sha256=HEX`, HMAC-SHA256 of the exact body under
  SWITCHBOARD_WEBHOOK_SECRET;
- `X-Switchboard-Delivery: ID`: the same on every attempt of a delivery, so a receiver can drop a
  repeat (delivery is at least once: a sender that dies after the receiver's 2xx and before
  recording it calls again);
- `X-Switchboard-Event: TYPE` (the event that fired the rule).

A 2xx is delivered. Anything else (a status, a refused connection, a timeout) is tried again after
`webhook_retry_base_seconds`, doubled each time (at most 300 s), until `webhook_max_attempts`
calls; then the delivery is dead (`GET /api/v1/automations/dead-letters`), until someone retries it.
Redirects are not followed (the URL is the one the rule names).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx

from services.platform import quarantine
from services.platform.eventstore.store import EventStore
from services.platform.logs import get_logger

log = get_logger(__name__)

MAX_BACKOFF_SECONDS = 300.0
CHANNEL = "sb_webhooks"


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff(base: float, attempts: int) -> float:
    """Seconds before attempt `attempts + 1`, after `attempts` failed calls."""
    return float(min(MAX_BACKOFF_SECONDS, base * 2.0 ** max(0, attempts - 1)))


@dataclass
class Delivery:
    delivery_id: UUID
    rule: str
    url: str
    body: bytes
    attempts: int
    event_type: str


class WebhookSender:
    def __init__(
        self,
        store: EventStore,
        secret: str,
        *,
        retry_base: float = 2.0,
        max_attempts: int = 8,
        timeout: float = 10.0,
        batch_size: int = 1,
    ):
        self.store = store
        self.secret = secret.encode()
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.batch_size = batch_size
        self.client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)

    def claim(self) -> list[Delivery]:
        """Due deliveries, leased to this sender for longer than a call may take."""
        # Calls are made one after another: the lease covers all of them, each to its timeout.
        lease = timedelta(seconds=self.timeout * self.batch_size + 5)
        with self.store.datastore.transaction(commit=True) as curs:
            rows = curs.execute(
                "UPDATE sb_webhook_outbox o SET next_at = now() + %s, attempts = o.attempts + 1 "
                "FROM (SELECT delivery_id FROM sb_webhook_outbox WHERE state = 'pending' AND next_at <= now() "
                "      ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED) due "
                "WHERE o.delivery_id = due.delivery_id "
                "RETURNING o.delivery_id, o.rule, o.url, o.body, o.attempts, "
                "convert_from(o.body, 'UTF8')::jsonb #>> '{event,type}' AS event_type",
                (lease, self.batch_size),
            ).fetchall()
        return [
            Delivery(r["delivery_id"], r["rule"], r["url"], bytes(r["body"]), r["attempts"], r["event_type"] or "")
            for r in rows
        ]

    def send(self, d: Delivery) -> str | None:
        """One call; None when the receiver took it (2xx), else why not."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Switchboard-Webhooks/1",
            "X-Switchboard-Signature": signature(self.secret, d.body),
            "X-Switchboard-Delivery": str(d.delivery_id),
            "X-Switchboard-Event": d.event_type,
        }
        try:
            response = self.client.post(d.url, content=d.body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def record(self, d: Delivery, error: str | None) -> None:
        with self.store.datastore.transaction(commit=True) as curs:
            if error is None:
                curs.execute(
                    "UPDATE sb_webhook_outbox SET state = 'delivered', finished_at = now(), last_error = NULL "
                    "WHERE delivery_id = %s",
                    (d.delivery_id,),
                )
            elif d.attempts >= self.max_attempts:
                curs.execute(
                    "UPDATE sb_webhook_outbox SET state = 'dead', finished_at = now(), last_error = %s "
                    "WHERE delivery_id = %s",
                    (error, d.delivery_id),
                )
                log.warning("webhook_dead", rule=d.rule, delivery=str(d.delivery_id), attempts=d.attempts, error=error)
            else:
                delay = timedelta(seconds=backoff(self.retry_base, d.attempts))
                curs.execute(
                    "UPDATE sb_webhook_outbox SET next_at = now() + %s, last_error = %s WHERE delivery_id = %s",
                    (delay, error, d.delivery_id),
                )
                log.info("webhook_retry", rule=d.rule, delivery=str(d.delivery_id), attempts=d.attempts, error=error)

    def run_once(self) -> int:
        """Sends what is due; returns how many calls were made."""
        due = self.claim()
        for d in due:
            self.record(d, self.send(d))
        return len(due)

    def run_forever(self, stop: threading.Event, idle_wait: float = 1.0) -> None:
        while not stop.is_set():
            try:
                with self.store.datastore.get_connection() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not stop.is_set():
                        if self.run_once():
                            continue
                        for _ in conn.notifies(timeout=idle_wait, stop_after=1):
                            pass
            except quarantine.INFRASTRUCTURE_ERRORS:
                log.warning("webhook_sender_database_unavailable")
                stop.wait(1.0)
            except Exception:  # noqa: BLE001 -- the sender must survive anything one call does
                log.exception("webhook_sender_error")
                stop.wait(1.0)
        self.client.close()


# -- the dead-letter list (the API and the CLI) ------------------------------------------------------


def dead_letters(curs: Any, limit: int = 100) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = curs.execute(
        "SELECT delivery_id, rule, event_id, url, attempts, last_error, created_at, finished_at "
        "FROM sb_webhook_outbox WHERE state = 'dead' ORDER BY finished_at, delivery_id LIMIT %s",
        (limit,),
    ).fetchall()
    return rows


def retry_dead(curs: Any, delivery_ids: list[UUID] | None) -> int:
    """Dead deliveries (these, or every one when None) pending again, with a fresh set of attempts."""
    where = "state = 'dead'" + ("" if delivery_ids is None else " AND delivery_id = ANY(%s)")
    cur = curs.execute(
        f"UPDATE sb_webhook_outbox SET state = 'pending', attempts = 0, next_at = now(), finished_at = NULL "
        f"WHERE {where}",
        () if delivery_ids is None else (delivery_ids,),
    )
    retried = int(cur.rowcount)  # (the cursor is the same one the NOTIFY runs on)
    curs.execute(f"NOTIFY {CHANNEL}")
    return retried
