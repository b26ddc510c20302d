"""Erasure: keys destroyed in the log, the read models scrubbed, then the clean-up in NATS (resumable)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

from channels.chat_gateway import close_chat_sessions
from projections.runner import all_projections
from services.core.commands import erase_customer as erase_in_log
from services.gdpr.blobs import delete_blobs, shared_blobs, sweep_orphan_blobs
from services.gdpr.purge import (
    delete_dead_letters,
    delete_events,
    delete_interactions,
    purge_chat_sessions,
    purge_outboxes,
)
from services.gdpr.scope import Footprint, erasure_scope, footprint, recorded
from services.platform.eventstore.store import EventStore
from services.platform.logs import get_logger
from services.platform.nats_client import connect
from services.platform.settings import Settings
from services.platform.streams import Names

log = get_logger(__name__)


RELAY_TRACKING = "relay:sb-events"  # services.relay.relay.TRACKING_NAME, without importing the relay


class Deployment(Protocol):
    """What erasure needs of the composition root (`services.bootstrap.Switchboard` is one)."""

    settings: Settings
    names: Names

    def open_store(self) -> EventStore: ...


@dataclass
class ErasureReport:
    customer_id: UUID
    customer_ids: list[UUID]
    chat_sessions: int = 0
    outbox_subjects: int = 0
    interactions_deleted: int = 0
    events_deleted: int = 0
    dead_letters_deleted: int = 0
    blobs_deleted: int = 0
    orphan_blobs_deleted: int = 0
    warnings: list[str] = field(default_factory=list)
    complete: bool = True  # False: the NATS clean-up did not finish (run the erasure again)

    def summary(self) -> str:
        return (
            f"erased {self.customer_id} ({len(self.customer_ids)} customer record(s); keys destroyed); "
            f"NATS: {self.chat_sessions} chat session(s), {self.outbox_subjects} outbox(es), "
            f"{self.interactions_deleted} interaction(s), {self.events_deleted} event(s), "
            f"{self.dead_letters_deleted} dead letter(s), {self.blobs_deleted} attachment(s) deleted; "
            f"{self.orphan_blobs_deleted} orphan attachment(s) swept"
        )


def erase_customer(
    sb: Deployment, customer_id: UUID, requested_by: str, now: datetime, *, relay_wait: float = 10.0
) -> ErasureReport:
    """Erases a customer everywhere Switchboard keeps them (see the docstring of services.gdpr); idempotent.

    Running it again on an erased customer finishes a clean-up that was interrupted.
    """
    store: EventStore = sb.open_store()
    ids = erasure_scope(store, customer_id)
    found = footprint(store, ids)
    with store.datastore.transaction(commit=True) as curs:
        curs.execute(
            "INSERT INTO sb_erasures (customer_id, customer_ids, requested_by, requested_at, chat_sessions, "
            "identity_blinds, blobs) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (customer_id) DO UPDATE SET "
            "customer_ids = ARRAY(SELECT DISTINCT unnest(sb_erasures.customer_ids || EXCLUDED.customer_ids)), "
            "chat_sessions = ARRAY(SELECT DISTINCT unnest(sb_erasures.chat_sessions || EXCLUDED.chat_sessions)), "
            "identity_blinds = ARRAY(SELECT DISTINCT unnest(sb_erasures.identity_blinds || EXCLUDED.identity_blinds)), "
            "blobs = ARRAY(SELECT DISTINCT unnest(sb_erasures.blobs || EXCLUDED.blobs)), cleaned_at = NULL",
            (ids[0], ids, requested_by, now, sorted(found.sessions), sorted(found.blinds), sorted(found.blobs)),
        )
    # The irreversible step: CustomerErased appended, keys destroyed, identity index dropped.
    erased = erase_in_log(store, customer_id, requested_by, now)
    ids = list(dict.fromkeys([*ids, *erased]))
    scrub_read_models(store, ids)
    case_ids = recorded(store, ids)[1]
    with store.datastore.transaction(commit=True) as curs:
        # Keyed hashes of the ids of the replies we sent them: no status about those matters any more.
        curs.execute("DELETE FROM sb_outbound WHERE case_id = ANY(%s)", (sorted(case_ids),))
        curs.execute("UPDATE sb_campaign_messages SET provider_blind = NULL WHERE recipient_id = ANY(%s)", (ids,))
        # Customer snapshots are sealed with the destroyed keys already; the rows go too.
        curs.execute("DELETE FROM sb_snapshots WHERE stream_id = ANY(%s)", (ids,))
    with store.datastore.transaction(commit=True) as curs:
        curs.execute("SELECT chat_sessions, identity_blinds, blobs FROM sb_erasures WHERE customer_id = %s", (ids[0],))
        row = curs.fetchone()
        # Attachments are stored once by content: a file another customer also sent stays.
        curs.execute(
            "SELECT DISTINCT a->>'sha256' AS sha256 FROM proj_timeline, jsonb_array_elements(attachments) a "
            "WHERE a->>'sha256' = ANY(%s)",
            (row["blobs"],),
        )
        shared = {r["sha256"] for r in curs.fetchall()}
    pending = Footprint(
        set(row["chat_sessions"]), {bytes(b) for b in row["identity_blinds"]}, set(row["blobs"]) - shared
    )
    report = ErasureReport(customer_id=customer_id, customer_ids=ids)
    try:
        asyncio.run(clean_nats(sb, store, ids, pending, report, relay_wait))
    except Exception as exc:  # noqa: BLE001 — the keys are gone already; what is left is kept for a rerun
        report.complete = False
        report.warnings.append(f"NATS clean-up incomplete ({type(exc).__name__}): run the erasure again")
        log.warning("customer_erasure_incomplete", customer_id=str(customer_id), error=type(exc).__name__)
        return report
    with store.datastore.transaction(commit=True) as curs:
        curs.execute(
            "UPDATE sb_erasures SET chat_sessions = '{}', identity_blinds = '{}', blobs = '{}', "
            "cleaned_at = now(), customer_ids = %s WHERE customer_id = %s",
            (ids, ids[0]),
        )
    log.info(
        "customer_erased",
        customer_id=str(customer_id),
        customers=len(ids),
        interactions_deleted=report.interactions_deleted,
        events_deleted=report.events_deleted,
        dead_letters_deleted=report.dead_letters_deleted,
        chat_sessions=report.chat_sessions,
    )
    return report


def scrub_read_models(store: EventStore, ids: list[UUID]) -> None:
    """What the projections do on CustomerErased, done now: erasure must not wait for a projector."""
    with store.datastore.transaction(commit=True) as curs:
        for projection in all_projections():
            projection.erase(curs, ids)


async def clean_nats(
    sb: Deployment, store: EventStore, ids: list[UUID], found: Footprint, report: ErasureReport, relay_wait: float
) -> None:
    names: Names = sb.names

    async def quiet(exc: Exception) -> None:  # nats-py prints every failed attempt's traceback otherwise
        log.debug("erase_nats_error", error=type(exc).__name__)

    # Not the service's patient reconnecting: NATS out of reach is reported (and the run repeated).
    nc = await connect(
        sb.settings,
        name="switchboard-erase",
        connect_timeout=5,
        allow_reconnect=False,
        max_reconnect_attempts=2,
        reconnect_time_wait=0.5,
        error_cb=quiet,
    )
    try:
        js = nc.jetstream()
        report.chat_sessions = await purge_chat_sessions(js, names, found.sessions)
        # Every gateway closes the erased customer's open chat sockets (their sessions are gone now).
        await close_chat_sessions(nc, names, found.sessions)
        report.outbox_subjects = await purge_outboxes(js, names, found.sessions)
        report.blobs_deleted = await delete_blobs(js, names, found.blobs)
        interaction_ids, case_ids = await asyncio.to_thread(recorded, store, ids)
        report.interactions_deleted = await delete_interactions(js, names, store, interaction_ids, case_ids)
        dead_blobs: set[str] = set()
        report.dead_letters_deleted = await delete_dead_letters(
            js, names, store, interaction_ids, found.blinds, dead_blobs
        )
        # Attachments of dead letters were never on a timeline: nobody else refers to them unless they
        # sent the same file.
        report.blobs_deleted += await delete_blobs(
            js, names, dead_blobs - await asyncio.to_thread(shared_blobs, store, dead_blobs)
        )
        report.orphan_blobs_deleted = await sweep_orphan_blobs(js, names, store, sb.settings.nats_retention_seconds)
        positions = await asyncio.to_thread(positions_after_relay, store, ids, relay_wait, report)
        report.events_deleted = await delete_events(js, names, positions)
    finally:
        await nc.close()


def positions_after_relay(store: EventStore, ids: list[UUID], relay_wait: float, report: ErasureReport) -> list[int]:
    """The positions of the customer's events, once the relay has published all of them.

    Waits (up to `relay_wait`) for the relay to pass the newest of them; without a running relay,
    what it publishes later is read with the keys already gone, so it is redacted.
    """
    with store.datastore.transaction(commit=False) as curs:
        clauses = " OR ".join(["position(%s::bytea in state) > 0"] * len(ids))
        curs.execute(
            f"SELECT notification_id FROM sb_events WHERE {clauses} ORDER BY notification_id",
            [b'"customer_id":"%s"' % str(i).encode() for i in ids],
        )
        positions = [row["notification_id"] for row in curs.fetchall()]
    if not positions:
        return []
    deadline = time.monotonic() + relay_wait
    last, last_change = None, time.monotonic()
    while True:
        relayed = store.recorder.max_tracking_id(RELAY_TRACKING) or 0
        if relayed >= positions[-1]:
            break
        now = time.monotonic()
        if relayed != last:
            last, last_change = relayed, now
        if now > deadline or now - last_change > 3.0:
            report.warnings.append(
                f"the relay has published up to position {relayed}, not {positions[-1]}: "
                "events after it will be published redacted"
            )
            break
        time.sleep(0.05)
    return [p for p in positions if p <= relayed]
