"""WhatsApp Cloud API, Messenger, Instagram and Telegram as their platforms speak them: the Meta
handshake, signed webhooks (real payloads from tests/fixtures/social), the Telegram secret token,
and replies out through a fake Graph API and a fake Bot API on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.fixtures.providers import FakeHTTPProvider, Recorded, eventually
from tests.fixtures.recorded import (
    case_event_until,
    customer,
    published,
    running_server,
    stored_events,
    timeline,
    timeline_until,
)

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parents[1] / "fixtures" / "social"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
BOT_TOKEN = "123456:test-bot-token"
ACCESS_TOKEN = "EAAG-test-access-token"
MAX_BODY = 64 * 1024


def _graph(request: Recorded) -> tuple[int, dict]:
    body = request.json()
    if body.get("messaging_product") == "whatsapp":
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": body["to"], "wa_id": body["to"]}],
            "messages": [{"id": "wamid.OUT" + secrets.token_hex(8)}],
        }
    return 200, {"recipient_id": body["recipient"]["id"], "message_id": "m_" + secrets.token_hex(8)}


def _telegram(request: Recorded) -> tuple[int, dict]:
    body = request.json()
    return 200, {
        "ok": True,
        "result": {
            "message_id": 4242,
            "date": 1749417500,
            "text": body["text"],
            "chat": {"id": body["chat_id"], "type": "private"},
        },
    }


@pytest.fixture
async def graph():
    fake = await FakeHTTPProvider(default=_graph).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot_api():
    fake = await FakeHTTPProvider(default=_telegram).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def social_server(settings, names, graph, bot_api):
    settings = settings.with_(
        meta_access_token=ACCESS_TOKEN,
        meta_graph_base=graph.url + "/v21.0",
        telegram_bot_token=BOT_TOKEN,
        telegram_api_base=bot_api.url,
        outbound_retry_base_seconds=0.05,
        max_body_bytes=MAX_BODY,
    )
    async with running_server(settings, names) as srv:
        yield srv


@pytest.fixture
async def api(social_server, admin_headers):
    async with httpx.AsyncClient(base_url=social_server.http_url, headers=admin_headers) as client:
        yield client


def _sign(secret: str, body: bytes) -> str:
    """What Meta sends: sha256= and the hex HMAC-SHA256 of the raw body, keyed with the app secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _meta(server, body: bytes, *, signature: str | None = None, content_type: str = "application/json"):
    headers = {"content-type": content_type}
    signature = _sign(server.settings.meta_app_secret, body) if signature is None else signature
    if signature:
        headers["x-hub-signature-256"] = signature
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        return await client.post("/channels/social/meta", content=body, headers=headers)


async def _telegram_update(server, body: bytes, *, secret: str | None = None, content_type: str = "application/json"):
    headers = {"content-type": content_type}
    secret = server.settings.telegram_secret_token if secret is None else secret
    if secret:
        headers["x-telegram-bot-api-secret-token"] = secret
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        return await client.post("/channels/social/telegram", content=body, headers=headers)


async def _deliver_fixture(server, name: str) -> httpx.Response:
    body = (FIXTURES / name).read_bytes()
    if name.startswith("telegram"):
        return await _telegram_update(server, body)
    return await _meta(server, body)


# -- handshake -----------------------------------------------------------------------------------


async def test_the_meta_verification_handshake(social_server):
    token = social_server.settings.meta_verify_token
    async with httpx.AsyncClient(base_url=social_server.http_url) as client:
        ok = await client.get(
            "/channels/social/meta",
            params={"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"},
        )
        wrong = await client.get(
            "/channels/social/meta", params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"}
        )
        no_mode = await client.get("/channels/social/meta", params={"hub.verify_token": token, "hub.challenge": "1"})
    assert ok.status_code == 200 and ok.text == "1158201444" and ok.headers["content-type"].startswith("text/plain")
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    assert no_mode.status_code == 400 and no_mode.json()["error"] == "malformed"


# -- inbound -------------------------------------------------------------------------------------

SAMPLE = [
    "whatsapp_text.json",
    "whatsapp_image.json",
    "whatsapp_location.json",
    "whatsapp_button_reply.json",
    "whatsapp_list_reply.json",
    "whatsapp_unsupported.json",
    "messenger_text.json",
    "messenger_attachment.json",
    "instagram_dm.json",
    "telegram_text.json",
    "telegram_photo.json",
    "telegram_edited.json",
]
NOTHING_FOR_THE_TIMELINE = [
    "whatsapp_template_status_update.json",
    "messenger_echo.json",
    "telegram_callback_query.json",
    "whatsapp_status.json",
]


async def test_real_provider_payloads_reach_the_timeline_as_expected(social_server, api):
    for name in SAMPLE + NOTHING_FOR_THE_TIMELINE:
        response = await _deliver_fixture(social_server, name)
        assert response.status_code == 200, (name, response.text)
        assert response.json() == {"received": len(EXPECTED[name])}
    wanted: dict[tuple[str, str], list[tuple]] = {}
    for name in SAMPLE:
        for expected in EXPECTED[name]:
            wanted.setdefault((expected["sender_kind"], expected["sender_value"]), []).append(
                (expected["channel"], "inbound", expected["kind"], expected["text"])
            )
    for (kind, value), entries in wanted.items():
        found = await customer(api, kind, value)
        items = await timeline_until(api, found["id"], len(entries))
        assert sorted((i["channel"], i["direction"], i["kind"], i["text"]) for i in items) == sorted(entries)
        assert all(i["case_id"] for i in items)
    ada = await customer(api, "telegram", "111111111")
    assert ada["name"] == "Ada Lovelace"
    # The statuses are of messages we never sent: stored, but nothing for anyone's timeline.
    assert await published(social_server) == sum(len(EXPECTED[n]) for n in SAMPLE + NOTHING_FOR_THE_TIMELINE)


async def test_a_webhook_delivered_again_is_recorded_once(social_server, api):
    for _ in range(3):
        assert (await _deliver_fixture(social_server, "whatsapp_text.json")).status_code == 200
        assert (await _deliver_fixture(social_server, "telegram_text.json")).status_code == 200
    for kind, value in (("phone", "+16505551234"), ("telegram", "111111111")):
        found = await customer(api, kind, value)
        await timeline_until(api, found["id"], 1)
        await asyncio.sleep(0.2)
        assert len(await timeline(api, found["id"])) == 1
    assert await published(social_server) == 2


async def test_bad_webhooks_get_the_contract_error_and_record_nothing(social_server, settings):
    good = (FIXTURES / "whatsapp_text.json").read_bytes()
    secret = social_server.settings.meta_app_secret
    meta_cases = [
        (good, "", "application/json", 401),  # no signature
        (good, _sign("not-the-app-secret", good), "application/json", 401),
        (good.replace(b"another color", b"another colour"), _sign(secret, good), "application/json", 401),
        (good, "sha1=" + hashlib.sha1(good).hexdigest(), "application/json", 401),
        (good, None, "application/x-www-form-urlencoded", 415),
        (b"{not json", None, "application/json", 400),
        (b"[1, 2, 3]", None, "application/json", 400),
        (b'{"object": 5}', None, "application/json", 400),
        (
            b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": '
            b'{"messages": [{"id": "wamid.X", "from": "not-a-number", "type": "text", "text": {"body": "x"}}]}}]}]}',
            None,
            "application/json",
            400,
        ),
        (b'{"object": "page", "entry": [' + b" " * MAX_BODY + b"]}", None, "application/json", 413),
    ]
    for body, signature, content_type, status in meta_cases:
        response = await _meta(social_server, body, signature=signature, content_type=content_type)
        assert response.status_code == status, (body[:60], response.text)
        assert set(response.json()) == {"error", "detail"}

    update = (FIXTURES / "telegram_text.json").read_bytes()
    telegram_cases = [
        (update, "", "application/json", 401),
        (update, "wrong-secret", "application/json", 401),
        (update, None, "text/plain", 415),
        (b"garbage", None, "application/json", 400),
        (b'{"update_id": "one"}', None, "application/json", 400),
        (
            b'{"update_id": 1, "message": {"message_id": 1, "date": 99999999999999, "chat": {"id": 1}}}',
            None,
            "application/json",
            400,
        ),
    ]
    for body, secret, content_type, status in telegram_cases:
        response = await _telegram_update(social_server, body, secret=secret, content_type=content_type)
        assert response.status_code == status, (body[:60], response.text)
        assert set(response.json()) == {"error", "detail"}
    await asyncio.sleep(0.2)
    assert await published(social_server) == 0
    assert await stored_events(settings.database_url) == 0


# -- outbound ------------------------------------------------------------------------------------


async def _case_of(api, kind: str, value: str) -> tuple[dict, str]:
    found = await customer(api, kind, value)
    [item] = await timeline_until(api, found["id"], 1)
    return found, item["case_id"]


async def test_whatsapp_replies_go_through_the_cloud_api_and_report_delivery(social_server, api, graph):
    assert (await _deliver_fixture(social_server, "whatsapp_text.json")).status_code == 200
    found, case_id = await _case_of(api, "phone", "+16505551234")
    response = await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Yes, in blue and green."})
    reply_id = response.json()["reply_id"]

    async def sent():
        return graph.requests

    [request] = await eventually(sent, lambda r: len(r) == 1)
    assert request.path == "/v21.0/106540352242922/messages"
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    body = request.json()
    assert (body["messaging_product"], body["to"], body["type"], body["text"]["body"]) == (
        "whatsapp",
        "16505551234",
        "text",
        "Yes, in blue and green.",
    )
    items = await timeline_until(api, found["id"], 2)
    assert (items[0]["channel"], items[0]["direction"], items[0]["text"]) == (
        "whatsapp",
        "outbound",
        "Yes, in blue and green.",
    )

    wamid = (await case_event_until(social_server, case_id, "case.ReplySent")).provider_message_id
    status = json.loads((FIXTURES / "whatsapp_status.json").read_bytes())
    value = status["entry"][0]["changes"][0]["value"]
    value["statuses"] = [dict(value["statuses"][0], id=wamid, status="delivered")]
    assert (await _meta(social_server, json.dumps(status).encode())).status_code == 200
    delivered = await case_event_until(social_server, case_id, "case.ReplyDelivered")
    assert str(delivered.reply_id) == reply_id


@pytest.mark.parametrize(
    "fixture,kind,value,path,recipient",
    [
        ("messenger_text.json", "messenger", "6945812301234567", "/v21.0/me/messages", "6945812301234567"),
        ("instagram_dm.json", "instagram", "1234567890123456", "/v21.0/me/messages", "1234567890123456"),
    ],
)
async def test_messenger_and_instagram_replies_go_through_the_graph_api(
    social_server, api, graph, fixture, kind, value, path, recipient
):
    assert (await _deliver_fixture(social_server, fixture)).status_code == 200
    found, case_id = await _case_of(api, kind, value)
    await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Thanks for writing!"})

    async def sent():
        return graph.requests

    [request] = await eventually(sent, lambda r: len(r) == 1)
    assert request.path == path and request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    body = request.json()
    assert body["recipient"] == {"id": recipient} and body["message"] == {"text": "Thanks for writing!"}
    items = await timeline_until(api, found["id"], 2)
    assert (items[0]["channel"], items[0]["direction"]) == (kind, "outbound")


async def test_telegram_replies_go_through_the_bot_api(social_server, api, bot_api):
    assert (await _deliver_fixture(social_server, "telegram_text.json")).status_code == 200
    found, case_id = await _case_of(api, "telegram", "111111111")
    await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Welcome, Ada!"})

    async def sent():
        return bot_api.requests

    [request] = await eventually(sent, lambda r: len(r) == 1)
    assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert request.json() == {"chat_id": 111111111, "text": "Welcome, Ada!"}
    items = await timeline_until(api, found["id"], 2)
    assert (items[0]["channel"], items[0]["direction"], items[0]["text"]) == ("telegram", "outbound", "Welcome, Ada!")
    sent_event = await case_event_until(social_server, case_id, "case.ReplySent")
    assert sent_event.provider_message_id == "111111111:4242"
