"""Attachment bytes, kept by their SHA-256 in a JetStream Object Store bucket.

Interactions carry only an attachment's metadata; its `ref` is `blob:<sha256>`, and the agent API
serves the bytes at `GET /api/v1/attachments/{sha256}`. Content addressing makes a provider's retry
(or the same file sent twice) store the bytes once, and lets any gateway or API process on the same
NATS read what another stored.

The bucket keeps no TTL: an attachment must stay retrievable for as long as the timeline entry
that refers to it. Erasing a customer's attachments is `delete(sha256)` for each `blob:` ref of
theirs (GDPR erasure).
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from nats.js.api import ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError, ObjectNotFoundError

from services.platform.streams import Names

BLOB_PREFIX = "blob:"
BUCKET = "SB_BLOBS"
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)


def blob_ref(sha256: str) -> str:
    return BLOB_PREFIX + sha256


def is_sha256(text: str) -> bool:
    return _SHA256.fullmatch(text) is not None


class BlobStore:
    def __init__(self, obs):
        self._obs = obs

    @classmethod
    async def open(cls, js, names: Names, replicas: int = 1) -> BlobStore:
        bucket = names.stream(BUCKET)
        try:
            return cls(await js.object_store(bucket))
        except (BucketNotFoundError, NotFoundError):
            pass
        try:
            obs = await js.create_object_store(
                bucket, ObjectStoreConfig(description="Switchboard attachment bytes by SHA-256",
                                          storage=StorageType.FILE, replicas=replicas))
        except BadRequestError:  # another process created it between our look and our add
            obs = await js.object_store(bucket)
        return cls(obs)

    async def put(self, data: bytes) -> str:
        """Stores `data` (once) and returns its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        try:
            await self._obs.get_info(digest)
            return digest  # already held: content addressing makes the bytes the same
        except (ObjectNotFoundError, NotFoundError):
            pass
        await self._obs.put(digest, data, meta=ObjectMeta(name=digest))
        return digest

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


_OPENING = "blobs_opening"


async def blobs_of(services) -> BlobStore:
    """The process's blob store, opened on first use (nothing connects at import or start-up)."""
    store = services.extra.get("blobs")
    if store is not None:
        return store
    opening = services.extra.get(_OPENING)
    if opening is None:
        opening = asyncio.ensure_future(
            BlobStore.open(services.js, services.names, services.settings.nats_replicas))
        services.extra[_OPENING] = opening
    try:
        store = await asyncio.shield(opening)
    except Exception:
        services.extra.pop(_OPENING, None)  # let the next request try again
        raise
    services.extra["blobs"] = store
    return store
