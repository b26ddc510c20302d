"""Back-pressure: when JetStream cannot store an interaction, the channel answers 503 with
Retry-After and the contract's error body, and nothing of it is recorded; once the core has
processed what is there and made room, the provider's retry is accepted."""

from __future__ import annotations

import asyncio
import json
import secrets
from urllib.parse import urlencode

import httpx
import nats
import pytest
import websockets
from twilio.request_validator import RequestValidator

from services.bootstrap import Switchboard
from services.platform.embedded import EmbeddedNats
from tests.conftest import drop_streams
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import published, running_server

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://switchboard.example.com"
PATH = "/channels/sms/twilio"


def _sms(body: str) -> dict:
    sid = "SM" + secrets.token_hex(16)
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": "+14155550100",
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }


async def _post(server, params: dict) -> httpx.Response:
    signature = RequestValidator(server.settings.twilio_auth_token).compute_signature(PUBLIC_URL + PATH, params)
    # The gateway waits up to 10 s for JetStream's ack before answering 503: wait longer than that.
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        return await client.post(
            PATH,
            content=urlencode(params),
            headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
        )


async def _stored_sids(server, sids: list[str]) -> set[str]:
    """Which of `sids` SB_INTERACTIONS holds, read as a connector would."""
    nc = await nats.connect(server.settings.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(server.sb.names.interactions)
        found = set()
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(server.sb.names.interactions, seq)
            except nats.js.errors.NotFoundError:
                continue
            found.update(sid for sid in sids if sid.encode() in msg.data)
        return found
    finally:
        await nc.close()


async def test_a_full_interactions_stream_answers_503_and_accepts_the_retry_once_there_is_room(settings, names):
    # Room for a handful of interactions, so the gateway alone (no core yet) fills it.
    settings = settings.with_(public_url=PUBLIC_URL, nats_interactions_max_bytes=8 * 1024)
    try:
        async with running_server(settings, names, roles=("gateway",)) as gateway:
            accepted, sent = [], []
            refused = None
            for n in range(200):
                params = _sms(f"Where is my order {n}? " + "x" * 200)
                sent.append(params["MessageSid"])
                response = await _post(gateway, params)
                if response.status_code != 200:
                    refused = (params, response)
                    break
                accepted.append(params["MessageSid"])
            assert refused is not None, "the stream never filled"
            params, response = refused
            assert response.status_code == 503
            assert response.json() == {"error": "unavailable", "detail": "could not store the message, retry later"}
            assert int(response.headers["retry-after"]) > 0
            # Nothing of it recorded: the stream holds exactly what was answered 200.
            assert await published(gateway) == len(accepted)
            assert await _stored_sids(gateway, sent) == set(accepted)
            # The provider's retry while still full: refused again, still nothing recorded.
            assert (await _post(gateway, params)).status_code == 503
            assert await published(gateway) == len(accepted)

            # A core processes what is there and purges it (services/core/room.py); Twilio retries.
            core = Switchboard(settings, names)
            await core.start(("core",))
            try:
                retried = await eventually(lambda: _post(gateway, params), lambda r: r.status_code == 200, timeout=90)
                assert retried.text.strip().endswith("<Response/>")
                assert params["MessageSid"] in await _stored_sids(gateway, sent)
            finally:
                await core.stop()
    finally:
        await drop_streams(settings, names)


async def test_a_chat_message_that_cannot_be_stored_gets_an_error_frame_and_no_ack(settings, names):
    settings = settings.with_(nats_interactions_max_bytes=4 * 1024)
    try:
        async with running_server(settings, names, roles=("gateway",)) as gateway:
            async with httpx.AsyncClient(base_url=gateway.http_url) as client:
                session = (await client.post("/channels/chat/sessions", json={"name": "Ada"})).json()
            url = gateway.http_url.replace("http://", "ws://") + f"/channels/chat/ws?token={session['token']}"
            async with websockets.connect(url) as ws:
                answer = {"type": "ack"}
                n = 0
                while answer["type"] == "ack" and n < 200:
                    n += 1
                    await ws.send(json.dumps({"type": "message", "text": "y" * 300, "client_id": str(n)}))
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 15))
                stored = await published(gateway)
                assert answer["type"] == "error" and answer["error"] == "unavailable"
                assert answer["client_id"] == str(n) and answer["retry_after"] > 0
                assert stored == n - 1  # every acked message, and not the refused one
    finally:
        await drop_streams(settings, names)


async def test_nats_down_answers_503_with_retry_after(settings, names, tmp_path):
    """NATS goes away under a running gateway: the publish times out, the webhook gets 503."""
    own = EmbeddedNats(tmp_path / "nats").start()
    try:
        ours = settings.with_(nats_url=own.url, public_url=PUBLIC_URL)
        async with running_server(ours, names, roles=("gateway",)) as gateway:
            assert (await _post(gateway, _sms("before"))).status_code == 200
            own.stop()
            response = await _post(gateway, _sms("while NATS is down"))
            assert response.status_code == 503
            assert response.json()["error"] == "unavailable"
            assert int(response.headers["retry-after"]) > 0
    finally:
        own.stop()
