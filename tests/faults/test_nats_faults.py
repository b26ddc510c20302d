"""NATS restarted, and JetStream's store full, under load through the real gateway, every role running.

While NATS cannot store, the gateway answers 503 with Retry-After (at once, not after a publish
timeout) and `/ready` says why; the sender's retries are accepted once it can again. Afterwards every
accepted interaction is recorded exactly once, nothing is dead-lettered, and no process was restarted.
"""

from __future__ import annotations

import asyncio
import time

import nats
import nats.js.errors
import pytest

from tests.faults.support import (
    OwnServers,
    ReadyWatch,
    SmsLoad,
    all_recorded,
    assert_nothing_lost,
    fault_settings,
    running,
    settle,
    switchboard,
    wait_for,
)

pytestmark = pytest.mark.e2e


def _refused_since(load: SmsLoad, count: int) -> bool:
    return any(r.status == 503 and (r.retry_after or 0) > 0 for r in load.refusals[count:])


async def test_nats_restarted_under_load_answers_503_meanwhile_and_loses_nothing(own_servers, tmp_path):
    settings = fault_settings(own_servers, tmp_path / "data", core_ack_wait_seconds=2.0, max_deliveries=2)
    async with switchboard(settings) as server:
        load = SmsLoad(server.http_url, settings.twilio_auth_token)
        ready = ReadyWatch(server.http_url)
        async with running(load.run, ready.run):
            await wait_for(lambda: len(load.accepted) >= 30, 30, "traffic before the fault")
            await wait_for(lambda: all_recorded(server, settings.database_url, load.accepted[:20]), 30, "warm")

            refused_before = len(load.refusals)
            await asyncio.to_thread(own_servers.stop_nats)
            stopped_at = time.monotonic()
            await wait_for(lambda: _refused_since(load, refused_before), 20, "a 503 with Retry-After")
            await wait_for(lambda: ready.saw_wrong("nats"), 20, "/ready naming NATS")
            await wait_for(lambda: time.monotonic() - stopped_at >= 5, 10, "NATS down a while")
            await asyncio.to_thread(own_servers.start_nats)
            started_at = time.monotonic()
            accepted_before = len(load.accepted)
            await wait_for(lambda: len(load.accepted) > accepted_before + 10, 30, "traffic accepted again")
            await wait_for(
                lambda: all_recorded(server, settings.database_url, load.accepted), 240, "catching up after NATS"
            )
            print(
                f"\nNATS back: new traffic recorded and read side caught up {time.monotonic() - started_at:.1f}s later"
            )
        result = await settle(server, load)

    assert load.unexpected == []
    assert_nothing_lost(result)
    assert ready.failures == []
    refusal = next(r for r in load.refusals[refused_before:] if r.status == 503)
    assert refusal.body["error"] == "unavailable" and refusal.retry_after and refusal.retry_after > 0
    assert ready.saw_wrong("nats")["postgres"] == "ok"


@pytest.fixture
def small_store_servers(tmp_path):
    # JetStream may keep 32 MiB on this "disk"; the buckets and streams of fault_settings reserve 19
    # MiB of it, and SB_INTERACTIONS (no limit of its own here) shares the rest with another user.
    servers = OwnServers(tmp_path / "servers", nats_max_file_store=32 * 1024 * 1024).start()
    yield servers
    servers.stop()


async def _fill(url: str) -> int:
    """Another tenant fills JetStream's store: publishes until the server refuses; returns the bytes."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="FILLER", subjects=["filler.>"])
    chunk, stored = b"x" * (256 * 1024), 0
    try:
        while True:
            try:
                await js.publish("filler.data", chunk, timeout=5)
            except nats.js.errors.APIError:
                return stored
            stored += len(chunk)
    finally:
        await nc.close()


async def _free(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream("FILLER")
    finally:
        await nc.close()


async def test_jetstream_store_full_answers_503_and_accepts_the_retries_once_there_is_room(
    small_store_servers, tmp_path
):
    settings = fault_settings(small_store_servers, tmp_path / "data", nats_interactions_max_bytes=-1)
    async with switchboard(settings) as server:
        load = SmsLoad(server.http_url, settings.twilio_auth_token, per_second=15)
        ready = ReadyWatch(server.http_url)
        async with running(load.run, ready.run):
            await wait_for(lambda: len(load.accepted) >= 20, 30, "traffic before the fault")
            refused_before = len(load.refusals)
            filled = await _fill(small_store_servers.nats.url)
            assert filled > 0
            await wait_for(lambda: _refused_since(load, refused_before), 20, "a 503 with Retry-After")
            await wait_for(lambda: ready.saw_wrong("interactions"), 20, "/ready naming the full store")
            refused_during = len(load.refusals) - refused_before
            await _free(small_store_servers.nats.url)
            accepted_after = len(load.accepted)
            await wait_for(lambda: len(load.accepted) > accepted_after + 10, 30, "traffic accepted again")
        result = await settle(server, load)

    assert load.unexpected == []
    assert refused_during > 0
    assert_nothing_lost(result)
    body = ready.saw_wrong("interactions")
    assert "503" in body["interactions"] and body["nats"] == "ok" and body["postgres"] == "ok"
