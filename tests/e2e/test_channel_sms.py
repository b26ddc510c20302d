"""SMS (and WhatsApp) through Twilio, as Twilio speaks it: signed form-encoded webhooks in, the REST
API out (a fake Twilio on loopback), delivery status callbacks back in."""

from __future__ import annotations

import asyncio
import base64
import secrets
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.fixtures.providers import FakeHTTPProvider, Recorded, eventually
from tests.fixtures.recorded import (
    case_event_until,
    case_events,
    customer,
    published,
    running_server,
    stored_events,
    timeline,
    timeline_until,
)

pytestmark = pytest.mark.e2e

ACCOUNT_SID = "AC" + "1" * 32
OUR_NUMBER = "+15005550006"
MAX_BODY = 64 * 1024
PUBLIC_URL = "https://switchboard.example.com"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def _sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def _twilio_accepts(request: Recorded) -> tuple[int, dict]:
    return 201, {"sid": _sid(), "status": "queued"}


@pytest.fixture
async def twilio():
    fake = await FakeHTTPProvider(default=_twilio_accepts).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def sms_server(settings, names, twilio):
    settings = settings.with_(
        twilio_account_sid=ACCOUNT_SID,
        twilio_from=OUR_NUMBER,
        twilio_api_base=twilio.url,
        public_url=PUBLIC_URL,
        outbound_retry_base_seconds=0.05,
        max_body_bytes=MAX_BODY,
    )
    async with running_server(settings, names) as srv:
        yield srv


@pytest.fixture
async def api(sms_server, admin_headers):
    async with httpx.AsyncClient(base_url=sms_server.http_url, headers=admin_headers) as client:
        yield client


async def _post_signed(
    server,
    params: dict,
    path: str = "/channels/sms/twilio",
    *,
    url: str | None = None,
    signature: str | None = None,
    headers: dict | None = None,
) -> httpx.Response:
    """Posts `params` the way Twilio does: form-encoded, signed over the URL it requested (the
    public URL the server is configured with)."""
    url = url or PUBLIC_URL + path
    token = server.settings.twilio_auth_token
    if signature is None:
        signature = RequestValidator(token).compute_signature(url, params)
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        return await client.post(
            path,
            content=urlencode(params),
            headers={
                "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
                "x-twilio-signature": signature,
                **(headers or {}),
            },
        )


def _sms(sender: str, body: str, sid: str | None = None, **extra) -> dict:
    return {
        "MessageSid": sid or _sid(),
        "SmsSid": sid or _sid(),
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
        "FromCountry": "US",
        **extra,
    }


# -- inbound -------------------------------------------------------------------------------------


async def test_an_sms_reaches_the_timeline_and_twilio_gets_empty_twiml(sms_server, api):
    response = await _post_signed(sms_server, _sms("+14155550100", "Is my order shipped?"))
    assert response.status_code == 200
    assert response.text == TWIML and response.headers["content-type"].startswith("text/xml")
    found = await customer(api, "phone", "+14155550100")
    [item] = await timeline_until(api, found["id"], 1)
    assert (item["channel"], item["direction"], item["kind"], item["text"]) == (
        "sms",
        "inbound",
        "message",
        "Is my order shipped?",
    )
    assert item["case_id"] is not None


async def test_an_mms_keeps_its_media_references(sms_server, api):
    media = {
        "NumMedia": "2",
        "MediaUrl0": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME0",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME1",
        "MediaContentType1": "application/pdf",
    }
    response = await _post_signed(sms_server, _sms("+14155550101", "photos of the damage", _sid("MM"), **media))
    assert response.status_code == 200
    found = await customer(api, "phone", "+14155550101")
    [item] = await timeline_until(api, found["id"], 1)
    assert item["kind"] == "media" and item["text"] == "photos of the damage"
    assert [(a["name"], a["content_type"]) for a in item["attachments"]] == [
        ("ME0.jpg", "image/jpeg"),
        ("ME1.pdf", "application/pdf"),
    ]


async def test_twilio_retrying_the_same_message_records_it_once(sms_server, api):
    params = _sms("+14155550102", "hello?")
    for _ in range(3):
        response = await _post_signed(sms_server, params)
        assert response.status_code == 200 and response.text == TWIML
    found = await customer(api, "phone", "+14155550102")
    await timeline_until(api, found["id"], 1)
    await asyncio.sleep(0.3)
    assert len(await timeline(api, found["id"])) == 1
    assert await published(sms_server) == 1


async def test_the_configured_public_url_is_what_is_verified(sms_server, api):
    params = _sms("+14155550103", "via the load balancer")
    validator = RequestValidator(sms_server.settings.twilio_auth_token)
    # Signed over the Host it was sent to, not over SWITCHBOARD_PUBLIC_URL: refused, whatever
    # X-Forwarded-* claims.
    direct = validator.compute_signature(sms_server.http_url + "/channels/sms/twilio", params)
    assert (await _post_signed(sms_server, params, signature=direct)).status_code == 401
    spoofed = validator.compute_signature("https://attacker.example/channels/sms/twilio", params)
    response = await _post_signed(
        sms_server,
        params,
        signature=spoofed,
        headers={"x-forwarded-proto": "https", "x-forwarded-host": "attacker.example"},
    )
    assert response.status_code == 401
    assert await published(sms_server) == 0
    # Signed over the public URL: accepted, with or without proxy headers.
    public = validator.compute_signature(PUBLIC_URL + "/channels/sms/twilio", params)
    assert (await _post_signed(sms_server, params, signature=public)).status_code == 200
    proxied = await _post_signed(
        sms_server, params, signature=public, headers={"x-forwarded-proto": "http", "x-forwarded-host": "internal:8000"}
    )
    assert proxied.status_code == 200
    await customer(api, "phone", "+14155550103")


async def test_whatsapp_through_twilio_is_recorded_on_the_whatsapp_channel(sms_server, api, twilio):
    params = _sms("whatsapp:+14155550104", "hola", To="whatsapp:+14155238886", ProfileName="Lucía")
    assert (await _post_signed(sms_server, params)).status_code == 200
    found = await customer(api, "phone", "+14155550104")
    [item] = await timeline_until(api, found["id"], 1)
    assert item["channel"] == "whatsapp" and found["name"] == "Lucía"
    await api.post(f"/api/v1/cases/{item['case_id']}/reply", json={"text": "¡Hola!"})

    async def sent():
        return twilio.requests

    [request] = await eventually(sent, lambda r: len(r) == 1)
    form = request.form()
    assert (form["To"], form["From"], form["Body"]) == ("whatsapp:+14155550104", "whatsapp:+14155238886", "¡Hola!")


def _garbage(server) -> list[tuple[bytes, str, dict, int]]:
    form = "application/x-www-form-urlencoded"
    unsigned = {"x-twilio-signature": "bm90IGEgc2lnbmF0dXJl"}
    return [
        (urlencode(_sms("+14155550105", "x")).encode(), form, unsigned, 401),  # wrong signature
        (urlencode(_sms("+14155550105", "x")).encode(), form, {}, 401),  # no signature
        (b'{"MessageSid": "SM1"}', "application/json", unsigned, 415),
        (b"\xff\xfe\x00garbage=%ZZ", form, unsigned, 400),
        (b"a=" + b"x" * (MAX_BODY + 1), form, unsigned, 413),
    ]


async def test_bad_requests_get_the_contract_error_and_record_nothing(sms_server, settings):
    async with httpx.AsyncClient(base_url=sms_server.http_url) as client:
        for path in ("/channels/sms/twilio", "/channels/sms/twilio/status"):
            for body, content_type, headers, status in _garbage(sms_server):
                response = await client.post(path, content=body, headers={"content-type": content_type, **headers})
                assert response.status_code == status, (path, body[:40], response.text)
                assert set(response.json()) == {"error", "detail"}
    # Correctly signed, but not a message Twilio would send: no From, a bad SID, a bad number.
    for params in (
        {"MessageSid": _sid(), "Body": "no sender"},
        _sms("+14155550106", "x", sid="SM../../etc"),
        _sms("not a number", "x"),
    ):
        response = await _post_signed(sms_server, params)
        assert response.status_code == 400 and response.json()["error"] == "malformed"
    await asyncio.sleep(0.2)
    assert await published(sms_server) == 0
    assert await stored_events(settings.database_url) == 0


# -- outbound ------------------------------------------------------------------------------------


async def _open_case(sms_server, api, number: str) -> tuple[dict, str]:
    assert (await _post_signed(sms_server, _sms(number, "Can I change my delivery address?"))).status_code == 200
    found = await customer(api, "phone", number)
    [item] = await timeline_until(api, found["id"], 1)
    return found, item["case_id"]


async def test_an_agent_reply_is_sent_through_twilio_and_its_delivery_recorded(sms_server, api, twilio, capsys):
    found, case_id = await _open_case(sms_server, api, "+14155550107")
    response = await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Yes, reply with the new one."})
    assert response.status_code == 200
    reply_id = response.json()["reply_id"]

    async def sent():
        return twilio.requests

    [request] = await eventually(sent, lambda r: len(r) == 1)
    assert request.method == "POST" and request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    user, _, password = base64.b64decode(request.headers["authorization"].split()[1]).decode().partition(":")
    assert (user, password) == (ACCOUNT_SID, sms_server.settings.twilio_auth_token)
    form = request.form()
    assert (form["To"], form["From"], form["Body"]) == ("+14155550107", OUR_NUMBER, "Yes, reply with the new one.")
    assert form["StatusCallback"] == PUBLIC_URL + "/channels/sms/twilio/status"

    items = await timeline_until(api, found["id"], 2)
    assert (items[0]["direction"], items[0]["text"], items[0]["case_id"]) == (
        "outbound",
        "Yes, reply with the new one.",
        case_id,
    )
    sent_event = await case_event_until(sms_server, case_id, "case.ReplySent")
    message_sid = sent_event.provider_message_id
    assert message_sid.startswith("SM") and str(sent_event.reply_id) == reply_id

    for status in ("sent", "delivered"):
        callback = {
            "MessageSid": message_sid,
            "SmsSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": ACCOUNT_SID,
            "From": OUR_NUMBER,
            "To": "+14155550107",
        }
        response = await _post_signed(sms_server, callback, "/channels/sms/twilio/status")
        assert response.status_code == 200
    delivered = await case_event_until(sms_server, case_id, "case.ReplyDelivered")
    assert str(delivered.reply_id) == reply_id

    # Switchboard's own log (structlog, on stdout here; the test client's request lines go elsewhere).
    logged = capsys.readouterr().out
    assert "interaction_published" in logged and "reply_delivered" in logged  # the log was captured ...
    for personal in ("4155550107", "delivery address", "new one"):  # ... and holds ids only
        assert personal not in logged


async def test_a_twilio_outage_is_retried_until_the_reply_goes_out_once(sms_server, api, twilio):
    twilio.script = [(500, {"code": 20500, "message": "Internal Server Error"})] * 2 + [
        (503, {"code": 20503, "message": "Service Unavailable"})
    ]
    found, case_id = await _open_case(sms_server, api, "+14155550108")
    await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Sorry for the wait."})

    async def sent():
        return twilio.requests

    await eventually(sent, lambda r: len(r) == 4)
    items = await timeline_until(api, found["id"], 2)
    assert [i["direction"] for i in items] == ["outbound", "inbound"]
    await case_event_until(sms_server, case_id, "case.ReplySent")
    await asyncio.sleep(0.5)
    assert len(twilio.requests) == 4
    assert not [e for e in await case_events(sms_server, case_id) if e.NAME == "case.ReplyFailed"]


async def test_a_refused_reply_is_recorded_as_failed_without_retrying(sms_server, api, twilio):
    twilio.script = [(400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400})]
    _, case_id = await _open_case(sms_server, api, "+14155550109")
    await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Hello?"})
    failed = await case_event_until(sms_server, case_id, "case.ReplyFailed", timeout=10)
    assert "400" in failed.reason and "21211" in failed.reason
    assert "+1415" not in failed.reason  # a reason names codes, never the number
    await asyncio.sleep(0.3)
    assert len(twilio.requests) == 1
