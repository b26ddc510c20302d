"""Per-customer data keys (crypto-shredding).

Every customer has its own AES-256-GCM key. Keys are stored wrapped by the master key
(`SWITCHBOARD_MASTER_KEY`) in `sb_customer_keys`; erasing a customer destroys its key, after which
the personal fields of its events cannot be read by anyone, while the log itself stays append-only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyDestroyedError(LookupError):
    """The customer was erased: their data key no longer exists."""


class MissingKeyError(LookupError):
    pass


class MasterKey:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(key)
        # Separate keys for separate purposes, derived so that one secret is all an operator keeps.
        self.chain_key = hmac.new(key, b"switchboard/audit-chain/v1", hashlib.sha256).digest()
        self.index_key = hmac.new(key, b"switchboard/identity-index/v1", hashlib.sha256).digest()
        # Signs the chain's head written outside the database (`audit anchor`).
        self.anchor_key = hmac.new(key, b"switchboard/audit-anchor/v1", hashlib.sha256).digest()

    def wrap(self, customer_id: UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data_key, customer_id.bytes)

    def unwrap(self, customer_id: UUID, wrapped: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:12], wrapped[12:], customer_id.bytes)

    def blind_index(self, kind: str, value: str) -> bytes:
        """A keyed hash of an identity: lookups by exact value without storing the value."""
        return hmac.new(self.index_key, f"{kind}\x1f{value}".encode(), hashlib.sha256).digest()

    def outbound_blind(self, channel: str, provider_message_id: str) -> str:
        """The keyed hash `sb_outbound` keeps instead of a provider's message id (64 hex digits)."""
        return self.blind_index(f"outbound:{channel}", provider_message_id).hex()


class KeyRing:
    """Finds, creates and destroys customer keys; caches unwrapped keys in memory.

    Keys created inside a transaction are held as pending by the caller's `KeyScope` until the
    transaction commits, so a rolled-back transaction never leaves a cached key the database lacks.
    """

    def __init__(self, master: MasterKey, cache_size: int = 100_000, ttl: float = 30.0):
        self.master = master
        # Cached keys expire, so an erasure done by another process takes effect here within `ttl`.
        self.ttl = ttl
        self._cache: OrderedDict[UUID, tuple[AESGCM | None, float]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _remember(self, customer_id: UUID, aead: AESGCM | None) -> None:
        with self._lock:
            self._cache[customer_id] = (aead, time.monotonic() + self.ttl)
            self._cache.move_to_end(customer_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def cached(self, customer_id: UUID) -> AESGCM | None | bool:
        """The cached key, None if known destroyed, False if not cached."""
        with self._lock:
            entry = self._cache.get(customer_id)
            if entry is None:
                return False
            if entry[1] < time.monotonic():
                del self._cache[customer_id]
                return False
            return entry[0]

    def forget(self, customer_id: UUID) -> None:
        with self._lock:
            self._cache.pop(customer_id, None)

    def load(self, curs, customer_ids) -> None:
        """Loads the keys of these customers into the cache in one query."""
        missing = [c for c in set(customer_ids) if self.cached(c) is False]
        if not missing:
            return
        for cid, aead in self.fetch(curs, missing).items():
            self._remember(cid, aead)

    def readers(self, connect, customer_ids) -> dict[UUID, AESGCM | None]:
        """The keys of these customers (None for erased ones), loading what is not cached in one query.

        `connect()` gives a context manager yielding a cursor; it is only called when something is
        missing from the cache. A customer with no key row at all is a MissingKeyError.
        """
        found: dict[UUID, AESGCM | None] = {}
        missing = []
        for cid in customer_ids:
            aead = self.cached(cid)
            if aead is False:
                missing.append(cid)
            else:
                found[cid] = aead
        if missing:
            with connect() as curs:
                loaded = self.fetch(curs, missing)
            for cid in missing:
                if cid not in loaded:
                    raise MissingKeyError(str(cid))
                self._remember(cid, loaded[cid])
                found[cid] = loaded[cid]
        return found

    def fetch(self, curs, customer_ids) -> dict[UUID, AESGCM | None]:
        """These customers' keys straight from the table, not cached (None: erased; absent: no key)."""
        return {cid: None if key is None else AESGCM(key) for cid, key in self.unwrapped(curs, customer_ids).items()}

    def unwrapped(self, curs, customer_ids) -> dict[UUID, bytes | None]:
        """`fetch` as the keys' bytes, for a process of our own that decrypts on this one's behalf (a
        rebuild's decoding workers): they get the keys they need, never the master key."""
        curs.execute(
            "SELECT customer_id, wrapped FROM sb_customer_keys WHERE customer_id = ANY(%s)", (list(customer_ids),)
        )
        out: dict[UUID, bytes | None] = {}
        for row in curs.fetchall():
            cid, wrapped = _row(row)
            out[cid] = self.master.unwrap(cid, bytes(wrapped)) if wrapped else None
        return out

    def reader(self, curs, customer_id: UUID) -> AESGCM:
        """The key to decrypt this customer's fields; KeyDestroyedError after erasure."""
        aead = self.cached(customer_id)
        if aead is False:
            self.load(curs, [customer_id])
            aead = self.cached(customer_id)
        if aead is None:
            raise KeyDestroyedError(str(customer_id))
        if aead is False:
            raise MissingKeyError(str(customer_id))
        return aead

    def destroy(self, curs, customer_ids: list[UUID]) -> None:
        curs.execute(
            "INSERT INTO sb_customer_keys (customer_id, wrapped, destroyed_at) "
            "SELECT id, NULL, now() FROM unnest(%s::uuid[]) AS id "
            "ON CONFLICT (customer_id) DO UPDATE SET wrapped = NULL, destroyed_at = now()",
            (customer_ids,),
        )
        for cid in customer_ids:
            self._remember(cid, None)


class KeyScope:
    """The keys one transaction uses: cached, loaded, or created and inserted in that transaction."""

    def __init__(self, ring: KeyRing, curs):
        self.ring = ring
        self.curs = curs
        self.pending: dict[UUID, AESGCM] = {}

    def prepare(self, customer_ids) -> bool:
        """Finds or creates the keys of these customers: one query, and one insert for new customers.

        The found keys are read FOR SHARE, cached or not: an erasure (which destroys a key) waits for
        this transaction, and a key destroyed by another process since it was cached is noticed here
        rather than used. Returns False when that happened: the caller's view of that customer is
        stale, and the transaction should be retried from fresh state.
        """
        wanted = sorted(set(customer_ids) - self.pending.keys())
        if not wanted:
            return True
        self.curs.execute(
            "SELECT customer_id, wrapped FROM sb_customer_keys WHERE customer_id = ANY(%s::uuid[]) "
            "ORDER BY customer_id FOR SHARE",
            # A uuid[] literal: a bound list is dumped element by element (the core's batch: hundreds).
            ("{" + ",".join(map(str, wanted)) + "}",),
        )
        fresh = True
        found = set()
        for row in self.curs.fetchall():
            cid, wrapped = _row(row)
            found.add(cid)
            cached = self.ring.cached(cid)
            if wrapped is None:
                fresh = fresh and cached in (None, False)
                self.ring._remember(cid, None)
            elif cached is False:
                self.ring._remember(cid, AESGCM(self.ring.master.unwrap(cid, bytes(wrapped))))
        new = [c for c in wanted if c not in found]  # sorted: overlapping inserts lock in one order
        if new:
            keys = {c: AESGCM.generate_key(bit_length=256) for c in new}
            self.curs.execute(
                "INSERT INTO sb_customer_keys (customer_id, wrapped) SELECT * FROM unnest(%s::uuid[], %s::bytea[]) "
                "ON CONFLICT DO NOTHING RETURNING customer_id",
                (new, [self.ring.master.wrap(c, keys[c]) for c in new]),
            )
            inserted = {row["customer_id"] if isinstance(row, dict) else row[0] for row in self.curs.fetchall()}
            for cid in inserted:
                self.pending[cid] = AESGCM(keys[cid])
            lost = [c for c in new if c not in inserted]  # another writer created them first: use theirs
            if lost:
                self.ring.load(self.curs, lost)
        return fresh

    def writer(self, customer_id: UUID) -> AESGCM:
        if customer_id in self.pending:
            return self.pending[customer_id]
        aead = self.ring.cached(customer_id)
        if aead is False:
            self.ring.load(self.curs, [customer_id])
            aead = self.ring.cached(customer_id)
        if aead is None:
            raise KeyDestroyedError(str(customer_id))
        if aead is not False:
            return aead
        data_key = AESGCM.generate_key(bit_length=256)
        self.curs.execute(
            "INSERT INTO sb_customer_keys (customer_id, wrapped) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (customer_id, self.ring.master.wrap(customer_id, data_key)),
        )
        if self.curs.rowcount == 0:  # another writer created it first: use theirs
            self.ring.load(self.curs, [customer_id])
            return self.ring.reader(self.curs, customer_id)
        aead = AESGCM(data_key)
        self.pending[customer_id] = aead
        return aead

    def committed(self) -> None:
        for cid, aead in self.pending.items():
            self.ring._remember(cid, aead)
        self.pending.clear()


def _row(row):
    if isinstance(row, dict):
        return row["customer_id"], row["wrapped"]
    return row[0], row[1]
