"""Crashes on real NATS and PostgreSQL: the core killed between commit and ack and mid-stream, two core
processes on the same few customers, a poison message, and the relay killed mid-stream. Afterwards
the event store, the timeline and SB_EVENTS hold every touchpoint exactly once, in order.

`switchboard serve` uses the contract's subject names, so each test runs its own NATS server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid

import nats
import psycopg
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.interactions import ENCODER, Identity, Interaction
from projections.runner import ProjectionRunner
from services.core.processor import CoreProcessor
from services.platform.embedded import EmbeddedNats
from services.platform.streams import Names, ensure_streams
from tests.fixtures.interactions import T0, inbound
from tests.fixtures.roles import SWITCHBOARD, RoleProcesses

pytestmark = pytest.mark.e2e

NAMES = Names()


@pytest.fixture
def own_nats(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
def env(settings, own_nats, database_url, tmp_path):
    return {
        **os.environ,
        "SWITCHBOARD_NATS_URL": own_nats,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_MASTER_KEY": settings.master_key,
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHBOARD_LOG_FORMAT": "json",
        "SWITCHBOARD_CORE_ACK_WAIT_SECONDS": "2",
    }


@pytest.fixture
def processes(env, tmp_path):
    p = RoleProcesses(env, tmp_path)
    yield p
    p.stop_all()


def count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchone()[0]


async def until(predicate, timeout: float = 40.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


def traffic(n: int, customers: int = 4) -> list[Interaction]:
    """Few customers, many messages each, on several channels: the cores contend for the same streams."""
    out = []
    for k in range(n):
        c = k % customers
        channel, identity = [
            ("sms", Identity("phone", f"+44 7700 90{c:04d}")),
            ("whatsapp", Identity("phone", f"447700 90{c:04d}".replace(" ", ""))),
            ("email", Identity("email", f"Customer{c}@Example.org")),
            ("telegram", Identity("telegram", f"tg-{c}")),
        ][k % 4]
        out.append(inbound(channel, identity, k, f"crash-{k}"))
    return out


async def publish_paced(js, interactions: list[Interaction], per_second: float) -> None:
    for start in range(0, len(interactions), 20):
        chunk = interactions[start : start + 20]
        await asyncio.gather(
            *(
                js.publish(
                    NAMES.interaction_subject(i.channel, i.direction),
                    ENCODER.encode(i),
                    headers={"Nats-Msg-Id": str(i.id)},
                )
                for i in chunk
            )
        )
        await asyncio.sleep(len(chunk) / per_second)


def batch_log(proc) -> list[dict]:
    lines = [json.loads(line) for line in proc.log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "core_batch_committed"]


def assert_exactly_once(database_url: str, interactions: list[Interaction]) -> None:
    expected = {str(i.id) for i in interactions}
    with psycopg.connect(database_url) as conn:
        processed = [str(r[0]) for r in conn.execute("SELECT interaction_id FROM sb_processed")]
        touchpoints = [
            r[0]
            for r in conn.execute(
                "SELECT convert_from(state, 'UTF8')::jsonb -> 'd' ->> 'interaction_id' FROM sb_events "
                "WHERE topic = 'customer.InteractionRecorded'"
            )
        ]
        timeline = [str(r[0]) for r in conn.execute("SELECT interaction_id FROM proj_timeline")]
        streams = conn.execute(
            "SELECT originator_id, array_agg(originator_version ORDER BY originator_version) "
            "FROM sb_events GROUP BY originator_id"
        ).fetchall()
    assert sorted(processed) == sorted(expected), "sb_processed: every interaction once"
    assert sorted(touchpoints) == sorted(expected), "event store: every touchpoint once"
    assert sorted(timeline) == sorted(expected), "timeline: every touchpoint once"
    for stream, versions in streams:
        assert versions == list(range(1, len(versions) + 1)), f"stream {stream} has a gap or a fork"


async def test_core_killed_between_commit_and_ack_and_mid_stream_records_everything_once(
    own_nats, database_url, store, processes, tmp_path
):
    nc = await nats.connect(own_nats)
    js = nc.jetstream()
    await ensure_streams(js, NAMES, 3600)
    interactions = traffic(1200)
    poison = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="inbound",
        occurred_at=T0,
        text="?",
        identities=[Identity("phone", "not a phone")],
    )
    failpoint = tmp_path / "crash-after-commit"
    first = processes.start("core", SWITCHBOARD_FAILPOINT_FILE=str(failpoint))
    # The last 300 are held back until the SIGKILL below, so that kill lands mid-stream however fast the
    # cores drain the backlog on this machine.
    publishing = asyncio.create_task(publish_paced(js, interactions[:600] + [poison] + interactions[600:900], 300))
    processed = lambda: count(database_url, "SELECT count(*) FROM sb_processed")  # noqa: E731

    # 1. Exactly between commit and ack: the failpoint exits the first core there.
    await until(lambda: processed() >= 100, what="first core records")
    failpoint.touch()
    await until(lambda: first.poll() is not None, what="failpoint exit")
    assert first.returncode == 137 and not failpoint.exists()
    # 2. Two cores at once on the same four customers; one is SIGKILLed mid-stream.
    second, third = processes.start("core"), processes.start("core")
    at_kill = processed()
    await until(lambda: processed() >= min(at_kill + 250, 900), what="two cores record")
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert processed() < len(interactions), "the kill should land mid-stream"
    fourth = processes.start("core")
    await publishing
    await publish_paced(js, interactions[900:], 300)
    await until(lambda: processed() == len(interactions), what="every interaction recorded")
    await asyncio.sleep(2.5)  # past the ack wait: anything unacked has been redelivered and recognised

    ProjectionRunner(store).catch_up()
    assert_exactly_once(database_url, interactions)
    # The batch the first core committed and never acked came back and was recognised as done.
    later = [line for proc in (second, third, fourth) for line in batch_log(proc)]
    assert sum(line["duplicates"] for line in later) > 0
    # The poison message is a dead letter with its reason, listed and re-driven by the CLI.
    listed = subprocess.run(
        [SWITCHBOARD, "deadletters", "list"], env=processes.env, capture_output=True, text=True, check=True, timeout=60
    )
    [line] = listed.stdout.splitlines()
    seq, subject, deliveries, reason = line.split("\t")
    # Dead-lettered on the first delivery a core finished; one more per core killed while holding it.
    assert subject == "sb.interactions.sms.inbound" and 1 <= int(deliveries) <= 3 and "invalid verified phone" in reason
    redriven = subprocess.run(
        [SWITCHBOARD, "deadletters", "redrive", "--all"],
        env=processes.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "re-drove 1" in redriven.stdout

    async def dead_letters() -> list[str]:
        out = subprocess.run(
            [SWITCHBOARD, "deadletters", "list"],
            env=processes.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.splitlines()

    for _ in range(100):  # still poison: back on the dead-letter stream, under a new sequence
        lines = await dead_letters()
        if lines and lines[0].split("\t")[0] != seq:
            break
        await asyncio.sleep(0.1)
    assert len(lines) == 1 and lines[0].split("\t")[0] != seq and "invalid verified phone" in lines[0]
    assert count(database_url, "SELECT count(*) FROM sb_processed") == len(interactions)
    await nc.close()


async def test_relay_killed_mid_stream_publishes_every_event_once_in_order(own_nats, database_url, store, processes):
    CoreProcessor(store).process([(i, n) for n, i in enumerate(traffic(2500, customers=300), 1)])
    with psycopg.connect(database_url) as conn:
        log = conn.execute(
            "SELECT notification_id, convert_from(state, 'UTF8')::jsonb -> 'd' ->> 'id', topic "
            "FROM sb_events ORDER BY notification_id"
        ).fetchall()
    nc = await nats.connect(own_nats)
    js = nc.jetstream()
    await ensure_streams(js, NAMES, 3600)

    async def published() -> int:
        return (await js.stream_info(NAMES.events)).state.messages

    relay = processes.start("relay")
    deadline = asyncio.get_running_loop().time() + 40
    while await published() < 1500:
        assert asyncio.get_running_loop().time() < deadline, "relay publishes"
        await asyncio.sleep(0.02)
    relay.send_signal(signal.SIGKILL)
    relay.wait()
    assert await published() < len(log), "the kill should land mid-stream"
    processes.start("relay")
    while await published() < len(log):
        assert asyncio.get_running_loop().time() < deadline + 20, "relay resumes"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # anything sent twice would have landed by now

    sub = await js.pull_subscribe(
        NAMES.subject("sb.events.>"),
        stream=NAMES.events,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    messages = []
    while len(messages) < len(log):
        messages += await sub.fetch(1000, timeout=5)
    assert await published() == len(log)
    assert [(int(m.headers["Sb-Position"]), m.headers["Nats-Msg-Id"], m.subject) for m in messages] == [
        (position, event_id, f"sb.events.{topic}") for position, event_id, topic in log
    ]
    body = json.loads(messages[0].data)
    assert body["position"] == log[0][0] and body["type"] == log[0][2] and body["event"]["id"] == log[0][1]
    await nc.close()
