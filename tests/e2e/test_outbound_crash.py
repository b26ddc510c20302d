"""Replies sent exactly once across a crash: the relay process (`switchboard serve relay`) is killed
between Twilio's answer and our record of it, then started again. The fake Twilio (loopback) got one
send; the restarted relay asked Twilio what it had sent, found the reply and recorded it once.

The gateway, core, projector and API run in this process; the relay in a subprocess of its own,
with the test hook `SWITCHBOARD_TEST_OUTBOUND_CRASH_AT=after_provider` (ends the process exactly at
that point) the first time only. `switchboard serve` uses the contract's subject names, so the test
runs its own NATS server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest

from services.platform.embedded import EmbeddedNats
from services.platform.streams import Names
from services.relay.ledger import CRASH_ENV
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import case_event_until, case_events, customer, running_server, timeline_until
from tests.fixtures.roles import start_role, stop_role
from tests.fixtures.twilio import ACCOUNT_SID, OUR_NUMBER, PUBLIC_URL, FakeTwilio, post_signed, sms_params

pytestmark = pytest.mark.e2e

ROLES_HERE = ("gateway", "core", "projector", "api")


@pytest.fixture
def own_nats(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
async def twilio():
    fake = await FakeTwilio().start()
    yield fake
    await fake.stop()


@pytest.fixture
def crash_settings(settings, own_nats, twilio):
    return settings.with_(
        nats_url=own_nats,
        twilio_account_sid=ACCOUNT_SID,
        twilio_from=OUR_NUMBER,
        twilio_api_base=twilio.url,
        public_url=PUBLIC_URL,
        outbound_retry_base_seconds=0.05,
        outbound_ack_wait_seconds=2.0,
    )


def relay_env(s, tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHBOARD_NATS_URL": s.nats_url,
        "SWITCHBOARD_DATABASE_URL": s.database_url,
        "SWITCHBOARD_MASTER_KEY": s.master_key,
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "relay-data"),
        "SWITCHBOARD_LOG_FORMAT": "json",
        "SWITCHBOARD_TWILIO_ACCOUNT_SID": s.twilio_account_sid,
        "SWITCHBOARD_TWILIO_AUTH_TOKEN": s.twilio_auth_token,
        "SWITCHBOARD_TWILIO_FROM": s.twilio_from,
        "SWITCHBOARD_TWILIO_API_BASE": s.twilio_api_base,
        "SWITCHBOARD_PUBLIC_URL": s.public_url,
        "SWITCHBOARD_OUTBOUND_RETRY_BASE_SECONDS": "0.05",
        "SWITCHBOARD_OUTBOUND_ACK_WAIT_SECONDS": "2",
    }


def start_relay(env: dict, log_path: Path, **extra: str) -> subprocess.Popen:
    return start_role(env, log_path, "relay", **extra)


def ledger_rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT key, state, attempts FROM sb_outbound_ledger ORDER BY key").fetchall()


async def test_a_relay_killed_between_twilios_answer_and_our_record_sends_the_reply_once(
    crash_settings, twilio, admin_headers, tmp_path
):
    env = relay_env(crash_settings, tmp_path)
    log_path = tmp_path / "relay.log"
    relay = start_relay(env, log_path, **{CRASH_ENV: "after_provider"})
    try:
        async with (
            running_server(crash_settings, Names(), ROLES_HERE) as srv,
            httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api,
        ):
            token = crash_settings.twilio_auth_token
            response = await post_signed(srv.http_url, token, sms_params("+14155550123", "Where is my parcel?"))
            assert response.status_code == 200
            found = await customer(api, "phone", "+14155550123")
            [item] = await timeline_until(api, found["id"], 1)
            case_id = item["case_id"]
            response = await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "It left the depot today."})
            assert response.status_code == 200
            reply_id = response.json()["reply_id"]

            # Twilio took the message; the relay died before recording that.
            deadline = asyncio.get_running_loop().time() + 60
            while relay.poll() is None:
                assert asyncio.get_running_loop().time() < deadline, "the relay did not reach the crash point"
                await asyncio.sleep(0.05)
            assert relay.returncode == 70, log_path.read_text()[-2000:]
            assert len(twilio.sends()) == 1
            assert ledger_rows(crash_settings.database_url) == [(f"reply:{reply_id}", "sending", 1)]
            assert not [e for e in await case_events(srv, case_id) if e.NAME in ("case.ReplySent", "case.ReplyFailed")]

            # Started again: the reply comes back from NATS, the attempt is in doubt, Twilio is asked.
            relay = start_relay(env, log_path)
            sent = await case_event_until(srv, case_id, "case.ReplySent", timeout=60)
            assert sent.provider_message_id == twilio.messages[0]["sid"]
            assert len(twilio.sends()) == 1 and len(twilio.lookups()) >= 1
            assert ledger_rows(crash_settings.database_url) == [(f"reply:{reply_id}", "sent", 1)]

            async def view():
                return (await api.get(f"/api/v1/cases/{case_id}")).json()["messages"]

            messages = await eventually(
                view, lambda m: any((x.get("delivery") or {}).get("status") == "sent" for x in m)
            )
            outbound = [m for m in messages if m["direction"] == "outbound"]
            assert [(m["text"], m["delivery"]["status"]) for m in outbound] == [("It left the depot today.", "sent")]
            events = [e.NAME for e in await case_events(srv, case_id)]
            assert events.count("case.ReplySent") == 1 and "case.ReplyFailed" not in events
            assert len(twilio.sends()) == 1
    finally:
        stop_role(relay)
