"""The least a rebuild must do with the log, against the rebuild bench's baseline (issue 13).

`python -m tests.benchmarks._rebuild_floor [WORKERS] [RUNS]` restores the rebuild bench's log
(`_eventlog.bench_log`, 1,000,000 events unless SB_BENCH_REBUILD_EVENTS says otherwise; the kept
copy when there is one) and, RUNS times (default 2), alternately:

- **copy**: the rebuild bench's baseline, `rebuild._copy_baseline` (the events out of `sb_events`
  and into a fresh table by binary COPY through one client);
- **open**: the events read and opened, and nothing else: WORKERS processes (default: one per
  CPU), each with a share of the log (a range of positions), read their rows by binary
  `COPY ... TO STDOUT`, parse each state's JSON envelope and, where it has sealed fields, decode the
  base64, decrypt them with the owner's AES-GCM key (its associated data: stream id, version, name)
  and unpack the msgpack. The keys are unwrapped by this process beforehand (not timed: a real
  rebuild does it too, a few seconds' worth for the whole log).

What `open` leaves out, every omission in its favour: the events' classes (no msgspec decode
into a Struct), the upcasters, every fold and every row written, the indexes, the swap. It answers
one question: how much of a rebuild's time any rebuild on this stack spends only reading and
decrypting what it has to read; the rest of the rebuild must fit into what is left. A tool, not a
benchmark: nothing is compared against a goal here.
"""

from __future__ import annotations

import binascii
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import msgspec
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.platform.eventstore.codec import EventCodec, StoredView
from services.platform.logs import configure_logging
from services.platform.settings import Settings
from tests.benchmarks import _eventlog
from tests.benchmarks._servers import servers
from tests.benchmarks.rebuild import EVENTS, _copy_baseline

_view = msgspec.json.Decoder(StoredView).decode
_unpack = msgspec.msgpack.Decoder().decode


def _open_range(database_url: str, after: int, upto: int, keys: dict[bytes, bytes | None]) -> tuple[int, int, float]:
    """In a worker: the events after `after` up to `upto` read and opened; (events, sealed ones, CPU s)."""
    cpu0 = time.process_time()
    aeads = {owner: None if key is None else AESGCM(key) for owner, key in keys.items()}
    events = sealed = 0
    with (
        psycopg.connect(database_url) as conn,
        conn.cursor().copy(
            "COPY (SELECT originator_id, originator_version, topic, state FROM sb_events "
            f"WHERE notification_id > {after} AND notification_id <= {upto} ORDER BY notification_id) "
            "TO STDOUT (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["uuid", "int8", "text", "bytea"])
        for stream_id, version, topic, state in copy.rows():
            events += 1
            view = _view(state)
            if view.p is None:
                continue
            aead = aeads.get(EventCodec.owner_text(state) or b"")
            if aead is None:
                continue  # an erased customer: redacted, nothing to decrypt
            raw = binascii.a2b_base64(view.p)
            aad = b"%s|%d|%s" % (stream_id.bytes, version, topic.encode())
            _unpack(aead.decrypt(raw[:12], raw[12:], aad))
            sealed += 1
    return events, sealed, time.process_time() - cpu0


def _keys(store, database_url: str) -> dict[bytes, bytes | None]:
    with psycopg.connect(database_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT customer_id FROM sb_customer_keys")]
    with store._key_cursor() as curs:
        loaded = store.keyring.unwrapped(curs, ids)
    return {str(cid).encode(): key for cid, key in loaded.items()}


def _open_all(database_url: str, workers: int, keys: dict, last: int) -> tuple[int, int, float, float]:
    bounds = [last * i // workers for i in range(workers + 1)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(int, range(workers)))  # the workers started (an interpreter each), before the clock
        t0 = time.perf_counter()
        done = list(pool.map(_open_range, [database_url] * workers, bounds[:-1], bounds[1:], [keys] * workers))
        elapsed = time.perf_counter() - t0
    return sum(d[0] for d in done), sum(d[1] for d in done), sum(d[2] for d in done), elapsed


def main(argv: list[str]) -> None:
    workers = int(argv[0]) if argv else os.cpu_count() or 2
    runs = int(argv[1]) if len(argv) > 1 else 2
    configure_logging("console", "warning")
    from services.bootstrap import Switchboard  # noqa: PLC0415

    with servers() as (nats_url, database_url), TemporaryDirectory(prefix="sb-rebuild-floor-") as tmp:
        master_key, written = _eventlog.bench_log(database_url, nats_url, Path(tmp), EVENTS)
        settings = Settings(data_dir=Path(tmp), nats_url=nats_url, database_url=database_url, master_key=master_key)
        store = Switchboard(settings).open_store()
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE sb_events")
                last = conn.execute("SELECT max(notification_id) FROM sb_events").fetchone()[0]
            keys = _keys(store, database_url)
            for run in range(1, runs + 1):
                copied, copy_s = _copy_baseline(database_url)
                n, sealed, cpu, open_s = _open_all(database_url, workers, keys, last)
                assert n == copied == written, (n, copied, written)
                print(
                    f"   run {run}: copy {copied / copy_s:,.0f} rows/s; open {n / open_s:,.0f} events/s with {workers} "
                    f"workers ({sealed:,} sealed; {cpu / n * 1e6:.1f} us of workers' CPU per event)",
                    flush=True,
                )
                print(
                    f"rebuild_floor: events={n} open_events_per_s={n / open_s:.0f} copy_rows_per_s={copied / copy_s:.0f} "
                    f"open_vs_copy={copy_s / open_s:.2f}x",
                    flush=True,
                )
        finally:
            store.datastore.close()


if __name__ == "__main__":
    main(sys.argv[1:])
