"""The core's consumer on real NATS and PostgreSQL: poison and failing messages are dead-lettered with
their reason, the rest of their batch is recorded, and a re-drive after the fix records them once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import nats
import psycopg
import pytest

from events.interactions import ENCODER, Identity, Interaction, interaction_id
from services.core.consumer import start_core_consumer
from services.core.processor import CoreProcessor
from services.domain.routing import new_case_id
from services.platform.deadletters import list_dead_letters, redrive
from services.platform.streams import ensure_streams

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def sms(phone: str, text: str = "hello", **fields) -> Interaction:
    provider_id = uuid.uuid4().hex
    return Interaction(
        id=interaction_id("sms", provider_id),
        channel="sms",
        direction="inbound",
        occurred_at=T0,
        identities=[Identity("phone", phone)],
        text=text,
        provider_message_id=provider_id,
        **fields,
    )


def recorded(database_url: str) -> set[uuid.UUID]:
    with psycopg.connect(database_url) as conn:
        return {r[0] for r in conn.execute("SELECT interaction_id FROM sb_processed")}


async def eventually(predicate, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def core(settings, names, nats_url, store):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, names, 3600)
    processor = CoreProcessor(store)
    consumer = await start_core_consumer(nc, js, processor, names, max_deliveries=2, ack_wait=10)

    async def publish(subject_of: Interaction | None, body: bytes | None = None, msg_id: str | None = None) -> None:
        i = subject_of
        subject = (
            names.interaction_subject(i.channel, i.direction) if i else names.interaction_subject("sms", "inbound")
        )
        await js.publish(
            subject, body if body is not None else ENCODER.encode(i), headers={"Nats-Msg-Id": msg_id or str(i.id)}
        )

    yield processor, publish
    await consumer.stop()
    await nc.close()


async def test_poison_is_dead_lettered_with_its_reason_and_redriven_once_fixed(core, settings, names, database_url):
    processor, publish = core
    good = [sms(f"+4477009003{n:02d}") for n in range(4)]
    opening = sms("+447700900399", "my parcel?")
    case_id = new_case_id(opening.id)  # the case `opening` will open
    # An agent's reply on a case the core has not seen yet: it cannot be recorded now.
    early_reply = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="outbound",
        occurred_at=T0,
        text="on its way",
        case_id=case_id,
        provider_message_id="SM-early",
    )
    bad_phone = sms("not a number")
    await publish(good[0])
    await publish(None, b"{not json", msg_id="garbage-1")
    await publish(good[1])
    await publish(early_reply)
    await publish(bad_phone)
    await publish(good[2])
    await publish(good[3])

    async def three_dead_letters():
        letters = await list_dead_letters(settings, names)
        return letters if len(letters) == 3 else None

    letters = await eventually(three_dead_letters)
    assert recorded(database_url) == {g.id for g in good}  # the rest of the batch was recorded
    reasons = {letter.headers["Sb-Reason"] for letter in letters}
    assert any(r.startswith("undecodable") for r in reasons)
    assert any("invalid verified phone" in r for r in reasons)
    assert any(f"case {case_id} not found" in r for r in reasons)
    assert all(
        letter.subject == names.interaction_subject("sms", "inbound") or letter.subject.endswith("outbound")
        for letter in letters
    )

    # The fix: the customer's message that opens the case arrives. Then the reply is re-driven.
    await publish(opening)
    await eventually(lambda: asyncio.sleep(0, result=opening.id in recorded(database_url)))
    reply_letter = next(letter for letter in letters if "not found" in letter.reason)
    assert await redrive(settings, {reply_letter.seq}, names) == 1
    await eventually(lambda: asyncio.sleep(0, result=early_reply.id in recorded(database_url)))
    remaining = await list_dead_letters(settings, names)
    assert sorted(letter.seq for letter in remaining) == sorted(
        letter.seq for letter in letters if letter is not reply_letter
    )
    # Re-driving it again (say, by mistake) records nothing twice.
    await redrive(settings, None, names)
    await asyncio.sleep(0.5)
    with psycopg.connect(database_url) as conn:
        counts = conn.execute("SELECT count(*) FROM sb_events WHERE topic = 'customer.InteractionRecorded'").fetchone()
    assert counts[0] == len(good) + 2


async def test_a_message_that_keeps_failing_is_dead_lettered_after_n_deliveries_then_redriven(
    core, settings, names, database_url, monkeypatch
):
    processor, publish = core
    flaky, fine = sms("+447700900401"), sms("+447700900402")
    handle = processor._handle

    def broken(batch, interaction):
        if interaction.id == flaky.id:
            raise RuntimeError("downstream bug")
        return handle(batch, interaction)

    monkeypatch.setattr(processor, "_handle", broken)
    await publish(flaky)
    await publish(fine)

    async def dead():
        letters = await list_dead_letters(settings, names)
        return letters or None

    [letter] = await eventually(dead)
    assert letter.deliveries == 2 and "failed 2 times: RuntimeError: downstream bug" in letter.reason
    assert recorded(database_url) == {fine.id}
    monkeypatch.setattr(processor, "_handle", handle)  # the bug is fixed
    assert await redrive(settings, None, names) == 1
    await eventually(lambda: asyncio.sleep(0, result=recorded(database_url) == {fine.id, flaky.id}))
    assert await list_dead_letters(settings, names) == []
