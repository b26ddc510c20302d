"""Room in SB_INTERACTIONS: what the core has processed is purged once the stream is half full.

SB_INTERACTIONS discards NEW (services.platform.streams): when full it refuses publishes and the
channels answer 503 with Retry-After, so an interaction nobody processed is never dropped. Its
retention is by limits, so acked messages stay there until they age out; without this a busy stream
would fill with processed messages and refuse traffic for days. Every message below the core
consumer's ack floor is settled (recorded in the event store, or copied to SB_DEADLETTER), so purging
them loses nothing: the event log is the record, and a provider's late retry is recognised by the
core's processed-interaction records.
"""

from __future__ import annotations

import asyncio
import threading

from nats.js.errors import NotFoundError

from services.core.consumer import DURABLE
from services.platform.logs import get_logger
from services.platform.streams import Names

log = get_logger(__name__)

# Purge once the stream holds more than this share of its max_bytes.
PURGE_ABOVE = 0.5
CHECK_EVERY_SECONDS = 5.0


async def purge_processed(js, names: Names, *, above: float = PURGE_ABOVE) -> int:
    """Purges the messages the core acknowledged when SB_INTERACTIONS is over `above` of its
    max_bytes (any fill when `above` is 0); returns how many went."""
    info = await js.stream_info(names.interactions)
    max_bytes = info.config.max_bytes or -1
    if max_bytes <= 0 or info.state.bytes <= max_bytes * above or not info.state.messages:
        return 0
    try:
        consumer = await js.consumer_info(names.interactions, DURABLE)
    except NotFoundError:
        return 0  # no core ever ran: nothing is processed
    floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
    if not floor or floor < info.state.first_seq:
        return 0
    before = info.state.messages
    await js.purge_stream(names.interactions, seq=floor + 1)  # everything below floor + 1
    after = (await js.stream_info(names.interactions)).state.messages
    log.info("interactions_purged_processed", purged=before - after, up_to_seq=floor)
    return before - after


async def make_room_forever(js, names: Names, stop: threading.Event, every: float = CHECK_EVERY_SECONDS) -> None:
    """The core role's loop around `purge_processed`; a failing round is logged and tried again."""
    while not stop.is_set():
        try:
            await purge_processed(js, names)
        except Exception as exc:  # noqa: BLE001 — NATS away for a while: next round
            log.warning("interactions_purge_failed", error=type(exc).__name__)
        await asyncio.sleep(every)
