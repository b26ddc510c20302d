"""JetStream limits on a real server: each stream's size limit and discard policy, an operator's
changes kept across a restart of the service, and the embedded server's sync setting."""

from __future__ import annotations

import dataclasses

import nats
import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from services.bootstrap import Switchboard
from services.cli.common import embedded_servers
from services.platform.streams import StreamLimits, ensure_streams
from tests.conftest import drop_streams

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def limited(settings):
    return settings.with_(
        nats_interactions_max_bytes=1 * MiB, nats_events_max_bytes=2 * MiB, nats_deadletter_max_bytes=3 * MiB
    )


async def _start_and_stop(settings, names) -> None:
    """What every start of the service does to the streams (Switchboard.connect_nats), then stops."""
    sb = Switchboard(settings, names)
    await sb.connect_nats()
    await sb.close_nats()


async def _config(settings, name: str) -> StreamConfig:
    nc = await nats.connect(settings.nats_url)
    try:
        return (await nc.jetstream().stream_info(name)).config
    finally:
        await nc.close()


async def test_the_service_makes_each_stream_with_its_limit_and_discard_policy(limited, names):
    try:
        await _start_and_stop(limited, names)
        interactions = await _config(limited, names.interactions)
        events = await _config(limited, names.events)
        deadletters = await _config(limited, names.deadletters)
        assert (interactions.max_bytes, interactions.discard) == (1 * MiB, DiscardPolicy.NEW)
        assert (events.max_bytes, events.discard) == (2 * MiB, DiscardPolicy.OLD)
        assert events.max_age == limited.nats_retention_seconds
        assert (deadletters.max_bytes, deadletters.discard, deadletters.max_age) == (3 * MiB, DiscardPolicy.NEW, 0)
    finally:
        await drop_streams(limited, names)


async def test_an_operators_limits_survive_a_restart_and_untouched_ones_follow_the_settings(limited, names):
    try:
        await _start_and_stop(limited, names)
        nc = await nats.connect(limited.nats_url)
        try:
            js = nc.jetstream()
            # The operator, with `nats stream edit`: a shorter age (and duplicate window, which may not be
            # longer), a larger size, and a subject of theirs.
            config = (await js.stream_info(names.interactions)).config
            subjects = [*config.subjects, names.subject("partner.>")]
            await js.update_stream(
                dataclasses.replace(
                    config, max_age=1800.0, duplicate_window=600.0, max_bytes=5 * MiB, subjects=subjects
                )
            )
        finally:
            await nc.close()

        # A restart, with a larger SB_EVENTS limit in the settings this time.
        await _start_and_stop(limited.with_(nats_events_max_bytes=4 * MiB), names)

        interactions = await _config(limited, names.interactions)
        assert (interactions.max_age, interactions.duplicate_window, interactions.max_bytes) == (1800.0, 600.0, 5 * MiB)
        assert names.subject("partner.>") in interactions.subjects
        assert interactions.discard == DiscardPolicy.NEW
        assert (await _config(limited, names.events)).max_bytes == 4 * MiB
    finally:
        await drop_streams(limited, names)


async def test_a_stream_made_before_the_limits_gets_one_and_refuses_rather_than_drops(settings, names):
    try:
        nc = await nats.connect(settings.nats_url)
        try:
            # As an older Switchboard made it: no size limit, discard old, no record of ours.
            await nc.jetstream().add_stream(
                StreamConfig(
                    name=names.interactions,
                    subjects=[names.subject("sb.interactions.>")],
                    discard=DiscardPolicy.OLD,
                    max_age=7200.0,
                )
            )
            await ensure_streams(nc.jetstream(), names, 3600, limits=StreamLimits(interactions_max_bytes=1 * MiB))
        finally:
            await nc.close()
        interactions = await _config(settings, names.interactions)
        assert (interactions.max_bytes, interactions.discard) == (1 * MiB, DiscardPolicy.NEW)
        assert interactions.max_age == 7200.0  # the rest as it was
    finally:
        await drop_streams(settings, names)


@pytest.mark.parametrize("sync", ["always", "1s"])
async def test_the_sync_setting_reaches_the_embedded_server(settings, tmp_path, sync):
    """`switchboard up` (the CLI's embedded_servers) writes it into the server's configuration, and a
    server running on that configuration stores and acknowledges."""
    ours = settings.with_(data_dir=tmp_path / "data", nats_url=None, nats_sync_interval=sync)
    with embedded_servers(ours) as running:
        conf = (ours.data_dir.resolve() / "nats" / "nats-server.conf").read_text()
        assert f'sync_interval: "{sync}"' in conf
        log = (ours.data_dir.resolve() / "nats" / "nats-server.log").read_text()
        assert "Using configuration file: " + str(ours.data_dir.resolve() / "nats" / "nats-server.conf") in log
        nc = await nats.connect(running.nats_url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="SYNCED", subjects=["synced.>"])
            assert (await js.publish("synced.x", b"kept")).seq == 1
        finally:
            await nc.close()


def test_a_wrong_sync_setting_stops_the_start(settings, tmp_path):
    ours = settings.with_(data_dir=tmp_path / "data", nats_url=None, nats_sync_interval="sometimes")
    with pytest.raises(ValueError, match="nats_sync_interval"):
        with embedded_servers(ours):
            pass
