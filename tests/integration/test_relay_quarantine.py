"""An event the relay can never publish as it is is quarantined; the events after it are published.

The cause here is a real one: an event larger than the NATS server's `max_payload`. The server runs
with a small limit (as a deployment could); raising the limit and restarting the server is the fix,
after which `switchboard quarantine retry --relay` publishes the event.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import psycopg
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.interactions import Identity, Interaction
from services.bootstrap import Switchboard
from services.core.processor import CoreProcessor
from services.platform.embedded import EmbeddedNats, _stop, _wait_for_port, free_port
from services.platform.streams import Names
from services.relay.relay import TRACKING_NAME, relay_once, resume_state
from tests.fixtures.cli import switchboard

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SMALL_MAX_PAYLOAD = 64 * 1024


class NatsServer:
    """nats-server with JetStream on a fixed port and store, restartable with another max_payload."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self, max_payload: int | None = None) -> None:
        config = self.root / "nats.conf"
        config.write_text(f"max_payload: {max_payload}\n" if max_payload else "")
        self.proc = subprocess.Popen(
            [
                EmbeddedNats.binary(),
                "-c",
                str(config),
                "--jetstream",
                "--store_dir",
                str(self.root / "js"),
                "--addr",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port("127.0.0.1", self.port, self.proc, "nats-server")

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, 10.0, "nats-server")


@pytest.fixture
def small_nats(tmp_path):
    server = NatsServer(tmp_path)
    server.start(SMALL_MAX_PAYLOAD)
    yield server
    server.stop()


def _sms(n: int, text: str) -> Interaction:
    return Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="inbound",
        occurred_at=T0 + timedelta(seconds=n),
        identities=[Identity("phone", f"+44770091{n:04d}")],
        text=text,
        provider_message_id=secrets.token_hex(8),
    )


def _record(store, interactions: list[Interaction]) -> None:
    outcome = CoreProcessor(store).process([(i, None) for i in interactions])
    assert len(outcome.recorded) == len(interactions)


async def _relay_until_caught_up(sb: Switchboard) -> None:
    state = await resume_state(sb)
    end = sb.open_store().max_position()
    for _ in range(100):
        if state.position >= end:
            return
        await relay_once(sb, state)
    raise AssertionError(f"relay stuck at {state.position} of {end}")


async def _published(url: str) -> list[tuple[int, str]]:
    """(Sb-Position, Nats-Msg-Id) of every message on SB_EVENTS, in stream order."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    names = Names()
    total = (await js.stream_info(names.events)).state.messages
    sub = await js.pull_subscribe(
        names.subject("sb.events.>"),
        stream=names.events,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    messages = []
    while len(messages) < total:
        messages += await sub.fetch(total - len(messages), timeout=5)
    await nc.close()
    return [(int(m.headers["Sb-Position"]), m.headers["Nats-Msg-Id"]) for m in messages]


def _log(settings) -> list[tuple[int, str]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT notification_id, convert_from(state, 'UTF8')::jsonb -> 'd' ->> 'id' "
            "FROM sb_events ORDER BY notification_id"
        ).fetchall()


async def test_an_event_too_large_to_publish_is_quarantined_and_published_after_the_fix(store, settings, small_nats):
    settings = settings.with_(nats_url=small_nats.url)
    huge = _sms(3, "x" * (SMALL_MAX_PAYLOAD * 2))
    _record(store, [_sms(1, "first"), _sms(2, "second")])
    _record(store, [huge])
    _record(store, [_sms(4, "fourth"), _sms(5, "fifth")])
    log = _log(settings)
    with psycopg.connect(settings.database_url) as conn:
        ((bad_position,),) = conn.execute(
            "SELECT notification_id FROM sb_events WHERE length(state) > %s", (SMALL_MAX_PAYLOAD,)
        ).fetchall()

    sb = Switchboard(settings)
    await sb.connect_nats()
    try:
        await _relay_until_caught_up(sb)  # the old relay raised MaxPayloadError here, on every try
    finally:
        await sb.nc.close()

    # Everything but that event, in log order, chained (each publish expected the one before it).
    assert await _published(small_nats.url) == [(p, i) for p, i in log if p != bad_position]
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT consumer, position, event_type, reason FROM sb_quarantine").fetchall()
    assert len(rows) == 1
    consumer, position, event_type, reason = rows[0]
    assert (consumer, position, event_type) == (TRACKING_NAME, bad_position, "customer.InteractionRecorded")
    assert reason.startswith("Unpublishable") and f"max_payload of {SMALL_MAX_PAYLOAD}" in reason
    listed = switchboard(settings, "quarantine", "list")
    assert listed.stdout.decode().startswith(f"{TRACKING_NAME}\t{bad_position}\tcustomer.InteractionRecorded\t")

    # Still too large: the retry fails and keeps it.
    retried = switchboard(settings, "quarantine", "retry", "--relay")
    assert retried.returncode == 1 and b"1 still quarantined" in retried.stdout, retried.stderr.decode()

    # The fix: the server's limit raised (default 1 MB) and the server restarted on the same store.
    small_nats.stop()
    small_nats.start()
    retried = switchboard(settings, "quarantine", "retry", "--relay")
    assert retried.returncode == 0, (retried.stdout + retried.stderr).decode()
    assert sorted(await _published(small_nats.url)) == log
    assert switchboard(settings, "quarantine", "list").stdout == b""

    # A relay taking over afterwards goes on after the late message: new events follow, in order.
    _record(store, [_sms(6, "sixth")])
    sb = Switchboard(settings)
    await sb.connect_nats()
    try:
        await _relay_until_caught_up(sb)
    finally:
        await sb.nc.close()
    published = await _published(small_nats.url)
    assert published[-1] == _log(settings)[-1] and sorted(published) == _log(settings)
