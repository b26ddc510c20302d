"""`switchboard replay`: the log as JSON Lines, oldest first, fast enough for millions of events.

One line per event: `position`, `stream_id`, `stream_version`, `type`, `timestamp` (when it was
recorded, UTC), `payload` (the event's fields at the current version of its type, personal fields
decrypted) and `redacted` (true when the customer was erased and the personal fields read as
redacted values).

Why it is fast: rows stream from a server-side binary cursor; each batch's keys are loaded in one
query; a row's stored JSON is parsed once and its clear fields are never turned into Python objects
(the payload is the stored JSON spliced with the decrypted fields); lines go out in one buffer per
batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any
from uuid import UUID

import msgspec
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tqdm import tqdm

from services.core.batch_sql import alias_family
from services.platform.eventstore.keys import MissingKeyError
from services.platform.eventstore.store import NOT_ERASED, EventStore

# Keys kept between batches; beyond this many customers the map starts again (memory stays bounded).
_KEY_MAP_LIMIT = 200_000


class ReplayLine(msgspec.Struct):
    position: int
    stream_id: UUID
    stream_version: int
    type: str
    timestamp: datetime
    payload: msgspec.Raw
    redacted: bool = False


_encode_into = msgspec.json.Encoder().encode_into


def customer_ids(conn, customer_id: UUID) -> list[UUID]:
    """The survivor of this customer id, then every customer merged into it."""
    return alias_family(conn, customer_id)


def _dsn(store: EventStore, conninfo: str | None) -> str:
    if conninfo:
        return conninfo
    if own := getattr(store.datastore, "conninfo", None):  # services.platform.database.ConninfoDatastore
        return own
    with store.datastore.get_connection() as pooled:
        info = pooled.info
        dsn = f"host={info.host} port={info.port} dbname={info.dbname} user={info.user}"
        if info.password:
            dsn += f" password={info.password}"
    return dsn


def replay_events(
    store: EventStore,
    out: IO[bytes],
    *,
    customer: UUID | None = None,
    after: int = 0,
    until: datetime | None = None,
    progress: bool = False,
    batch: int = 5000,
    conninfo: str | None = None,
) -> int:
    """Writes the events after position `after` (recorded at or before `until`) as JSON Lines to `out`.

    With `customer`: only the events sealed for that customer, for its survivor if it was merged,
    and for every customer merged into it, which includes the events of their cases.
    """
    codec = store.codec
    ring = store.keyring
    view_of, owner_text, payload_of, needs_key = codec.view, codec.owner_text, codec.payload, codec.needs_key
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    count = 0
    buffer = bytearray()
    keys: dict[bytes, AESGCM | None] = {}  # by the customer id's text, as it is in the stored JSON
    with psycopg.connect(_dsn(store, conninfo)) as conn:
        conn.execute("SET TIME ZONE 'UTC'")  # timestamps come out in UTC whatever the server's zone
        where = ["notification_id > %s"]
        params: list[Any] = [after]
        if until is not None:
            where.append("recorded_at <= %s")
            params.append(until)
        if customer is not None:
            # The owner is in the clear part of the stored JSON, written by our own encoder, so an
            # exact byte pattern finds it without decoding every row in Python.
            patterns = [b'"customer_id":"%s"' % str(i).encode() for i in customer_ids(conn, customer)]
            where.append("(" + " OR ".join(["position(%s::bytea in state) > 0"] * len(patterns)) + ")")
            params.extend(patterns)
        total = 0
        if progress:
            total = conn.execute("SELECT count(*) FROM sb_events WHERE " + " AND ".join(where), params).fetchone()[0]
        with (
            tqdm(total=total, unit="ev", disable=not progress, desc="replay") as bar,
            conn.cursor(name="sb_replay", binary=True) as curs,
            conn.cursor() as key_curs,
        ):
            curs.itersize = batch
            curs.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state, recorded_at "
                f"FROM sb_events WHERE {' AND '.join(where)} ORDER BY notification_id",
                params,
            )
            while rows := curs.fetchmany(batch):
                views = [view_of(r[4]) for r in rows]
                owners = [
                    (owner_text(r[4]) or str(codec.owner(v)).encode()) if needs_key(r[3], v) else None
                    for r, v in zip(rows, views, strict=True)
                ]
                _load_keys(
                    ring, key_curs, keys, owners, {o for o, v in zip(owners, views, strict=True) if v.p is not None}
                )
                for row, view, owner in zip(rows, views, owners, strict=True):
                    payload, redacted = payload_of(row[3], row[1], row[2], view, keys[owner] if owner else None)
                    _encode_into(
                        ReplayLine(row[0], row[1], row[2], row[3], row[5], msgspec.Raw(payload), redacted),
                        buffer,
                        len(buffer),
                    )
                    buffer += b"\n"
                out.write(buffer)
                buffer.clear()
                count += len(rows)
                bar.update(len(rows))
    out.flush()
    return count


def _load_keys(
    ring, curs, keys: dict[bytes, AESGCM | None], owners: Iterable[bytes | None], sealed: set[bytes | None]
) -> None:
    """Loads the owners' keys into `keys`; only an owner of sealed fields must have one (an old event
    with nothing sealed only asks whether its owner was erased)."""
    missing = {o for o in owners if o is not None and o not in keys}
    if not missing:
        return
    if len(keys) + len(missing) > _KEY_MAP_LIMIT:
        keys.clear()
        missing = {o for o in owners if o is not None}
    ids = {UUID(m.decode()): m for m in missing}
    loaded = ring.fetch(curs, ids)
    for cid, text in ids.items():
        if cid not in loaded:
            if text in sealed:
                raise MissingKeyError(f"no key for customer {cid}: its events cannot be read")
            keys[text] = NOT_ERASED
            continue
        keys[text] = loaded[cid]
