"""SWITCHBOARD_NATS_CREDS on real servers: a `.creds` file (operator/JWT mode) and an nkey seed.

The core runs as `switchboard serve core` with nothing but a creds file to authenticate, and records
an interaction a connector published; `switchboard deadletters list` connects the same way. Without
the file, or with another account's, the server refuses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
import nkeys
import psycopg
import pytest

from events.interactions import ENCODER, Identity, Interaction, interaction_id
from services.platform.embedded import EmbeddedNats, _stop, _wait_for_port, free_port
from tests.fixtures.nats_jwt import OperatorModeNats, new_key

pytestmark = pytest.mark.integration

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def _env(settings, nats_url: str, creds: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_NATS_URL=nats_url,
        SWITCHBOARD_DATABASE_URL=settings.database_url,
        SWITCHBOARD_MASTER_KEY=settings.master_key,
        SWITCHBOARD_DATA_DIR=str(settings.data_dir),
        SWITCHBOARD_LOG_FORMAT="json",
    )
    if creds is not None:
        env["SWITCHBOARD_NATS_CREDS"] = str(creds)
    return env


def _processed(database_url: str) -> int:
    try:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT count(*) FROM sb_processed").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return 0


@pytest.fixture
def operator_nats(tmp_path):
    server = OperatorModeNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.mark.timeout(120)
async def test_the_core_runs_on_a_creds_file_alone(settings, operator_nats, tmp_path):
    core_creds = operator_nats.creds("core")
    core = subprocess.Popen(
        [SWITCHBOARD, "serve", "core"],
        env=_env(settings, operator_nats.url, core_creds),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "core.log", "ab"),
        cwd=tmp_path,
    )
    connector = await nats.connect(operator_nats.url, user_credentials=str(operator_nats.creds("connector")))
    try:
        js = connector.jetstream()
        deadline = time.monotonic() + 60
        while True:  # the core creates the stream when it is up
            try:
                await js.stream_info("SB_INTERACTIONS")
                break
            except nats.js.errors.NotFoundError:
                assert core.poll() is None, (tmp_path / "core.log").read_text()
                assert time.monotonic() < deadline, "the core never created its streams"
                await asyncio.sleep(0.2)
        provider_id = uuid.uuid4().hex
        message = Interaction(
            id=interaction_id("sms", provider_id),
            channel="sms",
            direction="inbound",
            occurred_at=datetime(2026, 3, 1, 9, tzinfo=UTC),
            identities=[Identity("phone", "+447700900321")],
            text="over a creds file",
            provider_message_id=provider_id,
        )
        await js.publish(
            "sb.interactions.sms.inbound", ENCODER.encode(message), headers={"Nats-Msg-Id": str(message.id)}
        )
        while _processed(settings.database_url) < 1:
            assert time.monotonic() < deadline, (tmp_path / "core.log").read_text()
            await asyncio.sleep(0.2)
        assert _processed(settings.database_url) == 1

        listed = await asyncio.to_thread(
            subprocess.run,
            [SWITCHBOARD, "deadletters", "list"],
            env=_env(settings, operator_nats.url, core_creds),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0 and "0 dead letter(s)" in listed.stderr, listed.stderr
    finally:
        await connector.close()
        core.send_signal(signal.SIGTERM)
        core.wait(30)


async def test_a_user_of_another_operator_is_refused(operator_nats, tmp_path):
    stranger = OperatorModeNats(tmp_path / "elsewhere")  # never started: only its keys sign the JWT
    with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
        await nats.connect(
            operator_nats.url,
            user_credentials=str(stranger.creds("intruder")),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            error_cb=_ignore,
        )


async def _ignore(exc: Exception) -> None:
    pass


def test_an_nkey_seed_file_works_for_the_verbs(settings, tmp_path):
    user = new_key(nkeys.PREFIX_BYTE_USER)
    seed = tmp_path / "switchboard.nk"
    seed.write_text(user.seed.decode() + "\n")
    port = free_port()
    conf = tmp_path / "nkey.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp_path / 'js'} }}\n"
        f"authorization {{ users: [ {{nkey: {user.public_key.decode()}}} ] }}\n"
    )
    proc = subprocess.Popen(
        [EmbeddedNats.binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port("127.0.0.1", port, proc, "nats-server (nkeys)")
        url = f"nats://127.0.0.1:{port}"
        ok = subprocess.run(
            [SWITCHBOARD, "deadletters", "list"],
            env=_env(settings, url, seed),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0 and "0 dead letter(s)" in ok.stderr, ok.stderr
        redriven = subprocess.run(
            [SWITCHBOARD, "deadletters", "redrive", "--all"],
            env=_env(settings, url, seed),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert redriven.returncode == 0 and "re-drove 0 message(s)" in redriven.stdout, redriven.stderr
    finally:
        _stop(proc, signal.SIGTERM, 10.0, "nats-server")


def test_an_unusable_creds_setting_is_one_line(settings, nats_url, tmp_path):
    junk = tmp_path / "junk.creds"
    junk.write_text("not a credential")
    for creds, message in ((junk, "neither a NATS .creds file"), (tmp_path / "missing.creds", "cannot read")):
        proc = subprocess.run(
            [SWITCHBOARD, "deadletters", "list"],
            env=_env(settings, nats_url, creds),
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr
