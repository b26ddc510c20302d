"""SB_BLOBS on a real JetStream: the configured size limits hold, and a refused object leaves nothing."""

from __future__ import annotations

import os

import nats
import pytest
from nats.js.api import ObjectStoreConfig, StorageType

from channels.blobs import BUCKET, BlobStore, BlobStoreFull, BlobTooLarge

pytestmark = pytest.mark.integration


@pytest.fixture
async def js(nats_url):
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def _state(js, names):
    info = await js.stream_info(f"OBJ_{names.stream(BUCKET)}")
    return info.config.max_bytes, info.state.messages, info.state.bytes


async def test_a_bucket_made_without_a_limit_gets_the_configured_one(js, names):
    await js.create_object_store(names.stream(BUCKET), ObjectStoreConfig(storage=StorageType.FILE))
    assert (await _state(js, names))[0] == -1
    await BlobStore.open(js, names, max_bytes=512 * 1024)
    assert (await _state(js, names))[0] == 512 * 1024


async def test_an_object_over_the_per_object_limit_is_refused_before_writing(js, names):
    store = await BlobStore.open(js, names, max_bytes=512 * 1024, max_object_bytes=1000)
    with pytest.raises(BlobTooLarge):
        await store.put(b"x" * 1001)
    assert (await _state(js, names))[1:] == (0, 0)
    await store.put(b"x" * 1000)


async def test_jetstream_refusing_a_write_past_the_limit_is_store_full_and_nothing_stays(js, names):
    """The race the look-before-writing cannot close: another writer took the room meanwhile."""
    opened = await BlobStore.open(js, names, max_bytes=100_000)
    kept = await opened.put(os.urandom(60_000))
    before = await _state(js, names)
    unchecked = BlobStore(opened._obs)  # no look before writing: JetStream itself refuses
    with pytest.raises(BlobStoreFull):
        await unchecked.put(os.urandom(60_000))
    assert await _state(js, names) == before
    assert await opened.get(kept) is not None
