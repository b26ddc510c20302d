"""Pure parts of surviving outages: how long the core waits between attempts at a batch, how long the
pools wait between reconnection attempts, and `/ready`'s probes that never hang the answer."""

from __future__ import annotations

import asyncio

import pytest

from services.api import readiness
from services.core.consumer import OUTAGE_BACKOFF_MAX, outage_backoff
from services.platform.database import _CappedBackoff

pytestmark = pytest.mark.unit


def test_the_core_retries_a_batch_within_two_seconds_however_long_the_outage():
    waits = [outage_backoff(n) for n in range(1, 50)]
    assert waits[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(waits) == OUTAGE_BACKOFF_MAX == 2.0


def test_the_pools_reconnect_at_least_every_two_seconds_and_never_give_up():
    attempt = _CappedBackoff(timeout=float("inf"))
    now, delays = 0.0, []
    for _ in range(200):  # 200 failed attempts: far longer than a 15-minute outage
        attempt.update_delay(now)
        delays.append(attempt.delay)
        now += attempt.delay
        assert not attempt.time_to_give_up(now)
    assert 0.8 <= delays[0] <= 1.2  # psycopg_pool's first wait, with its jitter
    assert max(delays) == 2.0


class _Hung:
    """A check that never answers, like a query to a SIGSTOPped PostgreSQL; counts its starts."""

    def __init__(self):
        self.started = 0

    async def __call__(self) -> str:
        self.started += 1
        await asyncio.Event().wait()
        return "ok"


async def test_a_hung_probe_answers_timeout_and_is_not_started_again(monkeypatch):
    monkeypatch.setattr(readiness, "PROBE_TIMEOUT", 0.05)
    hung = _Hung()
    probe = readiness._Probe("postgres", hung)
    first = await probe.verdict()
    second = await probe.verdict()
    assert first.startswith("timeout")
    assert second.startswith("timeout")
    assert hung.started == 1  # one connection stuck on a hung server, not one per /ready
    probe.task.cancel()


async def test_a_failing_probe_answers_its_reason_in_one_line():
    async def refused() -> str:
        raise ConnectionRefusedError("connect failed\nsecond line")

    assert await readiness._Probe("nats", refused).verdict() == "ConnectionRefusedError: connect failed"


async def test_a_probe_that_answers_ok_is_asked_again_next_time():
    calls = []

    async def fine() -> str:
        calls.append(1)
        return "ok"

    probe = readiness._Probe("nats", fine)
    assert [await probe.verdict(), await probe.verdict()] == ["ok", "ok"]
    assert len(calls) == 2


def test_connections_notice_a_vanished_server_host_unless_the_string_says_otherwise():
    from services.platform.database import Database  # noqa: PLC0415

    default = Database.parse("postgresql://u@db.example/d").conninfo
    assert "tcp_user_timeout=30000" in default and "keepalives_idle=10" in default
    own = Database.parse("postgresql://u@db.example/d?tcp_user_timeout=5000&keepalives=0").conninfo
    assert "tcp_user_timeout=5000" in own and "keepalives=0" in own
