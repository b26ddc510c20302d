"""An anchor of the hash chain kept outside the database: what a rolled-back or truncated log cannot fake.

The chain and its sealed head (`recorder.py`) catch any row changed, removed or added by someone
without the key. They cannot catch someone who puts back an *older* state of the database: an older
head is sealed too, and the rows up to it link correctly. So the head is also written elsewhere,
signed: a file (written atomically) or a NATS KV bucket. `audit verify` then checks that the log
still holds the anchored position with the anchored link; a log that ends before it was truncated
or rolled back, a log that holds another link there was rolled back and rewritten.

The anchor only moves forward along the same chain: a new one is written only if the log still holds
the previous anchor's link (so a refresh after a rollback refuses instead of blessing it), and only
from a head whose seal verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from psycopg import pq
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from services.platform.eventstore.recorder import EVENTS_TABLE

ANCHOR_BUCKET = "SB_AUDIT_ANCHOR"
ANCHOR_KEY = "head"
_DOMAIN = b"switchboard/audit-anchor/v1"


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """A signed copy of the chain's head: its position, its link (hex) and when it was taken."""

    position: int
    chain: str
    at: datetime
    signature: str = ""
    v: int = 1

    def signed_bytes(self) -> bytes:
        return b"|".join(
            (
                _DOMAIN,
                struct.pack(">q", self.position),
                bytes.fromhex(self.chain),
                self.at.astimezone(UTC).isoformat().encode(),
            )
        )


class AnchorError(Exception):
    """The log does not hold what the anchor says it held, or the anchor itself is not genuine."""


def sign(key: bytes, position: int, chain: bytes, at: datetime) -> Anchor:
    unsigned = Anchor(position=position, chain=chain.hex(), at=at.astimezone(UTC))
    return msgspec.structs.replace(
        unsigned, signature=hmac.new(key, unsigned.signed_bytes(), hashlib.sha256).hexdigest()
    )


def encode(anchor: Anchor) -> bytes:
    return msgspec.json.encode(anchor)


def decode(data: bytes, key: bytes) -> Anchor:
    """The anchor in `data`, its signature checked; AnchorError if unreadable or forged."""
    try:
        anchor = msgspec.json.decode(data, type=Anchor)
        bytes.fromhex(anchor.chain)
        expected = hmac.new(key, anchor.signed_bytes(), hashlib.sha256).hexdigest()
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise AnchorError(f"anchor unreadable: {exc}") from None
    if not hmac.compare_digest(expected, anchor.signature):
        raise AnchorError("anchor forged: its signature does not verify (altered, or signed with another master key)")
    return anchor


# -- the log's side --------------------------------------------------------------------------------


def _snapshot(conn):
    """A read-only REPEATABLE READ transaction of its own, or the caller's open one."""
    own = conn.info.transaction_status == pq.TransactionStatus.IDLE
    tx = conn.transaction()

    class _Snap:
        def __enter__(self):
            tx.__enter__()
            if own:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return conn

        def __exit__(self, *exc):
            return tx.__exit__(*exc)

    return _Snap()


def _link_at(conn, table: str, position: int) -> bytes | None:
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(SQL("SELECT chain FROM {0} WHERE notification_id = %s").format(Identifier(table)), (position,))
        .fetchone()
    )
    return bytes(row[0]) if row else None


def _last_position(conn, table: str) -> int:
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(SQL("SELECT coalesce(max(notification_id), 0) FROM {0}").format(Identifier(table)))
        .fetchone()
    )
    return int(row[0])


def check(conn, anchor: Anchor, table: str = EVENTS_TABLE) -> None:
    """Raises AnchorError unless the log still holds the anchored position with the anchored link."""
    with _snapshot(conn):
        _check(conn, anchor, table)


def _check(conn, anchor: Anchor, table: str) -> None:
    found = _link_at(conn, table, anchor.position)
    if found is None:
        last = _last_position(conn, table)
        where = "no events left" if last == 0 else f"the log ends at position {last}"
        if last > anchor.position:
            where = f"position {anchor.position} deleted"
        raise AnchorError(
            f"log truncated: anchored position {anchor.position} missing ({where}; anchored at {anchor.at.isoformat()})"
        )
    if not hmac.compare_digest(found, bytes.fromhex(anchor.chain)):
        raise AnchorError(
            f"rolled back: position {anchor.position} holds another link than the one anchored at "
            f"{anchor.at.isoformat()} (the log was restored from an earlier state and written again)"
        )


def current_head(conn, chain_key: bytes, table: str = EVENTS_TABLE) -> tuple[int, bytes] | None:
    """The head of the chain (position, link) if its seal verifies and its row is there; None for an empty log."""
    row = (
        conn.cursor(row_factory=tuple_row)
        .execute(SQL("SELECT position, chain, seal FROM {0} WHERE id = 1").format(Identifier(f"{table}_head")))
        .fetchone()
    )
    if row is None:
        if _last_position(conn, table):
            raise AnchorError("chain head missing: refusing to anchor")
        return None
    position, chain, seal = int(row[0]), bytes(row[1]), bytes(row[2])
    expected = hmac.new(chain_key, b"head" + struct.pack(">q", position) + chain, hashlib.sha256).digest()
    if not hmac.compare_digest(seal, expected):
        raise AnchorError("chain head altered: refusing to anchor")
    if _link_at(conn, table, position) != chain:
        raise AnchorError(f"the row at the head (position {position}) is missing or altered: refusing to anchor")
    return position, chain


def next_anchor(
    conn, chain_key: bytes, anchor_key: bytes, previous: Anchor | None, at: datetime, table: str = EVENTS_TABLE
) -> Anchor | None:
    """The anchor of the current head, extending `previous`; None when there is nothing new to anchor.

    AnchorError when the log no longer holds `previous` (truncated or rolled back) or its head is not
    genuine: the anchor then stays where it was, as evidence.
    """
    with _snapshot(conn):
        if previous is not None:
            _check(conn, previous, table)
        head = current_head(conn, chain_key, table)
    if head is None:
        return None
    position, chain = head
    if previous is not None and position <= previous.position:
        return None
    return sign(anchor_key, position, chain, at)


# -- where anchors are kept ------------------------------------------------------------------------


def read_file(path: Path, key: bytes) -> Anchor | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode(data, key)


def write_file(path: Path, anchor: Anchor) -> None:
    """Atomically: a temporary file in the same directory, synced, renamed over the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(anchor) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def open_bucket(js, bucket: str = ANCHOR_BUCKET, replicas: int = 1, create: bool = True):
    from nats.js.api import KeyValueConfig  # noqa: PLC0415
    from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError  # noqa: PLC0415

    try:
        return await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        if not create:
            return None
    try:
        # A short history: the anchors before the last are kept as well, for an auditor to compare.
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, history=16, replicas=replicas, description="Switchboard audit anchors")
        )
    except BadRequestError:  # created by another process meanwhile
        return await js.key_value(bucket)


async def read_kv(kv, key: bytes) -> tuple[Anchor | None, int | None]:
    """The anchor in the bucket and its revision (for a compare-and-set update)."""
    from nats.js.errors import KeyNotFoundError  # noqa: PLC0415

    try:
        entry = await kv.get(ANCHOR_KEY)
    except KeyNotFoundError:
        return None, None
    if not entry.value:
        return None, entry.revision
    return decode(entry.value, key), entry.revision


async def write_kv(kv, anchor: Anchor, revision: int | None) -> bool:
    """Compare-and-set: False when another writer moved the anchor since it was read."""
    from nats.js.errors import KeyWrongLastSequenceError  # noqa: PLC0415

    try:
        if revision is None:
            await kv.create(ANCHOR_KEY, encode(anchor))
        else:
            await kv.update(ANCHOR_KEY, encode(anchor), last=revision)
    except KeyWrongLastSequenceError:
        return False
    return True
