"""`switchboard replay`, run as an operator runs it: JSON Lines on stdout, oldest first, with filters.

The log is written by the real core from interactions of three customers, two of whom are merged,
so `--customer` has absorbed customers and cases of both to find.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest

from events.interactions import Identity, Interaction
from services.bootstrap import Switchboard
from services.core.processor import CoreProcessor
from services.platform.database import with_database
from services.platform.settings import ensure_secrets, load_settings
from tests.fixtures.cli import switchboard

pytestmark = pytest.mark.integration

FIELDS = ["position", "stream_id", "stream_version", "type", "timestamp", "payload", "redacted"]
T0 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


def _message(channel: str, identities: list[Identity], text: str, minutes: int) -> Interaction:
    return Interaction(
        id=uuid.uuid4(),
        channel=channel,
        direction="inbound",
        occurred_at=T0 + timedelta(minutes=minutes),
        identities=identities,
        text=text,
        provider_message_id=secrets.token_hex(8),
    )


class Log(msgspec.Struct):
    settings: object
    ana: uuid.UUID
    bob: uuid.UUID
    carl: uuid.UUID
    first_batch_until: str
    lines: list[dict]
    raw: bytes


@pytest.fixture(scope="module")
def log(pg_admin_url, nats_url, tmp_path_factory) -> Log:
    name = "t_replay_" + secrets.token_hex(4)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = with_database(pg_admin_url, name)
    settings = ensure_secrets(
        load_settings(
            environ={}, data_dir=tmp_path_factory.mktemp("replay"), nats_url=nats_url, database_url=database_url
        )
    )
    sb = Switchboard(settings)
    sb.create_schema()
    core = CoreProcessor(sb.open_store())
    ana, bob = Identity("email", "ana@example.org"), Identity("phone", "+447700900111")
    carl = Identity("phone", "+447700900222")
    first = [
        _message("email", [ana], "hello from ana", 0),
        _message("sms", [bob], "text from bob", 1),
        _message("sms", [carl], "carl here", 2),
    ]
    core.process([(i, n) for n, i in enumerate(first, 1)])
    with psycopg.connect(database_url) as conn:
        until = conn.execute("SELECT max(recorded_at) FROM sb_events").fetchone()[0]
    # A connector that verified both of ana's and bob's identities: one person, so they merge.
    second = [
        _message("whatsapp", [bob, ana], "it's me, ana, on whatsapp", 10),
        _message("email", [ana], "ana again", 11),
        _message("sms", [carl], "carl again", 12),
    ]
    core.process([(i, n) for n, i in enumerate(second, 10)])
    sb.open_store().datastore.close()
    with psycopg.connect(database_url) as conn:
        ids = dict(conn.execute("SELECT survivor_id, absorbed_id FROM sb_customer_aliases").fetchall())
    assert len(ids) == 1
    result = switchboard(settings, "replay")
    assert result.returncode == 0, result.stderr.decode()
    lines = [msgspec.json.decode(line) for line in result.stdout.splitlines()]
    owners = {line["stream_id"]: line["payload"]["customer_id"] for line in lines}
    survivor, absorbed = next(iter(ids.items()))
    carl_id = next(uuid.UUID(owner) for owner in owners.values() if uuid.UUID(owner) not in (survivor, absorbed))
    return Log(settings, survivor, absorbed, carl_id, until.astimezone(UTC).isoformat(), lines, result.stdout)


def test_every_event_as_one_json_object_a_line_oldest_first(log: Log) -> None:
    assert log.raw.endswith(b"\n") and len(log.lines) == log.raw.count(b"\n")
    positions = [line["position"] for line in log.lines]
    assert positions == list(range(1, len(log.lines) + 1))
    for line in log.lines:
        assert list(line) == FIELDS
        assert isinstance(line["payload"], dict) and line["redacted"] is False
        uuid.UUID(line["stream_id"])
        assert line["timestamp"].endswith("Z")  # recorded at, in UTC
    timestamps = [datetime.fromisoformat(line["timestamp"]) for line in log.lines]
    assert timestamps == sorted(timestamps)
    # Per stream, versions count up from 1 without gaps.
    versions: dict[str, list[int]] = {}
    for line in log.lines:
        versions.setdefault(line["stream_id"], []).append(line["stream_version"])
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    types = {line["type"] for line in log.lines}
    assert {
        "customer.Registered",
        "customer.IdentityLinked",
        "customer.InteractionRecorded",
        "customer.Merged",
        "customer.Absorbed",
        "case.Opened",
        "case.MessageAdded",
    } <= types


def test_payloads_carry_the_decrypted_personal_fields(log: Log) -> None:
    texts = [line["payload"]["text"] for line in log.lines if line["type"] == "customer.InteractionRecorded"]
    assert sorted(texts) == sorted(
        ["hello from ana", "text from bob", "carl here", "it's me, ana, on whatsapp", "ana again", "carl again"]
    )
    linked = {line["payload"]["value"] for line in log.lines if line["type"] == "customer.IdentityLinked"}
    assert {"ana@example.org", "+447700900111", "+447700900222"} <= linked


def _streams_of(log: Log, customers: set[uuid.UUID]) -> set[str]:
    """Customer streams of these customers, and the case streams their CaseOpened names them on."""
    streams = {str(c) for c in customers}
    streams |= {
        line["stream_id"]
        for line in log.lines
        if line["type"] == "case.Opened" and uuid.UUID(line["payload"]["customer_id"]) in customers
    }
    return streams


@pytest.mark.parametrize("who", ["survivor", "absorbed"])
def test_customer_filter_takes_their_cases_and_the_customers_merged_into_them(log: Log, who: str) -> None:
    asked = log.ana if who == "survivor" else log.bob  # an absorbed id resolves to its survivor
    result = switchboard(log.settings, "replay", "--customer", str(asked))
    assert result.returncode == 0, result.stderr.decode()
    lines = [msgspec.json.decode(line) for line in result.stdout.splitlines()]
    streams = _streams_of(log, {log.ana, log.bob})
    assert len(streams) >= 5  # ana, bob, and at least ana's and bob's cases and the whatsapp one
    assert lines == [line for line in log.lines if line["stream_id"] in streams]
    assert str(log.carl) not in result.stdout.decode()
    assert {line["type"] for line in lines} >= {"customer.Merged", "customer.Absorbed", "case.Opened"}


def test_customer_filter_of_an_unmerged_customer(log: Log) -> None:
    result = switchboard(log.settings, "replay", "--customer", str(log.carl))
    lines = [msgspec.json.decode(line) for line in result.stdout.splitlines()]
    assert lines == [line for line in log.lines if line["stream_id"] in _streams_of(log, {log.carl})]
    assert result.stderr.decode().strip().endswith(f"{len(lines)} events")


def test_from_starts_at_that_position(log: Log) -> None:
    start = len(log.lines) // 2
    result = switchboard(log.settings, "replay", "--from", str(start))
    lines = [msgspec.json.decode(line) for line in result.stdout.splitlines()]
    assert lines == log.lines[start - 1 :] and lines[0]["position"] == start


def test_until_stops_after_that_time(log: Log) -> None:
    until = datetime.fromisoformat(log.first_batch_until)
    expected = [line for line in log.lines if datetime.fromisoformat(line["timestamp"]) <= until]
    assert 0 < len(expected) < len(log.lines)
    for spelled in (
        log.first_batch_until,
        until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        until.astimezone(datetime.now().astimezone().tzinfo).isoformat(),
    ):
        result = switchboard(log.settings, "replay", "--until", spelled)
        assert result.returncode == 0, result.stderr.decode()
        assert [msgspec.json.decode(line) for line in result.stdout.splitlines()] == expected, spelled


def test_filters_combine(log: Log) -> None:
    start = 10
    until = datetime.fromisoformat(log.first_batch_until)
    result = switchboard(
        log.settings, "replay", "--customer", str(log.ana), "--from", str(start), "--until", log.first_batch_until
    )
    lines = [msgspec.json.decode(line) for line in result.stdout.splitlines()]
    streams = _streams_of(log, {log.ana, log.bob})
    assert lines == [
        line
        for line in log.lines
        if line["stream_id"] in streams
        and line["position"] >= start
        and datetime.fromisoformat(line["timestamp"]) <= until
    ]


def test_bad_arguments_are_usage_errors(log: Log) -> None:
    for args in (["--from", "0"], ["--until", "yesterday"], ["--customer", "nobody"]):
        result = switchboard(log.settings, "replay", *args)
        assert result.returncode == 2 and not result.stdout, args
