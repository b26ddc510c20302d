"""GDPR: an access request (everything held about a customer) and erasure (the right to be forgotten).

Erasure is crypto-shredding plus clean-up. The event log stays append-only and its hash chain
intact: a `CustomerErased` event is appended and the data keys of the customer and of everyone
merged into them are destroyed, so every personal field of every event they ever had reads as
redacted, forever, in every copy and backup of the log. What was derived from those fields outside
the log is removed in the same command:

- PostgreSQL: the identity index (`sb_identities`), the keyed hashes of the provider ids of the
  replies sent to them (`sb_outbound`), and the read models (timeline text and attachments, profile
  name and attributes, identities, case notes and tags) — here and now, and again by the
  projections when they reach `CustomerErased` (so a rebuild or a lagging projector stays clean);
- NATS: the chat sessions in the KV bucket, the agent replies waiting in each session's outbox, the
  attachment bytes in the object store (unless another customer sent the same file), the
  customer's messages in SB_INTERACTIONS (found by the stream sequence the core recorded) and the
  delivery statuses and bounces about their replies (found by case), the customer's events in
  SB_EVENTS (found by the `Sb-Position` header; the relay published them with the fields
  decrypted), dead letters carrying the customer's identities and their attachments. Deleted
  JetStream messages are erased (overwritten) by the server. Attachments nobody's timeline refers
  to and older than the NATS retention (left by interactions never recorded) are swept as well.

Provider message ids (a wamid encodes the phone number, a Telegram id the user's chat id, a chat id
the visitor's `client_id`, an email Message-ID the sender's host) and tags are sealed in the log like
any personal field (events stored before they were, at version 1, keep them in clear in their bytes:
the log is never rewritten; they read redacted). Interaction ids stay in clear: they are uuid5
hashes of the provider id, one-way, but not keyed, so someone who already suspects a Telegram chat
id can confirm it by hashing it with likely message numbers.

What only the keys can tell (the chat session ids, the identities) is read before the keys go and
kept in `sb_erasures` until the NATS clean-up is done, so an interrupted erasure completes when the
command is run again.

Not reachable from here: copies already delivered to downstream subscribers, messages in NATS that
the core never recorded (a provider's retry after the duplicate window), PostgreSQL's WAL, dead row
versions until VACUUM, and backups (the log's ciphertext in them is unreadable once the key is gone;
read models in them are not). NATS streams keep anything missed at most for
`SWITCHBOARD_NATS_RETENTION_SECONDS`.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import msgspec
import psycopg
from psycopg.rows import dict_row

from channels.blobs import BLOB_PREFIX
from channels.blobs import BUCKET as BLOB_BUCKET
from channels.chat_gateway import close_chat_sessions
from events.customer import IdentityClaimed, IdentityLinked, InteractionRecorded
from events.interactions import INTERACTION_DECODER, Identity
from services.domain.identity import InvalidIdentity, normalize
from services.platform.eventstore.store import EventStore
from services.platform.logs import get_logger
from services.replay import replay_events
from services.platform.streams import Names
from services.core.batch_sql import alias_survivor_of
from services.core.commands import NotFound, merged_customers
from services.core.commands import erase_customer as erase_in_log
from projections.runner import all_projections

log = get_logger(__name__)


SCHEMA = """
CREATE TABLE IF NOT EXISTS sb_erasures (
    customer_id uuid PRIMARY KEY,
    customer_ids uuid[] NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    -- Pointers into NATS that only the keys could tell, kept until the clean-up there is done.
    chat_sessions text[] NOT NULL DEFAULT '{}',
    identity_blinds bytea[] NOT NULL DEFAULT '{}',
    blobs text[] NOT NULL DEFAULT '{}',
    cleaned_at timestamptz
);
"""

RELAY_TRACKING = "relay:sb-events"  # services.relay.relay.TRACKING_NAME, without importing the relay


class CustomerNotFound(LookupError):
    pass


# -- access ----------------------------------------------------------------------------------------


def export_customer(store: EventStore, database_url: str, customer_id: UUID) -> dict:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        survivor = alias_survivor_of(conn, customer_id)
        profile = conn.execute("SELECT * FROM proj_customers WHERE id = %s", (survivor,)).fetchone()
        if profile is None and not store.load(survivor):
            raise CustomerNotFound(f"customer {customer_id} not found")
        identities = conn.execute("SELECT kind, value, verified FROM proj_identities WHERE customer_id = %s",
                                  (survivor,)).fetchall()
        timeline = conn.execute(
            "SELECT interaction_id, occurred_at, channel, direction, kind, text, case_id, attachments FROM proj_timeline "
            "WHERE customer_id = %s ORDER BY occurred_at", (survivor,)).fetchall()
        cases = conn.execute("SELECT * FROM proj_cases WHERE customer_id = %s ORDER BY opened_at", (survivor,)).fetchall()
        notes = conn.execute("SELECT n.* FROM proj_case_notes n JOIN proj_cases c ON c.id = n.case_id "
                             "WHERE c.customer_id = %s ORDER BY n.created_at", (survivor,)).fetchall()
    buffer = io.BytesIO()
    replay_events(store, buffer, customer=survivor, conninfo=database_url)
    events = [msgspec.json.decode(line) for line in buffer.getvalue().splitlines() if line]
    return msgspec.to_builtins({
        "customer_id": str(survivor),
        "requested_id": str(customer_id),
        "exported_at": datetime.now(UTC),
        "erased": bool(profile and profile.get("erased")),
        "profile": profile,
        "identities": identities,
        "timeline": timeline,
        "cases": cases,
        "notes": notes,
        "events": events,
    })


# -- erasure ---------------------------------------------------------------------------------------


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
        return (f"erased {self.customer_id} ({len(self.customer_ids)} customer record(s); keys destroyed); "
                f"NATS: {self.chat_sessions} chat session(s), {self.outbox_subjects} outbox(es), "
                f"{self.interactions_deleted} interaction(s), {self.events_deleted} event(s), "
                f"{self.dead_letters_deleted} dead letter(s), {self.blobs_deleted} attachment(s) deleted; "
                f"{self.orphan_blobs_deleted} orphan attachment(s) swept")


def erasure_scope(store: EventStore, customer_id: UUID) -> list[UUID]:
    """The survivor of this customer, then everyone merged into it (and into them)."""
    try:
        return [c.id for c in merged_customers(store, customer_id)]
    except NotFound as exc:
        raise CustomerNotFound(str(exc)) from exc


@dataclass
class _Footprint:
    """What only the keys can tell: chat sessions, blind indexes of identities, attachment blobs."""

    sessions: set[str] = field(default_factory=set)
    blinds: set[bytes] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)


def _footprint(store: EventStore, ids: list[UUID]) -> _Footprint:
    found = _Footprint()
    sessions, blinds, blobs = found.sessions, found.blinds, found.blobs
    for cid in ids:
        for event, redacted in store.open_stored(store.recorder.select_events(cid)):
            if redacted:
                continue
            if isinstance(event, IdentityLinked | IdentityClaimed):
                blinds.add(store.master.blind_index(event.kind, event.value))
                if event.kind == "chat":
                    sessions.add(event.value)
            elif isinstance(event, InteractionRecorded):
                if event.thread_key and event.thread_key.startswith("chat:"):
                    sessions.add(event.thread_key.split(":", 1)[1])
                blobs.update(a.ref[len(BLOB_PREFIX):] for a in event.attachments
                             if a.ref and a.ref.startswith(BLOB_PREFIX))
    return found


def erase_customer(sb, customer_id: UUID, requested_by: str, now: datetime, *, relay_wait: float = 10.0) -> ErasureReport:
    """Erases a customer everywhere Switchboard keeps them (see the module's docstring); idempotent.

    Running it again on an erased customer finishes a clean-up that was interrupted.
    """
    store: EventStore = sb.open_store()
    ids = erasure_scope(store, customer_id)
    found = _footprint(store, ids)
    with store.datastore.transaction(commit=True) as curs:
        curs.execute(SCHEMA)
        curs.execute(
            "INSERT INTO sb_erasures (customer_id, customer_ids, requested_by, requested_at, chat_sessions, "
            "identity_blinds, blobs) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (customer_id) DO UPDATE SET "
            "customer_ids = ARRAY(SELECT DISTINCT unnest(sb_erasures.customer_ids || EXCLUDED.customer_ids)), "
            "chat_sessions = ARRAY(SELECT DISTINCT unnest(sb_erasures.chat_sessions || EXCLUDED.chat_sessions)), "
            "identity_blinds = ARRAY(SELECT DISTINCT unnest(sb_erasures.identity_blinds || EXCLUDED.identity_blinds)), "
            "blobs = ARRAY(SELECT DISTINCT unnest(sb_erasures.blobs || EXCLUDED.blobs)), cleaned_at = NULL",
            (ids[0], ids, requested_by, now, sorted(found.sessions), sorted(found.blinds), sorted(found.blobs)))
    # The irreversible step: CustomerErased appended, keys destroyed, identity index dropped.
    erased = erase_in_log(store, customer_id, requested_by, now)
    ids = list(dict.fromkeys([*ids, *erased]))
    scrub_read_models(store, ids)
    case_ids = _recorded(store, ids)[1]
    with store.datastore.transaction(commit=True) as curs:
        # Keyed hashes of the ids of the replies we sent them: no status about those matters any more.
        curs.execute("DELETE FROM sb_outbound WHERE case_id = ANY(%s)", (sorted(case_ids),))
    with store.datastore.transaction(commit=True) as curs:
        curs.execute("SELECT chat_sessions, identity_blinds, blobs FROM sb_erasures WHERE customer_id = %s", (ids[0],))
        row = curs.fetchone()
        # Attachments are stored once by content: a file another customer also sent stays.
        curs.execute("SELECT DISTINCT a->>'sha256' AS sha256 FROM proj_timeline, jsonb_array_elements(attachments) a "
                     "WHERE a->>'sha256' = ANY(%s)", (row["blobs"],))
        shared = {r["sha256"] for r in curs.fetchall()}
    pending = _Footprint(set(row["chat_sessions"]), {bytes(b) for b in row["identity_blinds"]},
                         set(row["blobs"]) - shared)
    report = ErasureReport(customer_id=customer_id, customer_ids=ids)
    try:
        asyncio.run(_clean_nats(sb, store, ids, pending, report, relay_wait))
    except Exception as exc:  # noqa: BLE001 — the keys are gone already; what is left is kept for a rerun
        report.complete = False
        report.warnings.append(f"NATS clean-up incomplete ({type(exc).__name__}): run the erasure again")
        log.warning("customer_erasure_incomplete", customer_id=str(customer_id), error=type(exc).__name__)
        return report
    with store.datastore.transaction(commit=True) as curs:
        curs.execute("UPDATE sb_erasures SET chat_sessions = '{}', identity_blinds = '{}', blobs = '{}', "
                     "cleaned_at = now(), customer_ids = %s WHERE customer_id = %s", (ids, ids[0]))
    log.info("customer_erased", customer_id=str(customer_id), customers=len(ids),
             interactions_deleted=report.interactions_deleted, events_deleted=report.events_deleted,
             dead_letters_deleted=report.dead_letters_deleted, chat_sessions=report.chat_sessions)
    return report


def scrub_read_models(store: EventStore, ids: list[UUID]) -> None:
    """What the projections do on CustomerErased, done now: erasure must not wait for a projector."""
    with store.datastore.transaction(commit=True) as curs:
        for projection in all_projections():
            projection.erase(curs, ids)


# -- NATS ------------------------------------------------------------------------------------------


async def _clean_nats(sb, store: EventStore, ids: list[UUID], found: _Footprint, report: ErasureReport,
                      relay_wait: float) -> None:
    from services.platform.nats_client import connect  # noqa: PLC0415

    names: Names = sb.names
    async def quiet(exc: Exception) -> None:  # nats-py prints every failed attempt's traceback otherwise
        log.debug("erase_nats_error", error=type(exc).__name__)

    # Not the service's patient reconnecting: NATS out of reach is reported (and the run repeated).
    nc = await connect(sb.settings, name="switchboard-erase", connect_timeout=5, allow_reconnect=False,
                       max_reconnect_attempts=2, reconnect_time_wait=0.5, error_cb=quiet)
    try:
        js = nc.jetstream()
        report.chat_sessions = await _purge_chat_sessions(js, names, found.sessions)
        # Every gateway closes the erased customer's open chat sockets (their sessions are gone now).
        await close_chat_sessions(nc, names, found.sessions)
        report.outbox_subjects = await _purge_outboxes(js, names, found.sessions)
        report.blobs_deleted = await _delete_blobs(js, names, found.blobs)
        interaction_ids, case_ids = await asyncio.to_thread(_recorded, store, ids)
        report.interactions_deleted = await _delete_interactions(js, names, store, interaction_ids, case_ids)
        dead_blobs: set[str] = set()
        report.dead_letters_deleted = await _delete_dead_letters(js, names, store, interaction_ids, found.blinds,
                                                                 dead_blobs)
        # Attachments of dead letters were never on a timeline: nobody else refers to them unless they
        # sent the same file.
        report.blobs_deleted += await _delete_blobs(js, names, dead_blobs - await asyncio.to_thread(
            _shared_blobs, store, dead_blobs))
        report.orphan_blobs_deleted = await _sweep_orphan_blobs(js, names, store, sb.settings.nats_retention_seconds)
        positions = await asyncio.to_thread(_positions_after_relay, store, ids, relay_wait, report)
        report.events_deleted = await _delete_events(js, names, positions)
    finally:
        await nc.close()


async def _stream_exists(js, name: str) -> bool:
    from nats.js.errors import NotFoundError  # noqa: PLC0415

    try:
        await js.stream_info(name)
        return True
    except NotFoundError:
        return False


async def _purge_chat_sessions(js, names: Names, sessions: set[str]) -> int:
    if not sessions:
        return 0
    try:
        kv = await js.key_value(names.chat_sessions_bucket)
    except Exception:  # noqa: BLE001 — no bucket: nothing to purge
        return 0
    for session_id in sorted(sessions):
        await kv.purge(session_id)
    return len(sessions)


async def _purge_outboxes(js, names: Names, sessions: set[str]) -> int:
    if not sessions or not await _stream_exists(js, names.chat_outbox):
        return 0
    for session_id in sorted(sessions):
        await js.purge_stream(names.chat_outbox, subject=names.chat_outbox_subject(session_id))
    return len(sessions)


async def _delete_blobs(js, names: Names, blobs: set[str]) -> int:
    from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError  # noqa: PLC0415

    if not blobs:
        return 0
    try:
        obs = await js.object_store(names.stream(BLOB_BUCKET))
    except (BucketNotFoundError, NotFoundError):
        return 0
    deleted = 0
    for sha256 in sorted(blobs):
        try:
            await obs.delete(sha256)
            deleted += 1
        except (ObjectNotFoundError, NotFoundError):
            pass
    return deleted


def _interaction_ids(store: EventStore, ids: list[UUID]) -> set[UUID]:
    return _recorded(store, ids)[0]


def _recorded(store: EventStore, ids: list[UUID]) -> tuple[set[UUID], set[UUID]]:
    """The ids of the customers' interactions and of their cases (both in clear: readable after erasure)."""
    interactions: set[UUID] = set()
    cases: set[UUID] = set()
    for cid in ids:
        for event in store.load(cid):
            if isinstance(event, InteractionRecorded):
                interactions.add(event.interaction_id)
                if event.case_id is not None:
                    cases.add(event.case_id)
    return interactions, cases


async def _delete(js, stream: str, seq: int) -> bool:
    from nats.js.errors import NotFoundError  # noqa: PLC0415

    try:
        return bool(await js.delete_msg(stream, seq))
    except NotFoundError:
        return False  # gone already: expired by retention, or deleted by an earlier run
    except Exception as exc:  # noqa: BLE001 — JetStream answers "no message found" as an APIError
        if "no message found" in str(exc).lower() or getattr(exc, "err_code", None) == 10037:
            return False
        raise


async def _delete_interactions(js, names: Names, store: EventStore, interaction_ids: set[UUID],
                               case_ids: set[UUID] = frozenset()) -> int:
    """The customer's interactions, and the delivery statuses and bounces about their cases' replies."""
    if not (interaction_ids or case_ids) or not await _stream_exists(js, names.interactions):
        return 0
    with store.datastore.transaction(commit=False) as curs:
        curs.execute("SELECT stream_seq FROM sb_processed WHERE (interaction_id = ANY(%s) OR case_id = ANY(%s)) "
                     "AND stream_seq IS NOT NULL", (list(interaction_ids), list(case_ids)))
        seqs = sorted(row["stream_seq"] for row in curs.fetchall())
    deleted = 0
    for seq in seqs:
        deleted += await _delete(js, names.interactions, seq)
    return deleted


async def _delete_dead_letters(js, names: Names, store: EventStore, interaction_ids: set[UUID],
                               blinds: set[bytes], blobs: set[str] | None = None) -> int:
    """Dead letters are interactions nobody could record: matched by id, or by one of the identities.

    Each goes with the original it was copied from, still in SB_INTERACTIONS (`Sb-Original-Sequence`).
    The `blob:` attachments of the matched ones are added to `blobs`.
    """
    if not await _stream_exists(js, names.deadletters):
        return 0
    info = await js.stream_info(names.deadletters)
    if not info.state.messages:
        return 0
    matched: list[tuple[int, int | None]] = []
    seq = info.state.first_seq
    while seq and seq <= info.state.last_seq:
        try:
            msg = await js.get_msg(names.deadletters, seq=seq, subject=names.subject("sb.deadletter.>"), next=True)
        except Exception:  # noqa: BLE001 — nothing at or after seq
            break
        if _dead_letter_matches(store, msg.data or b"", interaction_ids, blinds):
            if blobs is not None:
                blobs.update(_blob_refs(msg.data or b""))
            original = (msg.headers or {}).get("Sb-Original-Sequence", "")
            matched.append((msg.seq, int(original) if original.isdigit() else None))
        seq = msg.seq + 1
    deleted = 0
    for dead_seq, original_seq in matched:
        deleted += await _delete(js, names.deadletters, dead_seq)
        if original_seq is not None and await _stream_exists(js, names.interactions):
            await _delete(js, names.interactions, original_seq)
    return deleted


def _blob_refs(data: bytes) -> set[str]:
    try:
        interaction = INTERACTION_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return set()
    return {a.ref[len(BLOB_PREFIX):] for a in interaction.attachments if a.ref and a.ref.startswith(BLOB_PREFIX)}


def _shared_blobs(store: EventStore, blobs: set[str]) -> set[str]:
    """Those of these attachments still on someone's timeline (the same file sent by another customer)."""
    if not blobs:
        return set()
    with store.datastore.transaction(commit=False) as curs:
        curs.execute("SELECT DISTINCT a->>'sha256' AS sha256 FROM proj_timeline, jsonb_array_elements(attachments) a "
                     "WHERE a->>'sha256' = ANY(%s)", (sorted(blobs),))
        return {r["sha256"] for r in curs.fetchall()}


async def _sweep_orphan_blobs(js, names: Names, store: EventStore, retention_seconds: int,
                              now: datetime | None = None) -> int:
    """Attachments on nobody's timeline and older than the NATS retention: nothing can refer to them any more.

    An attachment is stored by the gateway before its interaction is published; if that interaction
    was never recorded (a publish that failed, a dead letter that expired), its bytes stay behind
    with no owner to erase them with. Once older than the streams' retention, no interaction or dead
    letter that names it is left, and no timeline row refers to it: it is deleted.
    """
    from nats.js.errors import BucketNotFoundError, NotFoundError  # noqa: PLC0415

    try:
        obs = await js.object_store(names.stream(BLOB_BUCKET))
        infos = await obs.list()
    except (BucketNotFoundError, NotFoundError):
        return 0
    cutoff = (now or datetime.now(UTC)).timestamp() - retention_seconds
    old = set()
    for info in infos:
        if info.deleted or not info.name:
            continue
        try:
            mtime = datetime.fromisoformat(info.mtime.replace("Z", "+00:00")).timestamp() if info.mtime else None
        except ValueError:
            mtime = None
        if mtime is not None and mtime < cutoff:
            old.add(info.name)
    orphans = old - await asyncio.to_thread(_shared_blobs, store, old)
    return await _delete_blobs(js, names, orphans)


def _dead_letter_matches(store: EventStore, data: bytes, interaction_ids: set[UUID], blinds: set[bytes]) -> bool:
    try:
        interaction = INTERACTION_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    if interaction.id in interaction_ids:
        return True
    for identity in interaction.identities:
        candidates = {identity.value.strip()}
        try:
            candidates.add(normalize(Identity(identity.kind, identity.value)).value)
        except InvalidIdentity:
            pass
        if any(store.master.blind_index(identity.kind, value) in blinds for value in candidates):
            return True
    return False


def _positions_after_relay(store: EventStore, ids: list[UUID], relay_wait: float, report: ErasureReport) -> list[int]:
    """The positions of the customer's events, once the relay has published all of them.

    Waits (up to `relay_wait`) for the relay to pass the newest of them; without a running relay,
    what it publishes later is read with the keys already gone, so it is redacted.
    """
    with store.datastore.transaction(commit=False) as curs:
        clauses = " OR ".join(["position(%s::bytea in state) > 0"] * len(ids))
        curs.execute(f"SELECT notification_id FROM sb_events WHERE {clauses} ORDER BY notification_id",
                     [b'"customer_id":"%s"' % str(i).encode() for i in ids])
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
            report.warnings.append(f"the relay has published up to position {relayed}, not {positions[-1]}: "
                                   "events after it will be published redacted")
            break
        time.sleep(0.05)
    return [p for p in positions if p <= relayed]


async def _delete_events(js, names: Names, positions: list[int]) -> int:
    """SB_EVENTS is in log order, one message per position: each is found by a guess, else bisection."""
    if not positions or not await _stream_exists(js, names.events):
        return 0
    info = await js.stream_info(names.events)
    first, last = info.state.first_seq, info.state.last_seq
    if not info.state.messages:
        return 0
    subject = names.subject("sb.events.>")

    async def at_or_after(seq: int):
        try:
            msg = await js.get_msg(names.events, seq=seq, subject=subject, next=True)
        except Exception:  # noqa: BLE001 — nothing at or after seq
            return None
        return msg if msg.seq <= last else None

    def position_of(msg) -> int:
        return int((msg.headers or {}).get("Sb-Position", "0"))

    offset = 0  # seq − position of the last message found: a good first guess for the next
    deleted = 0
    missing = 0
    for position in positions:
        found = None
        guess = position + offset
        if first <= guess <= last:
            msg = await at_or_after(guess)
            if msg is not None and position_of(msg) == position:
                found = msg
        lo, hi = first, last
        while found is None and lo <= hi:
            mid = (lo + hi) // 2
            msg = await at_or_after(mid)
            if msg is None or msg.seq > hi:
                hi = mid - 1
                continue
            p = position_of(msg)
            if p == position:
                found = msg
            elif p < position:
                lo = msg.seq + 1
            else:
                hi = mid - 1
        if found is None:
            missing += 1  # expired by retention, or deleted by an earlier run
            continue
        offset = found.seq - position
        deleted += await _delete(js, names.events, found.seq)
    return deleted
