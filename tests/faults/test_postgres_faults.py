"""PostgreSQL hung (SIGSTOP) and PostgreSQL restarted, under load, with every role running.

Each asserts: every interaction the gateway accepted is recorded exactly once and on the timeline,
nothing is dead-lettered or quarantined, `/ready` said what was wrong while it was, and the service
recovered by itself. And the mechanism behind "an outage of 8-15 minutes dead-letters nothing"
(the long version is `make soak`): JetStream delivered no interaction a second time, so the outage
counted towards no message's delivery limit. The ack wait is compressed to 2 s, so the code before
this change (which nak'ed a batch on every failed attempt, and let a held batch's ack wait expire)
redelivered within seconds and fails these tests; an outage of `SWITCHBOARD_FAULT_SECONDS` (12)
stands for minutes.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.faults.support import (
    ReadyWatch,
    SmsLoad,
    all_recorded,
    assert_nothing_lost,
    fault_settings,
    redeliveries,
    running,
    settle,
    switchboard,
    wait_for,
)

pytestmark = pytest.mark.e2e

OUTAGE = float(os.environ.get("SWITCHBOARD_FAULT_SECONDS", "12"))


def _settings(own_servers, tmp_path):
    return fault_settings(own_servers, tmp_path / "data", core_ack_wait_seconds=2.0, max_deliveries=2)


async def test_postgres_hung_under_load_loses_nothing_and_ready_names_it(own_servers, tmp_path):
    settings = _settings(own_servers, tmp_path)
    async with switchboard(settings) as server:
        load = SmsLoad(server.http_url, settings.twilio_auth_token)
        ready = ReadyWatch(server.http_url)
        async with running(load.run, ready.run):
            await wait_for(lambda: len(load.accepted) >= 30, 30, "traffic before the fault")
            await wait_for(lambda: all_recorded(server, settings.database_url, load.accepted[:20]), 30, "warm")

            own_servers.freeze_postgres()
            frozen_at, accepted_before = time.monotonic(), len(load.accepted)
            try:
                await wait_for(lambda: ready.saw("postgres", "timeout"), 20, "/ready naming the hung PostgreSQL")
                # The outage lasts OUTAGE seconds while traffic keeps arriving (the gateway needs NATS only).
                await wait_for(
                    lambda: time.monotonic() - frozen_at >= OUTAGE and len(load.accepted) > accepted_before + 20,
                    OUTAGE + 30,
                    "traffic accepted during the outage",
                )
            finally:
                own_servers.thaw_postgres()
            thawed_at = time.monotonic()
            await wait_for(
                lambda: all_recorded(server, settings.database_url, load.accepted), 240, "catching up after the thaw"
            )
            print(f"\nhung {OUTAGE:.0f}s: caught up {time.monotonic() - thawed_at:.1f}s after SIGCONT")
            await wait_for(lambda: ready.answers and ready.answers[-1][0] == 200, 20, "/ready well again")
        result = await settle(server, load)
        redelivered = await redeliveries(server)

    assert load.unexpected == []
    assert_nothing_lost(result)
    assert redelivered == 0, f"{redelivered} deliveries counted against interactions during the outage"
    assert ready.failures == [], f"/ready did not answer within 5 s: {ready.failures}"
    body = next(body for status, body in ready.answers if status == 503)
    assert body["status"] == "not_ready" and body["nats"] == "ok" and "timeout" in body["postgres"]


async def test_postgres_restarted_under_load_loses_nothing_and_catches_up(own_servers, tmp_path):
    settings = _settings(own_servers, tmp_path)
    async with switchboard(settings) as server:
        load = SmsLoad(server.http_url, settings.twilio_auth_token)
        ready = ReadyWatch(server.http_url)
        async with running(load.run, ready.run):
            await wait_for(lambda: len(load.accepted) >= 30, 30, "traffic before the fault")
            await wait_for(lambda: all_recorded(server, settings.database_url, load.accepted[:20]), 30, "warm")

            await asyncio.to_thread(own_servers.stop_postgres)
            stopped_at, accepted_before = time.monotonic(), len(load.accepted)
            await wait_for(lambda: ready.saw("postgres", "unreachable"), 20, "/ready naming the stopped PostgreSQL")
            await wait_for(
                lambda: time.monotonic() - stopped_at >= OUTAGE and len(load.accepted) > accepted_before + 20,
                OUTAGE + 30,
                "traffic accepted during the outage",
            )
            await asyncio.to_thread(own_servers.start_postgres)
            started_at = time.monotonic()
            await wait_for(
                lambda: all_recorded(server, settings.database_url, load.accepted), 240, "catching up after the restart"
            )
            print(f"\ndown {OUTAGE:.0f}s: caught up {time.monotonic() - started_at:.1f}s after the restart")
            await wait_for(lambda: ready.answers and ready.answers[-1][0] == 200, 20, "/ready well again")
        result = await settle(server, load)
        redelivered = await redeliveries(server)

    assert load.unexpected == []
    assert_nothing_lost(result)
    assert redelivered == 0, f"{redelivered} deliveries counted against interactions during the outage"
    assert ready.failures == []
    body = next(body for status, body in ready.answers if status == 503 and "unreachable" in body["postgres"])
    assert body["nats"] == "ok" and "password" not in body["postgres"]
