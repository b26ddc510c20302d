"""The relay: every stored domain event onto NATS (`sb.events.<aggregate>.<EventType>`), once, in order.

It reads the event store from its own tracking position, publishes with `Nats-Msg-Id` = event id
and `Sb-Position` = the event's position, and stores the new position after JetStream acked. A
crash in between republishes a few events, which JetStream drops as duplicates of their ids. One
relay is active at a time (an advisory lock); others stand by.
"""

from __future__ import annotations

import asyncio

import msgspec
from eventsourcing.persistence import Tracking

from events.base import DomainEvent
from services.logs import get_logger

log = get_logger(__name__)

SCHEMA = "SELECT 1"  # the relay keeps its position in the event store's tracking table
TRACKING_NAME = "relay:sb-events"
_LOCK_KEY = 0x5B_72656C6179  # "sb relay"
_encode = msgspec.json.Encoder().encode


class PublishedEvent(msgspec.Struct, kw_only=True):
    """The body of a message on SB_EVENTS: the event's fields, plus where it stands in the log."""

    type: str
    version: int
    position: int
    redacted: bool
    event: dict


def event_message(position: int, event: DomainEvent, redacted: bool) -> tuple[str, str, bytes]:
    aggregate, event_type = event.NAME.split(".", 1)
    body = _encode(PublishedEvent(type=event.NAME, version=type(event).VERSION, position=position,
                                  redacted=redacted, event=msgspec.to_builtins(event)))
    return aggregate, event_type, body


async def relay_once(sb, batch: int = 1000) -> int:
    store = sb.open_store()
    recorder = store.recorder
    position = await asyncio.to_thread(recorder.max_tracking_id, TRACKING_NAME) or 0
    items = await asyncio.to_thread(store.read, position, batch)
    if not items:
        return 0
    acks = []
    for pos, event, redacted in items:
        aggregate, event_type, body = event_message(pos, event, redacted)
        acks.append(asyncio.ensure_future(sb.js.publish(
            sb.names.event_subject(aggregate, event_type), body,
            headers={"Nats-Msg-Id": str(event.id), "Sb-Position": str(pos)})))
    await asyncio.gather(*acks)
    await asyncio.to_thread(recorder.insert_tracking, Tracking(TRACKING_NAME, items[-1][0]))
    return len(items)


async def run_relay(sb) -> None:
    store = sb.open_store()
    while not sb.stop_event.is_set():
        try:
            with store.datastore.get_connection() as lock_conn:
                got = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
                if not list(got.values())[0]:
                    await asyncio.sleep(1.0)
                    continue
                try:
                    log.info("relay_active")
                    while not sb.stop_event.is_set():
                        if not await relay_once(sb):
                            await asyncio.sleep(0.05)
                finally:
                    lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 — survive NATS or PostgreSQL restarts
            log.exception("relay_error")
            await asyncio.sleep(1.0)


async def start_relay(sb) -> None:
    from services.relay.outbound import start_outbound  # noqa: PLC0415

    sb.tasks.append(asyncio.create_task(run_relay(sb), name="relay"))
    await start_outbound(sb)
