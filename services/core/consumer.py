"""The core's JetStream consumer: a FastStream durable pull subscriber, in batches, acked by hand.

Ack policy, on purpose: a batch is acked only after its PostgreSQL transaction committed. A crash
before that means redelivery, which the processor recognises (nothing twice). An interaction that
cannot be decoded, or that the domain rejects, is dead-lettered at once with its reason; one that
keeps failing for other reasons is dead-lettered after `max_deliveries`.
"""

from __future__ import annotations

import asyncio

import msgspec
import structlog
from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsMessage, NatsRouter, PullSub
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy

from events.interactions import INTERACTION_DECODER, Interaction
from services.core.processor import CoreProcessor
from services.logs import get_logger
from services.streams import Names

log = get_logger(__name__)

DURABLE = "sb-core"
# Short enough that messages stranded by a lost connection (a NATS node died with them in flight)
# come back quickly; a batch that takes longer keeps its messages with in-progress heartbeats.
ACK_WAIT = 15.0
HEARTBEAT = 5.0


async def dead_letter(js, names: Names, msg: Msg, reason: str) -> None:
    headers = {"Sb-Reason": reason[:500], "Sb-Original-Subject": msg.subject,
               "Sb-Original-Sequence": str(msg.metadata.sequence.stream)}
    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
    if msg_id:
        headers["Nats-Msg-Id"] = f"dl:{msg_id}"
    await js.publish(names.deadletter_subject("interactions"), msg.data, headers=headers)
    await msg.term()


async def _keep_in_progress(messages: list[Msg]) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT)
        for m in messages:
            try:
                await m.in_progress()
            except Exception:  # noqa: BLE001 — a lost connection: the redelivery will be deduplicated
                return


def build_core_router(processor: CoreProcessor, names: Names, js_getter, *, batch_size: int = 500,
                      max_deliveries: int = 5) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(
        names.subject("sb.interactions.>"),
        stream=JStream(names.interactions, declare=False),
        durable=DURABLE,
        config=ConsumerConfig(ack_policy=JsAckPolicy.EXPLICIT, ack_wait=ACK_WAIT, max_ack_pending=20_000,
                              max_deliver=max_deliveries + 1),
        pull_sub=PullSub(batch_size=batch_size, timeout=0.05, batch=True),
        ack_policy=AckPolicy.MANUAL,
        title="core: interactions → customer and case events",
        description="Normalized interactions from every channel, recorded once on the customer aggregate.",
    )
    async def record_interactions(msg: NatsMessage) -> None:
        raw: list[Msg] = msg.raw_message
        js = js_getter()
        items: list[tuple[Interaction, int]] = []
        by_id: dict = {}
        for m in raw:
            try:
                interaction = INTERACTION_DECODER.decode(m.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("interaction_undecodable", subject=m.subject, seq=m.metadata.sequence.stream)
                await dead_letter(js, names, m, f"undecodable: {exc}")
                continue
            items.append((interaction, m.metadata.sequence.stream))
            by_id.setdefault(interaction.id, []).append(m)
        if not items:
            return
        heartbeat = asyncio.create_task(_keep_in_progress([m for ms in by_id.values() for m in ms]))
        try:
            outcome = await asyncio.to_thread(processor.process, items)
        except Exception:
            log.exception("core_batch_failed", size=len(items))
            for ms in by_id.values():
                for m in ms:
                    if m.metadata.num_delivered >= max_deliveries:
                        await dead_letter(js, names, m, "failed repeatedly; see core logs for the error")
                    else:
                        await m.nak(delay=min(2 ** m.metadata.num_delivered, 30))
            return
        finally:
            heartbeat.cancel()
        for interaction_id, reason in outcome.poison.items():
            log.warning("interaction_dead_lettered", correlation_id=str(interaction_id), reason=reason[:200])
            for m in by_id.pop(interaction_id, []):
                await dead_letter(js, names, m, reason)
        for interaction_id in outcome.recorded:
            structlog.contextvars.bind_contextvars(correlation_id=str(interaction_id))
            log.info("interaction_recorded")
        structlog.contextvars.unbind_contextvars("correlation_id")
        log.info("core_batch_committed", recorded=len(outcome.recorded), duplicates=len(outcome.duplicates),
                 events=outcome.events)
        for ms in by_id.values():
            for m in ms:
                await m.ack()

    return router
