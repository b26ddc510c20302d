"""NUL and other C0 control characters on every channel, a connector and the agent API: each message
is accepted and stored sanitised, and messages after them still reach the timeline.

Before the sanitiser, one such message (even from an unauthenticated chat visitor) stopped every
read model: the projector retried the same batch forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import smtplib
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import msgspec
import psycopg
import pytest
import websockets
from twilio.request_validator import RequestValidator

from events.interactions import ENCODER, Attachment, Identity, Interaction, interaction_id
from events.sanitize import is_clean
from services.core.processor import CoreProcessor
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer, running_server

pytestmark = pytest.mark.e2e

DIRTY = "caf\u00e9\x00 order\x01\x02 #42\x1b[31m\r\nline two\x0b\x0c end"
CLEAN = "caf\u00e9 order #42[31m\nline two end"
# Long enough for the slowest path under load; the old code never got there at all.
LATER_DEADLINE = 15.0


@pytest.fixture
async def srv(settings, names):
    async with running_server(settings, names) as server:
        yield server


@pytest.fixture
async def api(srv, admin_headers):
    async with httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers, timeout=30) as client:
        yield client


def _ws_url(server, token: str) -> str:
    return server.http_url.replace("http://", "ws://") + f"/channels/chat/ws?token={token}"


async def _chat(server, api, text: str, name: str | None = None, session: dict | None = None) -> dict:
    if session is None:
        response = await api.post("/channels/chat/sessions", json={"name": name} if name else {})
        assert response.status_code == 201, response.text
        session = response.json()
    async with websockets.connect(_ws_url(server, session["token"])) as ws:
        await ws.send(json.dumps({"type": "message", "text": text, "client_id": secrets.token_hex(4)}))
        while (frame := json.loads(await ws.recv()))["type"] != "ack":  # agent replies may come first
            assert frame["type"] == "message", frame
    return session


def _email(sender: str, subject: str, body: str) -> bytes:
    headers = [
        f"From: Customer <{sender}>",
        "To: support@shop.test",
        f"Subject: {subject}",
        f"Message-ID: <{secrets.token_hex(8)}@example.org>",
        "Date: Mon, 02 Mar 2026 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


async def _smtp(server, raw: bytes) -> dict:
    def send() -> dict:
        with smtplib.SMTP(*server.smtp, timeout=10) as smtp:
            return smtp.sendmail("someone@example.org", ["support@shop.test"], raw)

    return await asyncio.to_thread(send)


async def _post(server, path: str, body: bytes, headers: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        return await client.post(path, content=body, headers=headers)


async def _twilio(server, sender: str, text: str) -> httpx.Response:
    params = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": "AC" + "1" * 32,
        "From": sender,
        "To": "+15005550006",
        "Body": text,
        "NumMedia": "0",
    }
    signature = RequestValidator(server.settings.twilio_auth_token).compute_signature(
        server.http_url + "/channels/sms/twilio", params
    )
    return await _post(
        server,
        "/channels/sms/twilio",
        urlencode(params).encode(),
        {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
    )


async def _meta(server, payload: dict) -> httpx.Response:
    body = json.dumps(payload).encode()  # json escapes controls as \u0000 etc., as Meta's JSON would
    signature = "sha256=" + hmac.new(server.settings.meta_app_secret.encode(), body, hashlib.sha256).hexdigest()
    return await _post(
        server, "/channels/social/meta", body, {"content-type": "application/json", "x-hub-signature-256": signature}
    )


def _whatsapp(wa_id: str, text: str) -> dict:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1"},
                            "contacts": [{"profile": {"name": "Sheena\x00 Nelson"}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": "wamid." + secrets.token_hex(12),
                                    "timestamp": "1772445600",
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def _messaging(platform: str, sender: str, text: str) -> dict:
    return {
        "object": platform,
        "entry": [
            {
                "id": "17841400008460056",
                "time": 1772445600000,
                "messaging": [
                    {
                        "sender": {"id": sender},
                        "recipient": {"id": "17841400008460056"},
                        "timestamp": 1772445600000,
                        "message": {"mid": "m_" + secrets.token_hex(12), "text": text},
                    }
                ],
            }
        ],
    }


async def _telegram(server, user_id: int, text: str) -> httpx.Response:
    update = {
        "update_id": secrets.randbelow(10**9),
        "message": {
            "message_id": secrets.randbelow(10**6),
            "date": 1772445600,
            "text": text,
            "from": {"id": user_id, "is_bot": False, "first_name": "Ada\x00", "last_name": "Love\x01lace"},
            "chat": {"id": user_id, "type": "private"},
        },
    }
    return await _post(
        server,
        "/channels/social/telegram",
        json.dumps(update).encode(),
        {"content-type": "application/json", "x-telegram-bot-api-secret-token": server.settings.telegram_secret_token},
    )


async def _connector(server, phone: str, text: str) -> None:
    """A company's own connector publishing straight onto sb.interactions.<channel>.inbound."""
    provider_id = "connector-" + secrets.token_hex(6)
    interaction = Interaction(
        id=interaction_id("sms", provider_id),
        channel="sms",
        direction="inbound",
        occurred_at=datetime.now(UTC),
        identities=[Identity("phone", phone)],
        text=text,
        profile={"name": "Con\x00 Nector"},
        provider_message_id=provider_id,
        meta={"note\x00": "x\x00y"},
        attachments=[Attachment(name="scan\x00.pdf", content_type="application/pdf", size=1, sha256="00")],
    )
    ack = await server.sb.js.publish(
        server.sb.names.interaction_subject("sms", "inbound"),
        ENCODER.encode(interaction),
        headers={"Nats-Msg-Id": str(interaction.id)},
    )
    assert not ack.duplicate


async def _first_item(api, kind: str, value: str) -> tuple[dict, dict]:
    found = await customer(api, kind, value)

    async def items():
        return (await api.get(f"/api/v1/customers/{found['id']}/timeline")).json()["items"]

    return found, (await eventually(items, lambda got: len(got) >= 1))[0]


def _all_strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _all_strings(k) + _all_strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _all_strings(v)]
    return []


async def test_control_characters_on_every_channel_are_stored_clean_and_nothing_stops(srv, api):
    ingest = {"content-type": "message/rfc822", "authorization": f"Bearer {srv.settings.ingest_token}"}
    chat = await _chat(srv, api, DIRTY, name="Ada\x00 Chat")
    assert await _smtp(srv, _email("smtp-sender@example.org", "Order\x01 42", DIRTY)) == {}
    assert (
        await _post(srv, "/channels/email/inbound", _email("mime-sender@example.org", "Order 42", DIRTY), ingest)
    ).status_code == 200
    assert (await _twilio(srv, "+14155550161", DIRTY)).status_code == 200
    assert (await _meta(srv, _whatsapp("16505550162", DIRTY))).status_code == 200
    assert (await _meta(srv, _messaging("page", "6945812300000163", DIRTY))).status_code == 200
    assert (await _meta(srv, _messaging("instagram", "1234567800000164", DIRTY))).status_code == 200
    assert (await _telegram(srv, 111000165, DIRTY)).status_code == 200
    await _connector(srv, "+14155550166", DIRTY)

    senders = [
        ("chat", chat["session_id"]),
        ("email", "smtp-sender@example.org"),
        ("email", "mime-sender@example.org"),
        ("phone", "+14155550161"),
        ("phone", "+16505550162"),
        ("messenger", "6945812300000163"),
        ("instagram", "1234567800000164"),
        ("telegram", "111000165"),
        ("phone", "+14155550166"),
    ]
    for kind, value in senders:
        profile, item = await _first_item(api, kind, value)
        assert item["text"] == CLEAN, (kind, value, item["text"])
        assert all(is_clean(s) for s in _all_strings(profile)), profile
    chat_profile, chat_item = await _first_item(api, "chat", chat["session_id"])
    assert chat_profile["name"] == "Ada Chat"

    # The agent API: a reply, a note and tags with control characters, on the chat visitor's case.
    case_id = chat_item["case_id"]
    reply = await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Thanks\x00 for\x07 writing\r\n"})
    note = await api.post(f"/api/v1/cases/{case_id}/notes", json={"text": "call\x00 back\x1b"})
    tags = await api.post(f"/api/v1/cases/{case_id}/tags", json={"tags": ["vip\x00", "ref\x01und"]})
    assert (reply.status_code, note.status_code, tags.status_code) == (200, 200, 200), (
        reply.text,
        note.text,
        tags.text,
    )

    # Read your writes: answered once the read models applied the last of the three commands.
    fresh = {"Sb-Min-Position": str(tags.json()["position"])}
    done = (await api.get(f"/api/v1/cases/{case_id}", headers=fresh)).json()
    assert sorted(done["tags"]) == ["refund", "vip"]
    assert [n["text"] for n in done["notes"]] == ["call back"]

    # Later, ordinary messages reach the timeline (the projector did not stop at the poison).
    await _chat(srv, api, "a later message", session=chat)
    assert (await _twilio(srv, "+14155550161", "later by sms")).status_code == 200

    async def texts(kind: str, value: str) -> list[str]:
        found = await customer(api, kind, value)
        return [i["text"] for i in (await api.get(f"/api/v1/customers/{found['id']}/timeline")).json()["items"]]

    chat_texts = await eventually(
        lambda: texts("chat", chat["session_id"]),
        lambda got: "a later message" in got and "Thanks for writing\n" in got,
        timeout=LATER_DEADLINE,
    )
    assert CLEAN in chat_texts
    await eventually(lambda: texts("phone", "+14155550161"), lambda got: "later by sms" in got, timeout=LATER_DEADLINE)

    # Nothing unclean anywhere in the log, and nothing had to be quarantined.
    store = srv.sb.open_store()
    events = await asyncio.to_thread(store.read, 0, 100_000)
    strings = [s for _, event, _ in events for s in _all_strings(msgspec.to_builtins(event))]
    assert strings and all(is_clean(s) for s in strings), [s for s in strings if not is_clean(s)][:5]
    async with await psycopg.AsyncConnection.connect(srv.settings.database_url) as conn:
        assert await (await conn.execute("SELECT count(*) FROM sb_quarantine")).fetchone() == (0,)


async def test_the_live_projector_quarantines_an_old_poisonous_event_and_metrics_count_it(srv, api):
    """A log written before the sanitiser may hold NUL: the running projector sets that event aside."""
    old = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="inbound",
        occurred_at=datetime.now(UTC),
        identities=[Identity("phone", "+14155550170")],
        text="from an old log\x00",
        provider_message_id=secrets.token_hex(6),
    )
    store = srv.sb.open_store()
    await asyncio.to_thread(CoreProcessor(store).process, [(old, None)])
    assert (await _twilio(srv, "+14155550171", "after the old one")).status_code == 200

    _, item = await _first_item(api, "phone", "+14155550171")
    assert item["text"] == "after the old one"

    async def metrics() -> str:
        return (await api.get("/metrics")).text

    text = await eventually(metrics, lambda t: 'switchboard_quarantined_events{consumer="projection:timeline"} 1' in t)
    assert "from an old log" not in text


async def test_control_characters_in_query_parameters_get_a_400_not_a_500(srv, api):
    for path, params in [
        ("/api/v1/customers", {"q": "a\x00b"}),
        ("/api/v1/cases", {"queue": "chat\x01"}),
        ("/api/v1/customers/lookup", {"kind": "email", "value": "a\x1b@example.org"}),
    ]:
        response = await api.get(path, params=params)
        assert response.status_code == 400, (path, response.text)
        assert response.json() == {
            "error": "malformed",
            "detail": "query parameters must not contain control characters",
        }
    # Tab, newline and ordinary percent-encoding still pass.
    assert (await api.get("/api/v1/customers", params={"q": "a\tb\nc%20 ü"})).status_code == 200
