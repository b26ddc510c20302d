"""A realistic event log of any size, written straight through the event store in big batches.

Shared by the rebuild benchmark and the rebuild tests. Customers live as the core would have them
live (the real `Customer` and `Case` aggregates decide which events happen): they register, link
and claim identities, write on every channel, get replies (sent, delivered, failed), are assigned,
tagged, noted, prioritised, snoozed, resolved, reopened, rated, and now and then two customers are
merged. A few "heavy" customers (a shop's own test account, a reseller) write thousands of messages
spread over the whole log: the ones whose read-model rows a rebuild touches again and again.

Customers talk `GROUP` at a time with their events interleaved, so the log looks like live traffic;
only the aggregates of the current group (and of the heavy customers) are held in memory, so a log
of millions of events costs no more memory than one of thousands.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import secrets
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from events.base import DomainEvent
from events.interactions import CHANNELS, Attachment, Interaction
from services.domain.case import Case
from services.domain.customer import Customer

WORDS = (
    "order",
    "refund",
    "delivery",
    "parcel",
    "invoice",
    "password",
    "account",
    "broken",
    "thanks",
    "please",
    "when",
    "arrive",
    "tracking",
    "number",
    "help",
    "urgent",
    "again",
    "still",
    "waiting",
    "café",
    "naïve",
)
TAGS = ("vip", "refund", "Billing", "églantine", "late-delivery", "b2b", "Zebra", "àlpha")
GROUP = 200
START = datetime(2024, 6, 1, tzinfo=UTC)


def _text(rng: random.Random, low: int = 4, high: int = 30) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


@dataclass
class Life:
    """One customer's history as it unfolds: `step()` is one more message (and what agents did)."""

    customer: Customer
    budget: int  # events this customer should produce in all
    at: datetime
    case: Case | None = None
    produced: int = 0
    cases: list[Case] = field(default_factory=list)  # cases with events not yet collected

    def collect(self) -> list[DomainEvent]:
        events = self.customer.collect()
        for case in self.cases:
            events.extend(case.collect())
        self.cases = [self.case] if self.case is not None else []
        self.produced += len(events)
        return events

    def step(self, rng: random.Random) -> list[DomainEvent]:
        self.at += timedelta(minutes=rng.randint(1, 600))
        at, customer = self.at, self.customer
        case = self.case
        if case is None or case.status == "resolved" and rng.random() < 0.7:
            channel = rng.choice(CHANNELS)
            message = self._message(rng, channel, None)
            case = Case.open(
                uuid.uuid5(uuid.NAMESPACE_URL, f"case:{message.id}"),
                customer.id,
                channel,
                f"{channel}:{uuid.uuid4()}",
                at,
                interaction_id=message.id,
            )
            self.case = case
            self.cases.append(case)
        else:
            if case.status == "resolved":
                case.reopen("agent-7", at)
            message = self._message(rng, case.channel, case.thread_key)
            case.add_message(message.id, "inbound", case.channel, at)
        customer.record(message, case.id, case.thread_key)
        roll = rng.random()
        if roll < 0.05:
            customer.update_profile(
                {"name": f"Customer {rng.randint(1, 9)}", "locale": rng.choice(("en-GB", "es-ES"))},
                rng.random() < 0.7,
                at,
            )
        elif roll < 0.08:
            customer.claim("email", f"claimed{rng.randint(1, 10**6)}@example.net", at)
        roll = rng.random()
        if roll < 0.30:
            self._reply(rng, case, at)
        elif roll < 0.38:
            case.assign(rng.choice(("agent-7", "agent-9", None)), "supervisor-1", at)
        elif roll < 0.42:
            case.add_note(uuid.uuid4(), _text(rng, 3, 12), "agent-7", at)
        elif roll < 0.45:
            case.tag(rng.sample(TAGS, rng.randint(1, 3)), "agent-7", at)
        elif roll < 0.47:
            case.prioritize(rng.choice(("low", "normal", "high", "urgent")), "agent-7", at)
        elif roll < 0.49:
            case.snooze(at + timedelta(hours=rng.randint(1, 48)), "agent-7", at)
        elif roll < 0.58:
            case.resolve("agent-7", at + timedelta(hours=1))
            if rng.random() < 0.3:
                case.record_csat(rng.randint(1, 5), at + timedelta(hours=2))
        return self.collect()

    def _message(self, rng: random.Random, channel: str, thread_key: str | None) -> Interaction:
        attachments = (
            [
                Attachment(
                    name=f"photo {rng.randint(1, 99)}.jpg",
                    content_type="image/jpeg",
                    size=rng.randint(1000, 90000),
                    sha256=secrets.token_hex(32),
                    ref=f"blob:{uuid.uuid4()}",
                )
            ]
            if rng.random() < 0.08
            else []
        )
        return Interaction(
            id=uuid.uuid4(),
            channel=channel,
            direction="inbound",
            occurred_at=self.at,
            text=_text(rng),
            provider_message_id=secrets.token_hex(8),
            thread_key=thread_key,
            attachments=attachments,
        )

    def _reply(self, rng: random.Random, case: Case, at: datetime) -> None:
        reply_id = uuid.uuid4()
        sent_at = at + timedelta(minutes=rng.randint(1, 30))
        case.request_reply(reply_id, _text(rng, 6, 20), "agent-7", sent_at)
        if rng.random() < 0.8:  # the relay sent it: the outbound message joins the case and the timeline
            out = Interaction(
                id=uuid.uuid4(),
                channel=case.channel,
                direction="outbound",
                occurred_at=sent_at,
                text=_text(rng, 6, 20),
                provider_message_id=secrets.token_hex(8),
                case_id=case.id,
                reply_id=reply_id,
                thread_key=case.thread_key,
            )
            case.add_message(out.id, "outbound", case.channel, sent_at)
            case.reply_sent(reply_id, out.provider_message_id, sent_at)
            self.customer.record(out, case.id, case.thread_key)
            roll = rng.random()
            if roll < 0.5:
                case.reply_delivered(reply_id, sent_at + timedelta(seconds=5))
            elif roll < 0.55:
                case.reply_failed(reply_id, "undelivered", sent_at + timedelta(seconds=5))


def _new_life(rng: random.Random, index: int, budget: int) -> Life:
    at = START + timedelta(seconds=index)
    customer = Customer.register(uuid.uuid5(uuid.NAMESPACE_URL, f"customer:{index}:{rng.random()}"), at)
    customer.link("email", f"customer{index}@example.org", at)
    customer.link("phone", f"+4477{index:08d}", at)
    customer.update_profile({"name": f"Customer {index}", "locale": "en-GB"}, True, at)
    return Life(customer, budget, at)


def events(
    *,
    customers: int,
    target: int,
    heavy: int = 0,
    heavy_events: int = 10_000,
    merge_rate: float = 0.01,
    seed: int = 20240601,
) -> Callable[[], list[DomainEvent] | None]:
    """A source of the log's events, one group of customers at a time (None when done).

    About `target` events in all: `heavy` customers with about `heavy_events` each, spread over the
    whole log, and `customers` others sharing the rest; `merge_rate` of the customers are merged
    into the customer who wrote just before them.
    """
    rng = random.Random(seed)
    per_customer = max(8, (target - heavy * heavy_events) // max(customers, 1))
    heavies = [_new_life(rng, customers + h, heavy_events) for h in range(heavy)]
    groups = iter(range(0, customers, GROUP))
    # Each heavy customer's events of the current group, in their own order (one stream each).
    heavy_streams: list[list[DomainEvent]] = [life.collect() for life in heavies]

    def next_group() -> list[DomainEvent] | None:
        first = next(groups, None)
        if first is None:
            return None
        lives = [_new_life(rng, i, per_customer) for i in range(first, min(first + GROUP, customers))]
        streams: list[list[DomainEvent]] = [life.collect() for life in lives]
        n_groups = -(-customers // GROUP)
        heavy_steps = [
            max(1, (life.budget - life.produced) // max(1, n_groups - first // GROUP) // 3) for life in heavies
        ]
        active = list(range(len(lives)))
        rounds = 0
        while active or any(heavy_steps):
            rounds += 1
            still = []
            for i in active:
                life = lives[i]
                if life.customer.survivor_id is not None:
                    continue
                if rounds == 2 and i > 0 and lives[i - 1].customer.survivor_id is None and rng.random() < merge_rate:
                    # Either may survive, so that a survivor is now and then absorbed in turn (a chain).
                    pair = [i - 1, i] if rng.random() < 0.5 else [i, i - 1]
                    lives[pair[0]].customer.absorb(lives[pair[1]].customer, life.at)
                    for k in pair:
                        streams[k].extend(lives[k].collect())
                    if pair[0] == i:
                        still.append(i)
                    continue
                streams[i].extend(life.step(rng))
                if life.produced < life.budget:
                    still.append(i)
            active = still
            for h, life in enumerate(heavies):
                if heavy_steps[h]:
                    heavy_steps[h] -= 1
                    heavy_streams[h].extend(life.step(rng))
        streams.extend(heavy_streams)
        heavy_streams[:] = [[] for _ in heavies]
        return _interleave(rng, streams)

    return next_group


def _interleave(rng: random.Random, streams: list[list[DomainEvent]]) -> list[DomainEvent]:
    """The streams' events mixed as live traffic mixes them, each stream's own order kept."""
    out: list[DomainEvent] = []
    cursors = [[s, 0] for s in streams if s]
    while cursors:
        rng.shuffle(cursors)
        for c in cursors:
            stream, i = c
            n = rng.randint(1, 4)
            out.extend(stream[i : i + n])
            c[1] = i + n
        cursors = [c for c in cursors if c[1] < len(c[0])]
    return out


def write(
    store,
    source: Callable[[], list[DomainEvent] | None],
    batch: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Appends every event of `source` through the event store (sealed, chained), `batch` per transaction."""
    written = 0
    pending: list[DomainEvent] = []
    while (group := source()) is not None:
        pending.extend(group)
        while len(pending) >= batch:
            with store.transaction() as tx:
                tx.append(pending[:batch])
            written += batch
            del pending[:batch]
            if progress:
                progress(written)
    if pending:
        with store.transaction() as tx:
            tx.append(pending)
        written += len(pending)
    return written


# -- a generated log kept between benchmark runs ------------------------------------------------------

CACHE_DIR = Path(os.environ.get("SB_BENCH_CACHE") or Path(tempfile.gettempdir()) / "sb-bench-cache")


# Bump when what `events()` generates or how the store seals it changes: the key of the kept logs.
GENERATOR_VERSION = 1


def _cache_key(params: dict) -> str:
    return hashlib.sha256(json.dumps({**params, "version": GENERATOR_VERSION}, sort_keys=True).encode()).hexdigest()[
        :16
    ]


def cached(database_url: str, params: dict, build: Callable[[str], int], progress: Callable[[str], None] = print):
    """(master key, events) of the log `params` describes, in the empty database `database_url`.

    The first time, `build(master_key)` writes it (schema and events) and the database is kept with
    pg_dump in CACHE_DIR (SB_BENCH_CACHE), keyed by the parameters and GENERATOR_VERSION; later runs
    restore that dump (minutes of generating become seconds of COPY). The master key is kept beside it:
    the events are sealed with keys that only it opens.
    """
    from services.platform.embedded import EmbeddedPostgres  # noqa: PLC0415

    bins = EmbeddedPostgres.bin_dir()
    key = _cache_key(params)
    dump, meta = CACHE_DIR / f"log-{key}.dump", CACHE_DIR / f"log-{key}.json"
    if dump.exists() and meta.exists():
        t0 = time.perf_counter()
        info = json.loads(meta.read_text())
        subprocess.run(
            [str(bins / "pg_restore"), "--no-owner", "--jobs=2", "--dbname", database_url, str(dump)],
            check=True,
            capture_output=True,
        )
        progress(f"   restored the cached log {dump} ({info['events']:,} events) in {time.perf_counter() - t0:.1f}s")
        return info["master_key"], info["events"]
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    t0 = time.perf_counter()
    written = build(master_key)
    progress(f"   generated {written:,} events in {time.perf_counter() - t0:.1f}s")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = dump.with_suffix(".partial")
    subprocess.run(
        [str(bins / "pg_dump"), "--format=custom", "--compress=0", "--file", str(partial), database_url],
        check=True,
        capture_output=True,
    )
    partial.rename(dump)
    meta.write_text(json.dumps({"master_key": master_key, "events": written, "params": params}))
    meta.chmod(0o600)
    return master_key, written


def bench_params(events: int) -> dict:
    """The benchmarks' log (rebuild and query use the same one, so `make bench` generates it once):
    20,000 customers at a million events, 5 of them with about 10,000 events each."""
    return {
        "customers": max(200, events // 50),
        "target": events,
        "heavy": 5,
        "heavy_events": max(100, events // 100),
        "merge_rate": 0.01,
    }


def bench_log(database_url: str, nats_url: str, data_dir: Path, events: int) -> tuple[str, int]:
    """(master key, events written) of the benchmarks' log in the empty database `database_url`,
    generated through the event store or restored from the kept copy (`cached`)."""
    from services.bootstrap import Switchboard  # noqa: PLC0415
    from services.platform.settings import Settings  # noqa: PLC0415

    params = bench_params(events)

    def build(master_key: str) -> int:
        settings = Settings(data_dir=data_dir, nats_url=nats_url, database_url=database_url, master_key=master_key)
        sb = Switchboard(settings)
        sb.create_schema()
        store = sb.open_store()
        try:
            return write(store, events(**params))
        finally:
            store.datastore.close()

    return cached(database_url, params, build)
