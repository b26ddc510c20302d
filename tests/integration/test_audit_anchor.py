"""`switchboard audit anchor` / `audit verify --anchor`: a log rolled back or truncated is found.

The chain alone cannot tell an older state of the database from the current one: an older head is
sealed too. These tests put back an older state the way someone with plain database access could
(rows deleted, the older sealed head restored, even the sequence reset so new rows reuse the
positions), and expect `audit verify` with the anchor kept outside the database to exit 1, naming
what is wrong, while the chain check alone still passes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import psycopg
import pytest

from events.interactions import Identity, Interaction
from services.bootstrap import Switchboard
from services.core.processor import CoreProcessor
from services.platform.eventstore import anchor as anchors
from services.platform.eventstore.keys import MasterKey
from services.relay.anchor import refresh_kv_anchor
from tests.fixtures.cli import switchboard

pytestmark = pytest.mark.integration


def _interactions(n: int, start: int) -> list[Interaction]:
    at = datetime(2024, 6, 1, tzinfo=UTC)
    return [
        Interaction(
            id=uuid.uuid4(),
            channel="sms",
            direction="inbound",
            occurred_at=at + timedelta(minutes=i),
            identities=[Identity("phone", f"+4477009{i:05d}")],
            text=f"message {i}",
            provider_message_id=secrets.token_hex(6),
        )
        for i in range(start, start + n)
    ]


class Log:
    """The event log of one test: written by the real core, tampered with by plain SQL."""

    def __init__(self, store, settings):
        self.core = CoreProcessor(store)
        self.settings = settings
        self.written = 0

    def write(self, n: int) -> int:
        """n customers' first messages; returns the position of the head afterwards."""
        self.core.process([(i, None) for i in _interactions(n, self.written)])
        self.written += n
        return self.head()[0]

    def sql(self, query: str, params=()) -> list:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def head(self) -> tuple:
        return self.sql("SELECT position, chain, seal FROM sb_events_head")[0]

    def restore(self, head: tuple, *, reset_sequence: bool = False) -> None:
        """Back to an older state: the newer rows gone, the older (genuinely sealed) head put back."""
        position = head[0]
        self.sql("DELETE FROM sb_events WHERE notification_id > %s", (position,))
        self.sql("UPDATE sb_events_head SET position = %s, chain = %s, seal = %s", head)
        if reset_sequence:  # as a restored backup would have it
            self.sql("SELECT setval(pg_get_serial_sequence('sb_events', 'notification_id'), %s)", (position,))


@pytest.fixture
def log(store, settings) -> Log:
    return Log(store, settings)


def _out(result) -> str:
    return (result.stdout + result.stderr).decode()


def test_an_intact_log_verifies_against_its_anchor(settings, log: Log, tmp_path: Path) -> None:
    head = log.write(4)
    anchor_file = tmp_path / "anchors" / "head.json"
    made = switchboard(settings, "audit", "anchor", "--file", str(anchor_file))
    assert made.returncode == 0, _out(made)
    assert f"anchored position {head}" in made.stdout.decode()
    stored = json.loads(anchor_file.read_text())
    assert stored["position"] == head and stored["chain"] == bytes(log.head()[1]).hex()
    log.write(3)  # the log grows after the anchor: still intact
    result = switchboard(settings, "audit", "verify", "--anchor", str(anchor_file))
    assert result.returncode == 0, _out(result)
    assert f"anchor: position {head}" in result.stdout.decode()
    assert "intact:" in result.stdout.decode()


def test_an_older_head_restored_is_found_only_with_the_anchor(settings, log: Log, tmp_path: Path) -> None:
    log.write(4)
    older = log.head()
    anchored = log.write(4)
    anchor_file = tmp_path / "head.json"
    assert switchboard(settings, "audit", "anchor", "--file", str(anchor_file)).returncode == 0
    log.restore(older)
    alone = switchboard(settings, "audit", "verify")
    assert alone.returncode == 0, _out(alone)  # the chain cannot tell: that is what the anchor is for
    result = switchboard(settings, "audit", "verify", "--anchor", str(anchor_file))
    assert result.returncode == 1
    assert f"log truncated: anchored position {anchored} missing" in _out(result)
    assert f"the log ends at position {older[0]}" in _out(result)
    # And the anchor refuses to move onto the rolled-back log: it stays as evidence.
    before = anchor_file.read_bytes()
    refused = switchboard(settings, "audit", "anchor", "--file", str(anchor_file))
    assert refused.returncode == 1 and "log truncated" in _out(refused)
    assert anchor_file.read_bytes() == before


def test_a_rollback_written_over_again_is_found(settings, log: Log, tmp_path: Path) -> None:
    """A backup restored (sequence included) and the service run on: the anchored position holds another link."""
    log.write(4)
    older = log.head()
    anchored = log.write(4)
    anchor_file = tmp_path / "head.json"
    assert switchboard(settings, "audit", "anchor", "--file", str(anchor_file)).returncode == 0
    log.restore(older, reset_sequence=True)
    log.core.forget(list(log.core._cache))  # a fresh core, as after a restore
    assert log.write(6) > anchored
    assert switchboard(settings, "audit", "verify").returncode == 0
    result = switchboard(settings, "audit", "verify", "--anchor", str(anchor_file))
    assert result.returncode == 1
    assert f"rolled back: position {anchored} holds another link" in _out(result)


def test_the_newest_rows_removed_are_found(settings, log: Log, tmp_path: Path) -> None:
    anchored = log.write(5)
    anchor_file = tmp_path / "head.json"
    assert switchboard(settings, "audit", "anchor", "--file", str(anchor_file)).returncode == 0
    log.sql("DELETE FROM sb_events WHERE notification_id > %s", (anchored - 4,))
    result = switchboard(settings, "audit", "verify", "--anchor", str(anchor_file))
    assert result.returncode == 1
    assert f"log truncated: anchored position {anchored} missing (the log ends at position {anchored - 4}" in _out(
        result
    )


def test_all_rows_removed_are_found(settings, log: Log, tmp_path: Path) -> None:
    anchored = log.write(3)
    anchor_file = tmp_path / "head.json"
    assert switchboard(settings, "audit", "anchor", "--file", str(anchor_file)).returncode == 0
    log.sql("DELETE FROM sb_events")
    log.sql("DELETE FROM sb_events_head")
    alone = switchboard(settings, "audit", "verify")
    assert alone.returncode == 0 and "intact: 0 events" in alone.stdout.decode()  # an empty log is a valid log
    result = switchboard(settings, "audit", "verify", "--anchor", str(anchor_file))
    assert result.returncode == 1
    assert f"log truncated: anchored position {anchored} missing (no events left" in _out(result)


@pytest.mark.parametrize("forgery", ["position", "chain", "signature", "garbage"])
def test_a_forged_anchor_file_exits_1(settings, log: Log, tmp_path: Path, forgery: str) -> None:
    log.write(4)
    anchor_file = tmp_path / "head.json"
    assert switchboard(settings, "audit", "anchor", "--file", str(anchor_file)).returncode == 0
    stored = json.loads(anchor_file.read_text())
    if forgery == "position":
        stored["position"] -= 1  # an attacker pointing the anchor at an older head
    elif forgery == "chain":
        stored["chain"] = bytes(log.sql("SELECT chain FROM sb_events WHERE notification_id = 1")[0][0]).hex()
    elif forgery == "signature":
        stored["signature"] = secrets.token_hex(32)
    anchor_file.write_text("{not json" if forgery == "garbage" else json.dumps(stored))
    result = switchboard(settings, "audit", "verify", "--anchor", str(anchor_file))
    assert result.returncode == 1
    expected = "anchor unreadable" if forgery == "garbage" else "anchor forged: its signature does not verify"
    assert expected in _out(result)
    # Nor is a forged anchor replaced by a fresh one: it is evidence too.
    forged = anchor_file.read_bytes()
    again = switchboard(settings, "audit", "anchor", "--file", str(anchor_file))
    assert again.returncode == 1 and expected in _out(again)
    assert anchor_file.read_bytes() == forged


def test_a_missing_anchor_file_exits_1(settings, log: Log, tmp_path: Path) -> None:
    log.write(1)
    result = switchboard(settings, "audit", "verify", "--anchor", str(tmp_path / "nowhere.json"))
    assert result.returncode == 1 and "anchor not found" in _out(result)


def test_an_anchor_in_nats_kv(settings, log: Log) -> None:
    bucket = f"T_ANCHOR_{secrets.token_hex(4).upper()}"
    anchored = log.write(4)
    try:
        made = switchboard(settings, "audit", "anchor", "--kv", "--kv-bucket", bucket)
        assert made.returncode == 0, _out(made)
        stored = asyncio.run(_kv_anchor(settings, bucket))
        assert stored.position == anchored
        ok = switchboard(settings, "audit", "verify", "--anchor-kv", "--kv-bucket", bucket)
        assert ok.returncode == 0, _out(ok)
        log.sql("DELETE FROM sb_events WHERE notification_id > %s", (anchored - 2,))
        bad = switchboard(settings, "audit", "verify", "--anchor-kv", "--kv-bucket", bucket)
        assert bad.returncode == 1 and f"anchored position {anchored} missing" in _out(bad)
    finally:
        asyncio.run(_delete_bucket(settings, bucket))


async def _kv_anchor(settings, bucket: str) -> anchors.Anchor:
    nc = await nats.connect(settings.nats_url)
    try:
        kv = await nc.jetstream().key_value(bucket)
        return anchors.decode((await kv.get(anchors.ANCHOR_KEY)).value, MasterKey(settings.master_key_bytes).anchor_key)
    finally:
        await nc.close()


async def _delete_bucket(settings, bucket: str) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        await nc.jetstream().delete_key_value(bucket)
    except Exception:  # noqa: BLE001 — never created
        pass
    finally:
        await nc.close()


async def test_the_relay_role_keeps_the_kv_anchor_fresh(settings, names, log: Log) -> None:
    """With the relay running, the KV anchor follows the head; after a rollback it stays where it was."""
    key = MasterKey(settings.master_key_bytes).anchor_key
    sb = Switchboard(settings.with_(audit_anchor_seconds=0.1), names)
    await sb.start(("relay",))
    try:
        kv = await anchors.open_bucket(sb.js, names.stream(anchors.ANCHOR_BUCKET))
        for _ in range(2):
            head = await asyncio.to_thread(log.write, 3)
            deadline = time.monotonic() + 20
            while True:
                found, _ = await anchors.read_kv(kv, key)
                if found is not None and found.position == head:
                    break
                assert time.monotonic() < deadline, f"the anchor did not reach {head}: {found}"
                await asyncio.sleep(0.05)
        await asyncio.to_thread(log.sql, "DELETE FROM sb_events WHERE notification_id > %s", (head - 3,))
        with pytest.raises(anchors.AnchorError, match=f"anchored position {head} missing"):
            await refresh_kv_anchor(sb, names.stream(anchors.ANCHOR_BUCKET), datetime.now(UTC))
        assert (await anchors.read_kv(kv, key))[0].position == head
    finally:
        await sb.stop()
