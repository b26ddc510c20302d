"""Attachment bytes, kept by their SHA-256 in a JetStream Object Store bucket.

Interactions carry only an attachment's metadata; its `ref` is `blob:<sha256>`, and the agent API
serves the bytes at `GET /api/v1/attachments/{sha256}`. Content addressing makes a provider's retry
(or the same file sent twice) store the bytes once, and lets any gateway or API process on the same
NATS read what another stored.

The bucket keeps no TTL: an attachment must stay retrievable for as long as the timeline entry
that refers to it. Erasing a customer's attachments is `delete(sha256)` for each `blob:` ref of
theirs (GDPR erasure).

It is bounded: `SWITCHBOARD_BLOBS_MAX_BYTES` for the whole bucket (JetStream refuses writes past it,
discard "new"), `SWITCHBOARD_BLOBS_MAX_OBJECT_BYTES` for one object. A full bucket is
`BlobStoreFull`, a temporary condition for the caller (an operator frees or grows it); nothing of
the refused object stays behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from nats.js.api import ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.errors import APIError, BadRequestError, BucketNotFoundError, NotFoundError, ObjectNotFoundError

from services.platform.streams import Names

BLOB_PREFIX = "blob:"
BUCKET = "SB_BLOBS"
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)


def blob_ref(sha256: str) -> str:
    return BLOB_PREFIX + sha256


def is_sha256(text: str) -> bool:
    return _SHA256.fullmatch(text) is not None


class BlobTooLarge(ValueError):
    """One object over `max_object_bytes`: permanent, the same bytes will never fit."""


class BlobStoreFull(Exception):
    """The bucket has no room for the object: temporary, until an operator frees or grows it."""


# What JetStream stores beside an object's bytes (chunk and meta headers, the meta entry).
_OBJECT_OVERHEAD = 4096


class BlobStore:
    def __init__(self, obs, js=None, max_object_bytes: int | None = None):
        self._obs = obs
        self._js = js
        self.max_object_bytes = max_object_bytes

    @classmethod
    async def open(
        cls, js, names: Names, replicas: int = 1, max_bytes: int | None = None, max_object_bytes: int | None = None
    ) -> BlobStore:
        bucket = names.stream(BUCKET)
        try:
            obs = await js.object_store(bucket)
        except (BucketNotFoundError, NotFoundError):
            try:
                obs = await js.create_object_store(
                    bucket,
                    ObjectStoreConfig(
                        description="Switchboard attachment bytes by SHA-256",
                        storage=StorageType.FILE,
                        replicas=replicas,
                        max_bytes=max_bytes,
                    ),
                )
            except BadRequestError:  # another process created it between our look and our add
                obs = await js.object_store(bucket)
        store = cls(obs, js, max_object_bytes)
        if max_bytes is not None:
            await store._limit_total(max_bytes)
        return store

    async def _limit_total(self, max_bytes: int) -> None:
        """A bucket made before the limit existed (or under another one) gets the configured one."""
        info = await self._js.stream_info(self._obs._stream)
        if info.config.max_bytes != max_bytes:
            info.config.max_bytes = max_bytes
            await self._js.update_stream(info.config)

    async def put(self, data: bytes) -> str:
        """Stores `data` (once) and returns its SHA-256.

        Raises `BlobTooLarge` for an object over the per-object limit and `BlobStoreFull` when the
        bucket has no room; either way nothing of `data` is kept.
        """
        digest = hashlib.sha256(data).hexdigest()
        self.check_size(len(data))
        try:
            await self._obs.get_info(digest)
            return digest  # already held: content addressing makes the bytes the same
        except (ObjectNotFoundError, NotFoundError):
            pass
        await self._check_room(len(data))
        try:
            await self._obs.put(digest, data, meta=ObjectMeta(name=digest))
        except APIError as exc:
            # Another writer took the room meanwhile; nats-py has purged the chunks it wrote.
            if _is_full(exc):
                raise BlobStoreFull("the attachment store is full") from None
            raise
        return digest

    def check_size(self, size: int) -> None:
        if self.max_object_bytes is not None and size > self.max_object_bytes:
            raise BlobTooLarge(f"an attachment is larger than {self.max_object_bytes} bytes")

    async def _check_room(self, size: int) -> None:
        if self._js is None:
            return
        info = await self._js.stream_info(self._obs._stream)
        limit = info.config.max_bytes
        if limit is not None and limit > 0 and info.state.bytes + size + _OBJECT_OVERHEAD > limit:
            raise BlobStoreFull("the attachment store is full")

    async def get(self, sha256: str) -> bytes | None:
        if not is_sha256(sha256):
            return None
        try:
            result = await self._obs.get(sha256)
        except (ObjectNotFoundError, NotFoundError):
            return None
        return bytes(result.data or b"")

    async def delete(self, sha256: str) -> bool:
        try:
            await self._obs.delete(sha256)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return True


async def blobs_of(services) -> BlobStore:
    """The process's blob store, opened on first use (nothing connects at import or start-up)."""
    store = services.blobs
    if store is not None:
        return store
    opening = services.blobs_opening
    if opening is None:
        settings = services.settings
        opening = asyncio.ensure_future(
            BlobStore.open(
                services.js,
                services.names,
                settings.nats_replicas,
                max_bytes=settings.blobs_max_bytes,
                max_object_bytes=settings.blobs_max_object_bytes,
            )
        )
        services.blobs_opening = opening
    try:
        store = await asyncio.shield(opening)
    except Exception:
        services.blobs_opening = None  # let the next request try again
        raise
    services.blobs = store
    return store


def _is_full(exc: APIError) -> bool:
    # JetStream answers a discard-new stream past max_bytes with 503 "maximum bytes exceeded"
    # (err_code 10077); 10047 is the server's own storage running out.
    text = (exc.description or "").lower()
    return exc.err_code in (10077, 10047) or "maximum bytes" in text or "insufficient" in text
