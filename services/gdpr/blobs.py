"""Attachment bytes in the NATS object store: the erased customer's, and orphans past the retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec

from channels.blobs import BLOB_PREFIX
from channels.blobs import BUCKET as BLOB_BUCKET
from events.interactions import INTERACTION_DECODER
from services.platform.eventstore.store import EventStore
from services.platform.streams import Names


async def delete_blobs(js, names: Names, blobs: set[str]) -> int:
    from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError  # noqa: PLC0415

    if not blobs:
        return 0
    try:
        obs = await js.object_store(names.stream(BLOB_BUCKET))
    except (BucketNotFoundError, NotFoundError):
        return 0
    deleted = 0
    for sha256 in sorted(blobs):
        try:
            await obs.delete(sha256)
            deleted += 1
        except (ObjectNotFoundError, NotFoundError):
            pass
    return deleted


def blob_refs(data: bytes) -> set[str]:
    try:
        interaction = INTERACTION_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return set()
    return {a.ref[len(BLOB_PREFIX) :] for a in interaction.attachments if a.ref and a.ref.startswith(BLOB_PREFIX)}


def shared_blobs(store: EventStore, blobs: set[str]) -> set[str]:
    """Those of these attachments still on someone's timeline (the same file sent by another customer)."""
    if not blobs:
        return set()
    with store.datastore.transaction(commit=False) as curs:
        curs.execute(
            "SELECT DISTINCT a->>'sha256' AS sha256 FROM proj_timeline, jsonb_array_elements(attachments) a "
            "WHERE a->>'sha256' = ANY(%s)",
            (sorted(blobs),),
        )
        return {r["sha256"] for r in curs.fetchall()}


async def sweep_orphan_blobs(
    js, names: Names, store: EventStore, retention_seconds: int, now: datetime | None = None
) -> int:
    """Attachments on nobody's timeline and older than the NATS retention: nothing can refer to them any more.

    An attachment is stored by the gateway before its interaction is published; if that interaction
    was never recorded (a publish that failed, a dead letter that expired), its bytes stay behind
    with no owner to erase them with. Once older than the streams' retention, no interaction or dead
    letter that names it is left, and no timeline row refers to it: it is deleted.
    """
    from nats.js.errors import BucketNotFoundError, NotFoundError  # noqa: PLC0415

    try:
        obs = await js.object_store(names.stream(BLOB_BUCKET))
        infos = await obs.list()
    except (BucketNotFoundError, NotFoundError):
        return 0
    cutoff = (now or datetime.now(UTC)).timestamp() - retention_seconds
    old = set()
    for info in infos:
        if info.deleted or not info.name:
            continue
        try:
            mtime = datetime.fromisoformat(info.mtime.replace("Z", "+00:00")).timestamp() if info.mtime else None
        except ValueError:
            mtime = None
        if mtime is not None and mtime < cutoff:
            old.add(info.name)
    orphans = old - await asyncio.to_thread(shared_blobs, store, old)
    return await delete_blobs(js, names, orphans)
