"""The relay: every stored domain event onto NATS (`sb.events.<aggregate>.<EventType>`), once, in order.

It reads the event store from where it stopped and publishes each event with `Nats-Msg-Id` = the
event id and `Sb-Position` = its position in the log, then stores its new position. Two guarantees:

- once: a crash between publishing and storing the position republishes a few events, which
  JetStream drops as duplicates of their ids; and on taking over, the relay starts after the last
  event the stream already holds, so even beyond the duplicate window nothing is sent twice.
- in order: every publish carries `Nats-Expected-Last-Msg-Id` = the id of the event before it, so
  JetStream refuses an event that would land out of order (say, after an earlier one was lost in a
  reconnect); the relay then starts again from the last event the stream holds.

One relay is active at a time (a PostgreSQL advisory lock); others stand by.

An event that can never be published as it is (it cannot be encoded, it is larger than the
server's `max_payload`, JetStream refuses it with a 400) does not stop the relay: it is quarantined
(`services.platform.quarantine`, consumer `relay:sb-events`) in the transaction that stores the position past
it, and the events after it are published, chained to the one before it. `switchboard quarantine
retry --relay` publishes it later (out of order, its `Sb-Position` telling where it belongs).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import msgspec
from eventsourcing.persistence import Tracking
from nats.errors import MaxPayloadError
from nats.js.errors import BadRequestError, NotFoundError

from events.base import DomainEvent
from services.platform import quarantine
from services.platform.logs import get_logger
from services.relay.anchor import start_anchor_refresh
from services.relay.outbound import start_outbound

log = get_logger(__name__)

TRACKING_NAME = "relay:sb-events"
_LOCK_KEY = 0x5B_72656C6179  # "sb relay"
_encode = msgspec.json.Encoder().encode
BATCH = 1000


class PublishedEvent(msgspec.Struct, kw_only=True):
    """The body of a message on SB_EVENTS: the event's fields, plus where it stands in the log."""

    type: str
    version: int
    position: int
    redacted: bool
    event: dict


def event_message(position: int, event: DomainEvent, redacted: bool) -> tuple[str, str, bytes]:
    aggregate, event_type = event.NAME.split(".", 1)
    body = _encode(
        PublishedEvent(
            type=event.NAME,
            version=type(event).VERSION,
            position=position,
            redacted=redacted,
            event=msgspec.to_builtins(event),
        )
    )
    return aggregate, event_type, body


@dataclass
class RelayState:
    """Where the relay stands: the last position published and the id of that event."""

    position: int = 0
    last_id: str | None = None


async def resume_state(sb) -> RelayState:
    """Where to go on: the stored position, or the last event the stream holds if that is further on
    (published, but the relay stopped before storing its position). The next publish is expected to
    follow the stream's last message, whatever it is."""
    store = sb.open_store()
    state = RelayState(position=await asyncio.to_thread(store.recorder.max_tracking_id, TRACKING_NAME) or 0)
    info = await sb.js.stream_info(sb.names.events)
    if not info.state.messages:
        return state
    try:
        last = await sb.js.get_msg(sb.names.events, seq=info.state.last_seq)
    except NotFoundError:
        return state
    headers = last.headers or {}
    state.last_id = headers.get("Nats-Msg-Id")
    position = int(headers.get("Sb-Position", 0) or 0)
    if position > state.position:
        # Only if that message is this log's event at that position (not a log that was since replaced).
        found = await asyncio.to_thread(store.read, position - 1, 1)
        if found and found[0][0] == position and str(found[0][1].id) == state.last_id:
            state.position = position
        else:
            log.warning("relay_stream_ahead_of_log", stream_position=position, stored_position=state.position)
    return state


class Unpublishable(Exception):
    """This event cannot be published as it is: trying again changes nothing."""


# JetStream's "wrong last message id": the stream moved under us (resume from it), not a bad event.
_WRONG_LAST_MSG_ID = 10071


def _permanent(exc: BaseException) -> bool:
    """A failure that is this event's (publishing it again would fail again), not the connection's."""
    if isinstance(exc, Unpublishable | MaxPayloadError):
        return True
    return isinstance(exc, BadRequestError) and exc.err_code != _WRONG_LAST_MSG_ID


def _message(sb, position: int, event: DomainEvent, redacted: bool) -> tuple[str, bytes]:
    try:
        aggregate, event_type, body = event_message(position, event, redacted)
    except Exception as exc:  # noqa: BLE001 — an event msgspec cannot encode is never publishable
        raise Unpublishable(f"cannot be encoded: {type(exc).__name__}") from exc
    limit = sb.nc.max_payload
    if len(body) > limit:
        raise Unpublishable(f"{len(body)} bytes, more than the server's max_payload of {limit}")
    return sb.names.event_subject(aggregate, event_type), body


async def relay_once(sb, state: RelayState, batch: int = BATCH) -> int:
    """Publishes the next batch after `state.position`; returns how many events were handled
    (published, or quarantined as unpublishable)."""
    store = sb.open_store()
    items = await asyncio.to_thread(store.read, state.position, batch)
    if not items:
        return 0
    acks, ids = [], []
    bad: tuple[int, BaseException] | None = None  # (index in items, why) of an unpublishable event
    previous = state.last_id
    for index, (position, event, redacted) in enumerate(items):
        try:
            subject, body = _message(sb, position, event, redacted)
        except Unpublishable as exc:
            bad = (index, exc)  # publish what comes before it, then set it aside
            break
        headers = {"Nats-Msg-Id": str(event.id), "Sb-Position": str(position)}
        if previous is not None:
            headers["Nats-Expected-Last-Msg-Id"] = previous
        previous = headers["Nats-Msg-Id"]
        ids.append(previous)
        # Started in log order: the client writes them to the connection in the order they start.
        acks.append(asyncio.ensure_future(sb.js.publish(subject, body, headers=headers)))
    results = await asyncio.gather(*acks, return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            if not _permanent(result):
                raise result  # resumed from what the stream holds: nothing is skipped or sent out of order
            # Everything after it expected it as the last message, and was refused: done again next time.
            bad = (index, result)
            break
    published = bad[0] if bad is not None else len(items)
    if published:
        state.position, state.last_id = items[published - 1][0], ids[published - 1]
    if bad is None:
        await asyncio.to_thread(store.recorder.insert_tracking, Tracking(TRACKING_NAME, state.position))
        return published
    position, event, _redacted = items[bad[0]]
    await asyncio.to_thread(_quarantine, store, position, event, bad[1])
    state.position = position
    return published + 1


def _quarantine(store, position: int, event: DomainEvent, exc: BaseException) -> None:
    """Sets the event aside and moves the relay's position past it, together."""
    with store.datastore.transaction(commit=True) as curs:
        quarantine.record(curs, TRACKING_NAME, position, event, exc)
        store.recorder._insert_tracking(curs, Tracking(TRACKING_NAME, position))


async def retry_quarantined(sb, position: int | None = None) -> tuple[int, int]:
    """Publishes the relay's quarantined events (oldest first), late: without the in-order check, with
    `Sb-Position` saying where each belongs; each that JetStream takes leaves quarantine (a copy it
    already holds is acknowledged as a duplicate and leaves too). Returns (published, still failing).

    A running relay notices the stream's new last message at its next publish and resumes after it."""
    store = sb.open_store()

    def entries() -> list[quarantine.Quarantined]:
        with store.datastore.transaction(commit=False) as curs:
            return quarantine.listing(curs, [TRACKING_NAME], position)

    def settle(entry: quarantine.Quarantined, event: DomainEvent, exc: BaseException | None) -> None:
        with store.datastore.transaction(commit=True) as curs:
            if exc is None:
                quarantine.release(curs, TRACKING_NAME, entry.position)
            else:
                quarantine.record(curs, TRACKING_NAME, entry.position, event, exc)

    published = failing = 0
    for entry in await asyncio.to_thread(entries):
        found = await asyncio.to_thread(store.read, entry.position - 1, 1)
        if not found or found[0][0] != entry.position:
            continue
        at, event, redacted = found[0]
        try:
            subject, body = _message(sb, at, event, redacted)
            await sb.js.publish(subject, body, headers={"Nats-Msg-Id": str(event.id), "Sb-Position": str(at)})
        except Exception as exc:  # noqa: BLE001 — stays quarantined, one attempt more
            if not _permanent(exc):
                raise
            await asyncio.to_thread(settle, entry, event, exc)
            failing += 1
        else:
            await asyncio.to_thread(settle, entry, event, None)
            published += 1
    return published, failing


async def run_relay(sb) -> None:
    store = sb.open_store()
    while not sb.stop_event.is_set():
        try:
            # The lock's connection is taken and given back in a worker thread: the event loop also
            # serves the gateway and /ready, and a pool waiting for an unreachable (or hung)
            # PostgreSQL would stall them all (issue 13: the gateway slowed to ~1 request a second).
            held = await asyncio.to_thread(_take_lock, store)
            if held is None:
                await asyncio.sleep(1.0)
                continue
            try:
                state = await resume_state(sb)
                log.info("relay_active", position=state.position)
                while not sb.stop_event.is_set():
                    if not await relay_once(sb, state):
                        await asyncio.sleep(0.05)
            finally:
                await asyncio.to_thread(_release_lock, held)
        except asyncio.CancelledError:
            raise
        except quarantine.INFRASTRUCTURE_ERRORS as exc:  # an outage: one line, and again shortly
            log.warning("relay_database_unavailable", error=type(exc).__name__)
            await asyncio.sleep(1.0)
        except Exception:  # noqa: BLE001 — survive NATS or PostgreSQL restarts; resume from the stream
            log.exception("relay_error")
            await asyncio.sleep(1.0)


def _take_lock(store):
    """The relay's advisory lock on a pooled connection: (context, connection), or None if another
    relay holds it."""
    context = store.datastore.get_connection()
    conn = context.__enter__()
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
    except BaseException:
        context.__exit__(*sys.exc_info())
        raise
    if not list(got.values())[0]:
        context.__exit__(None, None, None)
        return None
    return context, conn


def _release_lock(held) -> None:
    context, conn = held
    try:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except quarantine.INFRASTRUCTURE_ERRORS:
        pass  # the connection is gone, and the lock with it
    finally:
        context.__exit__(None, None, None)


async def start_relay(sb) -> None:
    sb.tasks.append(asyncio.create_task(run_relay(sb), name="relay"))
    start_anchor_refresh(sb)
    await start_outbound(sb)
