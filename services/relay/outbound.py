"""Agents' replies out to the customer, through the case's own channel and thread.

Consumes `sb.events.case.ReplyRequested` from SB_EVENTS (durable, explicit acks). For each reply it
asks the channel's sender to deliver, then publishes the outbound interaction (id derived from the
reply id, so a retried delivery is recorded once) for the core to put on the timeline. A provider
outage is retried with backoff (the message is nak'ed with a delay, never dropped); a refusal, or an
outage that outlasts every retry, becomes a ReplyFailed event through a status interaction.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from uuid import UUID

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig

from channels.errors import ProviderError
from channels.outbound import Delivery, Sender, channel_senders
from channels.outbound.registry import RESEND_SAFE, provider_lookup
from events.customer import InteractionRecorded
from events.interactions import MACHINE_KINDS, Interaction
from services.core.commands import load_case
from services.domain.customer import Customer
from services.domain.merges import survivor_of
from services.platform.logs import get_logger
from services.relay.ledger import OutboundLedger, deliver

log = get_logger(__name__)

DURABLE = "sb-outbound"
MAX_ATTEMPTS = 8
_REPLY_NS = uuid.UUID("5e7d9c1b-2a3f-4b6c-8d9e-0f1a2b3c4d5e")


def outbound_interaction_id(reply_id: UUID) -> UUID:
    return uuid.uuid5(_REPLY_NS, str(reply_id))


def build_senders(sb) -> dict[str, Sender]:
    return channel_senders(sb.settings, sb.js, sb.names)


def _customer_and_thread(store, customer_id: UUID, case_id: UUID) -> tuple[Customer, dict]:
    """The customer (the survivor, after merges) and what the case's last inbound message recorded
    about its thread: its provider id and meta (an email's Message-ID, References, Subject and
    sender), which a reply needs to land in the same conversation."""
    last: InteractionRecorded | None = None
    customers: dict[UUID, Customer] = {}

    def survivor(customer_id: UUID) -> UUID | None:
        nonlocal last
        events = store.load(customer_id)
        for event in events:  # stream order; a survivor's events come after the absorbed one's
            if (
                isinstance(event, InteractionRecorded)
                and event.case_id == case_id
                and event.direction == "inbound"
                and event.kind not in MACHINE_KINDS
                and event.kind != "status"
            ):
                last = event
        customers[customer_id] = Customer.replay(customer_id, events)
        return customers[customer_id].survivor_id

    customer = customers[survivor_of(customer_id, survivor)]
    if last is None:
        return customer, {}
    return customer, {**last.meta, "provider_message_id": last.provider_message_id or ""}


def reply_key(reply_id: UUID) -> str:
    return f"reply:{reply_id}"


class OutboundDispatcher:
    def __init__(self, sb, senders: dict[str, Sender], ledger: OutboundLedger | None = None):
        self.sb = sb
        self.senders = senders
        self.ledger = ledger or OutboundLedger(sb.open_store(), sb.database.conninfo)

    async def delivery_for(self, event: dict) -> Delivery:
        store = self.sb.open_store()
        case_id = UUID(event["stream_id"])
        case = await asyncio.to_thread(load_case, store, case_id)
        customer, thread_meta = await asyncio.to_thread(_customer_and_thread, store, case.customer_id, case_id)
        return Delivery(
            reply_id=UUID(event["reply_id"]),
            case_id=case_id,
            customer_id=customer.id,
            channel=case.channel,
            thread_key=case.thread_key,
            text=event["text"],
            identities=frozenset(customer.identities),
            thread_meta=thread_meta,
        )

    async def handle(self, msg) -> None:
        body = msgspec.json.decode(msg.data)
        event = body["event"]
        if body.get("redacted"):
            await msg.ack()  # the customer was erased: there is nobody to send to
            return
        delivery = await self.delivery_for(event)
        sender = self.senders.get(delivery.channel)
        attempt = msg.metadata.num_delivered
        key = reply_key(delivery.reply_id)
        if sender is None:
            reason = f"outbound {delivery.channel} is not configured"
            await asyncio.to_thread(self.ledger.give_up, key, delivery.channel, reason)
            await self._publish(delivery, None, failed=reason)
            await msg.ack()
            return
        result = await deliver(
            self.ledger,
            key,
            delivery.channel,
            lambda: sender(delivery),
            lookup=provider_lookup(self.sb.settings, delivery),
            resend_safe=delivery.channel in RESEND_SAFE,
        )
        if result.status == "retry":
            exc = result.error or ProviderError(True, "not settled")
            if attempt < MAX_ATTEMPTS:
                delay = exc.retry_after or min(self.sb.settings.outbound_retry_base_seconds * 2**attempt, 60)
                log.warning(
                    "reply_delivery_retry",
                    reply_id=str(delivery.reply_id),
                    attempt=attempt,
                    delay=delay,
                    reason=exc.detail,
                )
                await msg.nak(delay=delay)
                return
            reason = await asyncio.to_thread(self.ledger.give_up, key, delivery.channel, exc.detail)
            await self._publish(delivery, None, failed=reason)
            await msg.ack()
            return
        if result.status == "failed":
            await self._publish(delivery, None, failed=result.reason or "failed")
        else:
            await self._publish(delivery, result.provider_message_id)
            await asyncio.to_thread(self.ledger.forget_provider_id, key)
        await msg.ack()

    async def _publish(self, d: Delivery, provider_id: str | None, failed: str | None = None) -> None:
        now = datetime.now(UTC)
        if failed is None:
            interaction = Interaction(
                id=outbound_interaction_id(d.reply_id),
                channel=d.channel,
                direction="outbound",
                occurred_at=now,
                text=d.text,
                case_id=d.case_id,
                reply_id=d.reply_id,
                provider_message_id=provider_id,
                thread_key=d.thread_key,
            )
        else:
            interaction = Interaction(
                id=uuid.uuid5(_REPLY_NS, f"{d.reply_id}:failed"),
                channel=d.channel,
                direction="outbound",
                occurred_at=now,
                kind="status",
                status="failed",
                case_id=d.case_id,
                reply_id=d.reply_id,
                meta={"error": failed[:300]},
            )
        await self.sb.js.publish(
            self.sb.names.interaction_subject(d.channel, "outbound"),
            msgspec.json.encode(interaction),
            headers={"Nats-Msg-Id": str(interaction.id)},
        )
        log.info(
            "reply_delivered" if failed is None else "reply_failed",
            reply_id=str(d.reply_id),
            case_id=str(d.case_id),
            channel=d.channel,
        )

    async def run(self) -> None:
        js = self.sb.js
        names = self.sb.names
        sub = await js.pull_subscribe(
            names.event_subject("case", "ReplyRequested"),
            durable=DURABLE,
            stream=names.events,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.sb.settings.outbound_ack_wait_seconds,
                max_deliver=MAX_ATTEMPTS + 2,
            ),
        )
        await asyncio.to_thread(self.ledger.hold_owner_lock)
        try:
            await self._pull(sub)
        finally:
            await asyncio.to_thread(self.ledger.release_owner_lock)

    async def _pull(self, sub) -> None:
        while not self.sb.stop_event.is_set():
            try:
                msgs = await sub.fetch(20, timeout=1.0)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 — reconnects happen; keep going
                log.exception("outbound_fetch_failed")
                await asyncio.sleep(1.0)
                continue
            await asyncio.gather(*(self._safe(m) for m in msgs))

    async def _safe(self, msg) -> None:
        try:
            await self.handle(msg)
        except Exception:  # noqa: BLE001
            log.exception("outbound_failed")
            await msg.nak(delay=5.0)


async def start_outbound(sb) -> None:
    dispatcher = OutboundDispatcher(sb, build_senders(sb))
    sb.tasks.append(asyncio.create_task(dispatcher.run(), name="outbound"))
