"""The least an ingest path must do, against raw JetStream consume+ack, on this machine (issue 13).

`python -m tests.benchmarks._ingest_floor [RUNS] [EVENTS]` publishes the ingest bench's backlog (the
same `Traffic`, 60,000 interactions) and, RUNS times (default 2), alternately:

- **raw**: the ingest bench's baseline (`ingest.raw_nats`): pull-consumed and acked, nothing else;
- **floor**: the same messages pull-consumed in batches of 1,000, and for each one only what the
  product cannot skip: the message decoded; EVENTS events (default 1) sealed, each with the personal
  fields (text, identities, profile) encrypted with the customer's AES-GCM key and bound to the
  event, and linked into the hash chain (`recorder.link`); written by binary COPY into the real
  `sb_events`; the interaction's row written by binary COPY into the real `proj_timeline` (its
  indexes, its search words); committed, then acked. Fetching the next batch overlaps the
  database's work on this one.

EVENTS=3 is about the volume the real core writes for this traffic: 2.8 events per interaction (a
customer's `InteractionRecorded` and a case's `Opened` or `MessageAdded` for every message, plus
registrations, identities and profiles of new people).

What the floor leaves out, every omission in its favour: identity resolution (the customer is a
hash of the first identity's value, no lookup), deduplication, the aggregates' logic (with EVENTS > 1
it writes copies of the one event under the next versions), the key store, every read model but the
timeline, the live feed, and the core/projector split (one transaction writes both, nothing is read
back). It runs in one interpreter, so it is also the floor of the one-process `up` shape; two
processes could share the work out further.

It answers one question: how close to raw JetStream an ingest path on this stack (nats-py, psycopg,
PostgreSQL) can come on this machine. A tool, not a benchmark: the floor is not the product.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import nats
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from events.interactions import ENCODER, Interaction
from services.bootstrap import Switchboard
from services.platform.eventstore.recorder import GENESIS, link
from services.platform.logs import configure_logging
from services.platform.settings import ensure_secrets, load_settings
from tests.benchmarks._servers import servers
from tests.benchmarks.ingest import BACKLOG, Traffic, raw_nats

BATCH = 1000
TOPIC = "floor.InteractionRecorded"
_EVENT_COLUMNS = "notification_id, originator_id, originator_version, topic, state, chain"
_EVENT_TYPES = ("int8", "uuid", "int8", "text", "bytea", "bytea")
_TIMELINE_COLUMNS = (
    "interaction_id, customer_id, origin_customer_id, position, occurred_at, channel, direction, kind, text, case_id"
)
_TIMELINE_TYPES = ("uuid", "uuid", "uuid", "int8", "timestamptz", "text", "text", "text", "text", "uuid")

_decode = msgspec.json.Decoder(Interaction).decode
_json = msgspec.json.Encoder().encode
_pack = msgspec.msgpack.Encoder().encode


class _Floor:
    def __init__(self, position: int, events: int) -> None:
        self.events = events
        self.keys: dict[uuid.UUID, AESGCM] = {}
        self.versions: dict[uuid.UUID, int] = {}
        self.chain_key = os.urandom(32)
        self.previous = GENESIS
        self.position = position

    def rows(self, interaction: Interaction) -> tuple[list[tuple], tuple]:
        first = interaction.identities[0].value if interaction.identities else str(interaction.id)
        customer = uuid.uuid5(uuid.NAMESPACE_URL, first)
        aead = self.keys.get(customer)
        if aead is None:
            aead = self.keys[customer] = AESGCM(AESGCM.generate_key(bit_length=256))
        clear = {
            "interaction_id": interaction.id,
            "channel": interaction.channel,
            "direction": interaction.direction,
            "kind": interaction.kind,
            "occurred_at": interaction.occurred_at,
        }
        personal = _pack(
            {"text": interaction.text, "identities": interaction.identities, "profile": interaction.profile}
        )
        events = []
        for _ in range(self.events):
            version = self.versions[customer] = self.versions.get(customer, 0) + 1
            self.position += 1
            nonce = os.urandom(12)
            sealed = nonce + aead.encrypt(nonce, personal, b"%s|%d|%s" % (customer.bytes, version, TOPIC.encode()))
            state = _json({"v": 1, "d": clear, "p": base64.b64encode(sealed).decode()})
            self.previous = link(self.chain_key, self.previous, self.position, customer, version, TOPIC, state)
            events.append((self.position, customer, version, TOPIC, state, self.previous))
        timeline = (
            interaction.id,
            customer,
            customer,
            self.position,
            interaction.occurred_at,
            interaction.channel,
            interaction.direction,
            interaction.kind,
            interaction.text,
            interaction.case_id,
        )
        return events, timeline


async def floor(nats_url: str, database_url: str, bodies: list[bytes], run: int, events: int) -> float:
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=60)
    stream, subject = f"BENCH_FLOOR{run}", f"benchfloor{run}.interactions"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"benchfloor{run}.>"]))
    for start in range(0, len(bodies), 1000):
        await asyncio.gather(*(js.publish(subject, body) for body in bodies[start : start + 1000]))
    sub = await js.pull_subscribe(
        subject,
        durable="floor",
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000),
    )
    conn = await psycopg.AsyncConnection.connect(database_url)
    await conn.execute("TRUNCATE sb_events, proj_timeline")  # each run on empty tables (the same ids)
    await conn.commit()
    state = _Floor(0, events)
    queue: asyncio.Queue = asyncio.Queue(maxsize=2)

    async def consume() -> None:
        got = 0
        while got < len(bodies):
            msgs = await sub.fetch(BATCH, timeout=5)
            built = [state.rows(_decode(m.data)) for m in msgs]
            await queue.put((msgs, built))
            got += len(msgs)
        await queue.put(None)

    async def write() -> int:
        written = 0
        while (item := await queue.get()) is not None:
            msgs, built = item
            async with conn.cursor() as curs:
                async with curs.copy(f"COPY sb_events ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_EVENT_TYPES)
                    for events, _ in built:
                        for event in events:
                            await copy.write_row(event)
                async with curs.copy(f"COPY proj_timeline ({_TIMELINE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_TIMELINE_TYPES)
                    for _, row in built:
                        await copy.write_row(row)
            await conn.commit()
            for m in msgs:
                await m.ack()
            written += len(msgs)
        return written

    t0 = time.perf_counter()
    _, written = await asyncio.gather(consume(), write())
    await nc.flush()
    rate = written / (time.perf_counter() - t0)
    print(f"   floor: {written:,} interactions, {events} event(s) each, {rate:,.0f} interactions/s", flush=True)
    await conn.close()
    await js.delete_stream(stream)
    await nc.close()
    return rate


async def run(runs: int, events: int) -> None:
    traffic = Traffic()
    bodies = [ENCODER.encode(traffic.next()) for _ in range(BACKLOG)]
    with servers() as (nats_url, database_url), tempfile.TemporaryDirectory() as data_dir:
        settings = ensure_secrets(
            load_settings(environ={}, data_dir=Path(data_dir), nats_url=nats_url, database_url=database_url)
        )
        Switchboard(settings).create_schema()
        for n in range(1, runs + 1):
            raw = await raw_nats(nats_url, bodies)
            low = await floor(nats_url, database_url, bodies, n, events)
            print(
                f"floor: events_per_interaction={events} interactions_per_s={low:.0f} raw_nats_per_s={raw:.0f} "
                f"floor_vs_raw={low / raw:.2f}x",
                flush=True,
            )


def main(argv: list[str]) -> None:
    configure_logging("console", "warning")
    asyncio.run(run(int(argv[0]) if argv else 2, int(argv[1]) if len(argv) > 1 else 1))


if __name__ == "__main__":
    main(sys.argv[1:])
