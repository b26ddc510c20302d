"""Campaigns end to end: customers who wrote to us by SMS (signed Twilio webhooks), a segment of
them, one who sent STOP; a campaign to the segment skips that one and the fake Twilio (loopback)
receives exactly one message per other member, even though the campaigner process
(`switchboard serve campaigner`, PostgreSQL only) is killed mid-campaign, right after Twilio took a
message and before that was recorded, and started again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from services.relay.ledger import CRASH_ENV
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer, running_server, timeline_until
from tests.fixtures.roles import start_role, stop_role
from tests.fixtures.twilio import ACCOUNT_SID, OUR_NUMBER, PUBLIC_URL, FakeTwilio, post_signed, sms_params

pytestmark = pytest.mark.e2e

ROLES_HERE = ("gateway", "core", "projector", "api")
NUMBERS = ["+14155550131", "+14155550132", "+14155550133", "+14155550134"]
STOPPED = NUMBERS[1]


@pytest.fixture
async def twilio():
    fake = await FakeTwilio().start()
    yield fake
    await fake.stop()


@pytest.fixture
def campaign_settings(settings, twilio):
    return settings.with_(
        twilio_account_sid=ACCOUNT_SID,
        twilio_from=OUR_NUMBER,
        twilio_api_base=twilio.url,
        public_url=PUBLIC_URL,
        campaign_tick_seconds=0.2,
        campaign_rate_per_second="sms=10",
    )


def campaigner_env(s, tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": s.database_url,
        "SWITCHBOARD_MASTER_KEY": s.master_key,
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "campaigner-data"),
        "SWITCHBOARD_LOG_FORMAT": "json",
        "SWITCHBOARD_TWILIO_ACCOUNT_SID": s.twilio_account_sid,
        "SWITCHBOARD_TWILIO_AUTH_TOKEN": s.twilio_auth_token,
        "SWITCHBOARD_TWILIO_FROM": s.twilio_from,
        "SWITCHBOARD_TWILIO_API_BASE": s.twilio_api_base,
        "SWITCHBOARD_PUBLIC_URL": s.public_url,
        "SWITCHBOARD_CAMPAIGN_TICK_SECONDS": "0.2",
        "SWITCHBOARD_CAMPAIGN_RATE_PER_SECOND": "sms=10",
    }


def start_campaigner(env: dict, log_path: Path, **extra: str) -> subprocess.Popen:
    return start_role(env, log_path, "campaigner", **extra)


stop = stop_role


async def revoke_on_stop(srv, customer_id: str) -> None:
    """The STOP the customer sent (through the real Twilio webhook) is recorded by the core as a
    withdrawal of marketing by SMS: wait until the log has it (the campaigner reads the log)."""
    store = srv.sb.open_store()

    async def withdrawn():
        loaded = await asyncio.to_thread(store.load, uuid.UUID(customer_id))
        return any(type(e).__name__ == "ConsentChanged" and not e.granted and e.channel == "sms" for e in loaded)

    assert await eventually(withdrawn)


async def test_a_campaign_skips_who_said_stop_and_sends_once_to_each_other_member_across_a_crash(
    campaign_settings, names, twilio, admin_headers, tmp_path
):
    env = campaigner_env(campaign_settings, tmp_path)
    log_path = tmp_path / "campaigner.log"
    proc = start_campaigner(env, log_path, **{CRASH_ENV: "after_provider"})
    try:
        async with (
            running_server(campaign_settings, names, ROLES_HERE) as srv,
            httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api,
        ):
            token = campaign_settings.twilio_auth_token
            ids = {}
            for number in NUMBERS:
                response = await post_signed(srv.http_url, token, sms_params(number, "Hello, is my order shipped?"))
                assert response.status_code == 200
                ids[number] = (await customer(api, "phone", number))["id"]
            assert (await post_signed(srv.http_url, token, sms_params(STOPPED, "STOP"))).status_code == 200
            await timeline_until(api, ids[STOPPED], 2)
            await revoke_on_stop(srv, ids[STOPPED])

            segment = await api.post(
                "/api/v1/segments",
                json={
                    "name": "sms customers",
                    "filter": {"all": [{"field": "channels", "op": "contains", "value": "sms"}]},
                },
            )
            assert segment.status_code == 201, segment.text
            segment_id = segment.json()["id"]

            async def members():
                response = await api.get(f"/api/v1/segments/{segment_id}/members")
                return response.json()["items"] if response.status_code == 200 else []  # the read model lags

            await eventually(members, lambda items: len(items) == len(NUMBERS))

            bad = await api.post(
                "/api/v1/campaigns", json={"name": "x", "segment_id": segment_id, "channel": "fax", "text": "hi"}
            )
            assert bad.status_code == 400 and bad.json()["error"]
            created = await api.post(
                "/api/v1/campaigns",
                json={"name": "Spring sale", "segment_id": segment_id, "channel": "sms", "text": "20% off this week"},
            )
            assert created.status_code == 201, created.text
            campaign = created.json()
            assert campaign["status"] == "draft" and campaign["position"] > 0
            started = await api.post(f"/api/v1/campaigns/{campaign['id']}/start")
            assert started.status_code == 200 and started.json()["status"] == "running"

            # The first send reaches Twilio; the campaigner dies before recording it.
            deadline = asyncio.get_running_loop().time() + 60
            while proc.poll() is None:
                assert asyncio.get_running_loop().time() < deadline, "the campaigner did not reach the crash point"
                await asyncio.sleep(0.05)
            assert proc.returncode == 70, log_path.read_text()[-3000:]
            assert len(twilio.sends()) == 1

            proc = start_campaigner(env, log_path)

            async def view():
                return (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()

            done = await eventually(view, lambda v: v["status"] == "completed", timeout=60)
            assert done["counts"] == {
                "targeted": 4,
                "skipped_no_consent": 1,
                "skipped_no_address": 0,
                "sent": 3,
                "delivered": 0,
                "failed": 0,
                "replied": 0,
            }
            sent_to = sorted(r.form()["To"] for r in twilio.sends())
            assert sent_to == sorted(n for n in NUMBERS if n != STOPPED)  # exactly one each, none to STOP
            assert all(r.form()["Body"] == "20% off this week" for r in twilio.sends())
            with psycopg.connect(campaign_settings.database_url) as conn:
                rows = conn.execute(
                    "SELECT state, count(*) FROM sb_outbound_ledger WHERE key LIKE %s GROUP BY state",
                    (f"campaign:{campaign['id']}:%",),
                ).fetchall()
            assert rows == [("sent", 3)]

            listed = (await api.get("/api/v1/campaigns")).json()["items"]
            assert [c["id"] for c in listed] == [campaign["id"]]
            again = await api.post(f"/api/v1/campaigns/{campaign['id']}/start")
            assert again.status_code == 409 and again.json()["error"]  # completed: a conflict
    finally:
        stop(proc)
