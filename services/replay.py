"""`switchboard replay`: the log as JSON Lines, oldest first, fast enough for millions of events.

Rows stream from a server-side cursor; keys are loaded once per batch; each line is encoded by
msgspec straight from the stored JSON (no domain objects on the hot path).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, Any
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import StoredEvent
from tqdm import tqdm

from services.eventstore.keys import KeyDestroyedError
from services.eventstore.store import EventStore


class ReplayLine(msgspec.Struct):
    position: int
    stream_id: UUID
    stream_version: int
    type: str
    timestamp: datetime
    payload: dict[str, Any]
    redacted: bool = False


_encode = msgspec.json.Encoder().encode_into
_customer_of = msgspec.json.Decoder(dict[str, Any]).decode


def _customer_ids(store: EventStore, conn, customer_id: UUID) -> list[UUID]:
    rows = conn.execute("SELECT absorbed_id FROM sb_customer_aliases WHERE survivor_id = %s", (customer_id,)).fetchall()
    return [customer_id, *(r[0] for r in rows)]


def replay_events(store: EventStore, out: IO[bytes], *, customer: UUID | None = None, after: int = 0,
                  until: datetime | None = None, progress: bool = False, batch: int = 5000,
                  conninfo: str | None = None) -> int:
    codec = store.codec
    registry = codec.registry
    ring = store.keyring
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    total = store.max_position()
    count = 0
    buffer = bytearray()
    with store.datastore.get_connection() as pooled:
        info = pooled.info
        dsn = conninfo or f"host={info.host} port={info.port} dbname={info.dbname} user={info.user}"
        if info.password:
            dsn += f" password={info.password}"
    with psycopg.connect(dsn) as conn, tqdm(total=max(total - after, 0), unit="ev", disable=not progress,
                                           desc="replay", file=None) as bar:
        where = ["notification_id > %s"]
        params: list[Any] = [after]
        if until is not None:
            where.append("recorded_at <= %s")
            params.append(until)
        if customer is not None:
            ids = _customer_ids(store, conn, customer)
            patterns = [b'"customer_id":"%s"' % str(i).encode() for i in ids]
            where.append("(" + " OR ".join(["position(%s::bytea in state) > 0"] * len(patterns)) + ")")
            params.extend(patterns)
        with conn.cursor(name="sb_replay") as curs:
            curs.itersize = batch
            curs.execute("SELECT notification_id, originator_id, originator_version, topic, state, recorded_at "
                         f"FROM sb_events WHERE {' AND '.join(where)} ORDER BY notification_id", params)
            with store.datastore.get_connection() as key_conn, key_conn.cursor() as key_curs:
                while rows := curs.fetchmany(batch):
                    stored = [StoredEvent(originator_id=r[1], originator_version=r[2], topic=r[3], state=bytes(r[4]))
                              for r in rows]
                    needs_key = [s for s in stored if registry.cls(s.topic).PERSONAL]
                    ring.load(key_curs, {codec.customer_of(s) for s in needs_key})
                    for row, s in zip(rows, stored, strict=True):
                        aead = None
                        if registry.cls(s.topic).PERSONAL:
                            try:
                                aead = ring.reader(key_curs, codec.customer_of(s))
                            except KeyDestroyedError:
                                aead = None
                        data, redacted = codec.open_fields(s, aead)
                        del data["stream_id"], data["version"]
                        line = ReplayLine(position=row[0], stream_id=row[1], stream_version=row[2], type=row[3],
                                          timestamp=row[5], payload=data, redacted=redacted)
                        _encode(line, buffer, len(buffer))
                        buffer.extend(b"\n")
                    out.write(buffer)
                    buffer.clear()
                    count += len(rows)
                    bar.update(len(rows))
    out.flush()
    return count
