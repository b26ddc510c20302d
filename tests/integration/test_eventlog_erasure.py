"""Erasure that could not reach NATS is finished by running it again.

The keys go first (that is the erasure); what only they could tell (the chat sessions to purge) is
kept in `sb_erasures` until the NATS clean-up succeeded, so a second run still finds the session.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import nats
import psycopg
import pytest
from nats.js.errors import KeyNotFoundError

from events.interactions import Identity, Interaction
from services.bootstrap import Switchboard
from services.core.processor import CoreProcessor
from services.gdpr import erase_customer
from services.platform.embedded import free_port
from services.platform.streams import ensure_streams

pytestmark = pytest.mark.integration


async def test_an_erasure_interrupted_before_nats_completes_on_the_next_run(settings, names) -> None:
    session_id = str(uuid.uuid4())
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, names, settings.nats_retention_seconds)
        kv = await js.key_value(names.chat_sessions_bucket)
        await kv.put(session_id, msgspec.json.encode({"session_id": session_id, "name": "Ada Lovelace"}))

        offline = Switchboard(settings.with_(nats_url=f"nats://127.0.0.1:{free_port()}"), names)
        offline.create_schema()
        store = offline.open_store()
        interaction = Interaction(
            id=uuid.uuid4(),
            channel="chat",
            direction="inbound",
            occurred_at=datetime.now(UTC),
            identities=[Identity("chat", session_id), Identity("phone", "+447700900777")],
            text="hello",
            thread_key=f"chat:{session_id}",
            profile={"name": "Ada Lovelace"},
        )
        outcome = CoreProcessor(store).process([(interaction, None)])
        (customer_id,) = {
            e.customer_id
            for e in store.load(uuid.uuid5(uuid.UUID("3d0c5f3e-6b0a-4a8e-8f55-0d9b7f0c2e10"), str(interaction.id)))
        }
        assert outcome.recorded == [interaction.id]

        first = await _in_thread(erase_customer, offline, customer_id, "test", datetime.now(UTC), relay_wait=0)
        assert first.complete is False and "run the erasure again" in first.warnings[0]
        # Erased already: the personal fields read as redacted, for good.
        assert {e.value for e in store.load(customer_id) if e.NAME == "customer.IdentityLinked"} == {"[erased]"}
        with psycopg.connect(settings.database_url) as conn:
            pending = conn.execute("SELECT chat_sessions, cleaned_at FROM sb_erasures").fetchall()
        assert pending == [([session_id], None)]
        assert (await kv.get(session_id)).value  # still there: NATS was out of reach
        offline.open_store().datastore.close()

        online = Switchboard(settings, names)
        second = await _in_thread(erase_customer, online, customer_id, "test", datetime.now(UTC), relay_wait=0)
        online.open_store().datastore.close()
        assert second.complete is True and second.chat_sessions == 1
        with pytest.raises(KeyNotFoundError):
            await kv.get(session_id)
        with psycopg.connect(settings.database_url) as conn:
            ((sessions, cleaned_at),) = conn.execute("SELECT chat_sessions, cleaned_at FROM sb_erasures").fetchall()
        assert sessions == [] and cleaned_at is not None
    finally:
        await nc.close()


async def _in_thread(fn, *args, **kwargs):
    """`erase_customer` runs its own event loop (it is called from the CLI): not on the test's."""
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(fn, *args, **kwargs)
