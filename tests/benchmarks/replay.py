"""`switchboard replay` throughput: stored events → JSON Lines, personal fields decrypted.

Writes a realistic log (≥ 200,000 events of several thousand customers: registrations, identities,
profiles, messages on every channel, cases, replies, notes) through the real EventStore transaction
path in big batches, then times, in the same run and on the same rows:

- `replay_events` to /dev/null: every row read, its personal fields decrypted with the customer's
  key, one JSON line written;
- a plain SELECT of the same rows (psycopg, all columns, a server-side binary cursor as replay's,
  the same batch size): what reading alone costs, the ceiling replay can approach.

Replay loads every key itself (one query per batch for the customers it has not met yet), as a
fresh `switchboard replay` process does.

The last line is the summary: `replay: events_per_s=N raw_select_per_s=N`.
"""

from __future__ import annotations

import base64
import gc
import os
import random
import secrets
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg

from events.base import DomainEvent
from events.interactions import CHANNELS, Attachment, Interaction
from services.bootstrap import Switchboard
from services.domain.case import Case
from services.domain.customer import Customer
from services.platform.settings import Settings
from services.replay import replay_events
from tests.benchmarks._eventlog import WORDS
from tests.benchmarks._servers import servers

CUSTOMERS = 4_000
TARGET_EVENTS = 200_000
WRITE_BATCH = 10_000
READ_BATCH = 5_000


def _text(rng: random.Random, low: int = 4, high: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _customer_events(rng: random.Random, index: int, start: datetime) -> list[DomainEvent]:
    """One customer's life: identities, profile, a few conversations with replies and notes."""
    at = start + timedelta(seconds=index)
    customer = Customer.register(uuid.uuid4(), at)
    customer.link("email", f"customer{index}@example.org", at)
    customer.link("phone", f"+4477009{index:05d}", at)
    customer.update_profile({"name": f"Customer {index}", "locale": "en-GB"}, True, at)
    cases: list[Case] = []
    per_customer = TARGET_EVENTS // CUSTOMERS + 1
    while len(customer.pending) + sum(len(c.pending) for c in cases) < per_customer:
        at += timedelta(minutes=rng.randint(1, 600))
        channel = rng.choice(CHANNELS)
        case = cases[-1] if cases and rng.random() < 0.7 and cases[-1].status != "resolved" else None
        if case is None:
            case = Case.open(uuid.uuid4(), customer.id, channel, f"{channel}:{uuid.uuid4()}", at)
            cases.append(case)
        interaction = Interaction(
            id=uuid.uuid4(),
            channel=case.channel,
            direction="inbound",
            occurred_at=at,
            text=_text(rng),
            provider_message_id=secrets.token_hex(8),
            thread_key=case.thread_key,
            attachments=[
                Attachment(
                    name="photo.jpg",
                    content_type="image/jpeg",
                    size=48213,
                    sha256=secrets.token_hex(32),
                    ref=f"blob:{uuid.uuid4()}",
                )
            ]
            if rng.random() < 0.1
            else [],
            meta={"message_id": f"<{secrets.token_hex(6)}@example.org>"} if case.channel == "email" else {},
        )
        case.add_message(interaction.id, "inbound", case.channel, at)
        customer.record(interaction, case.id, case.thread_key)
        roll = rng.random()
        if roll < 0.35:
            case.request_reply(uuid.uuid4(), _text(rng, 6, 30), "agent-7", at + timedelta(minutes=3))
        elif roll < 0.45:
            case.assign("agent-7", "supervisor-1", at)
        elif roll < 0.50:
            case.add_note(uuid.uuid4(), _text(rng, 3, 12), "agent-7", at)
        elif roll < 0.58:
            case.resolve("agent-7", at + timedelta(hours=1))
    streams = [customer.collect(), *(c.collect() for c in cases)]
    # Interleave the streams so the log looks like live traffic, not one customer after another.
    ordered: list[DomainEvent] = []
    while any(streams):
        for stream in streams:
            if stream:
                ordered.append(stream.pop(0))
    return ordered


def _interleaved(customers: list[list[DomainEvent]]) -> list[DomainEvent]:
    """200 customers talk at a time, their events interleaved; then the next 200."""
    out: list[DomainEvent] = []
    for first in range(0, len(customers), 200):
        group = [deque(events) for events in customers[first : first + 200]]
        while group:
            for queue in group:
                out.append(queue.popleft())
            group = [queue for queue in group if queue]
    return out


def _write(store, events: list[DomainEvent]) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(events), WRITE_BATCH):
        with store.transaction() as tx:
            tx.append(events[start : start + WRITE_BATCH])
    return time.perf_counter() - t0


def _raw_select(database_url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    with psycopg.connect(database_url) as conn, conn.cursor(name="bench_raw", binary=True) as curs:
        curs.itersize = READ_BATCH
        curs.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state, recorded_at "
            "FROM sb_events ORDER BY notification_id"
        )
        while rows := curs.fetchmany(READ_BATCH):
            n += len(rows)
    return n, time.perf_counter() - t0


def _replay(store, database_url: str) -> tuple[int, float]:
    with open(os.devnull, "wb") as devnull:
        t0 = time.perf_counter()
        n = replay_events(store, devnull, batch=READ_BATCH, conninfo=database_url)
        return n, time.perf_counter() - t0


def main() -> str:
    rng = random.Random(20240601)
    start = datetime(2024, 6, 1, tzinfo=UTC)
    t0 = time.perf_counter()
    events = _interleaved([_customer_events(rng, i, start) for i in range(CUSTOMERS)])
    print(
        f"   generated {len(events):,} events of {CUSTOMERS:,} customers in {time.perf_counter() - t0:.1f}s", flush=True
    )
    with servers() as (nats_url, database_url), TemporaryDirectory(prefix="sb-bench-replay-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            nats_url=nats_url,
            database_url=database_url,
            master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        )
        sb = Switchboard(settings)
        sb.create_schema()
        store = sb.open_store()
        try:
            elapsed = _write(store, events)
            written = len(events)
            print(f"   wrote {written:,} events in {elapsed:.1f}s ({written / elapsed:,.0f} events/s)", flush=True)
            # What a `switchboard replay` process holds: not 200,000 events' worth of objects for the
            # garbage collector to walk through again and again.
            del events
            gc.collect()
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE sb_events")
            _raw_select(database_url)  # warm the cache: both timed runs read from memory
            replayed, replay_s = _replay(store, database_url)
            selected, select_s = _raw_select(database_url)
        finally:
            store.datastore.close()
    assert replayed == selected == written >= TARGET_EVENTS, (replayed, selected, written)
    replay_rate, select_rate = replayed / replay_s, selected / select_s
    print(f"   replay to /dev/null (decrypting): {replayed:,} events in {replay_s:.2f}s = {replay_rate:,.0f} events/s")
    print(f"   plain SELECT of the same rows:    {selected:,} rows in {select_s:.2f}s = {select_rate:,.0f} rows/s")
    return f"replay: events_per_s={replay_rate:.0f} raw_select_per_s={select_rate:.0f}"


if __name__ == "__main__":
    print(main())
