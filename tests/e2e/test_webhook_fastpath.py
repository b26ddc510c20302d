"""The provider webhooks answer the same whichever way they are served: straight on ASGI (the fast
path, services/api/fastpath.py: a POST without a query string and with a Content-Length) or through
the framework (a query string, a chunked body). Same status, body, content type and security
headers, the same interactions stored, and bad input recorded by neither."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.fixtures.recorded import published, running_server

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://switchboard.example.com"
MAX_BODY = 64 * 1024
# Headers both paths must agree on (date, server and length may differ or are trivially equal).
COMPARED = (
    "content-type",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
    "content-security-policy",
    "retry-after",
)


@pytest.fixture
async def gateway(settings, names):
    settings = settings.with_(public_url=PUBLIC_URL, max_body_bytes=MAX_BODY)
    async with running_server(settings, names, roles=("gateway",)) as srv:
        yield srv


def _sms_params() -> dict[str, str]:
    sid = "SM" + secrets.token_hex(16)
    return {
        "MessageSid": sid,
        "From": "+14155550123",
        "To": "+15005550006",
        "Body": "Where is my parcel? 100% sure it was due today & not tomorrow",
        "NumMedia": "0",
    }


def _twilio_request(server, params: dict[str, str], path: str, signature: str | None = None) -> tuple[bytes, dict]:
    token = server.settings.twilio_auth_token
    if signature is None:
        signature = RequestValidator(token).compute_signature(PUBLIC_URL + path, params)
    headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature}
    return urlencode(params).encode(), headers


def _whatsapp_body(text: str = "Does it come in another colour?") -> bytes:
    message = {"from": "16505551234", "id": "wamid." + secrets.token_hex(12), "timestamp": "1749416383"}
    message |= {"type": "text", "text": {"body": text}}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
        "messages": [message],
    }
    envelope = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(envelope).encode()


def _meta_headers(server, body: bytes) -> dict:
    secret = server.settings.meta_app_secret.encode()
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-hub-signature-256": signature}


def _compared(response: httpx.Response) -> tuple:
    return (response.status_code, response.content, *(response.headers.get(name) for name in COMPARED))


async def test_a_signed_sms_is_answered_and_stored_alike_on_both_paths(gateway):
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        fast_params, framework_params = _sms_params(), _sms_params()
        body, headers = _twilio_request(gateway, fast_params, "/channels/sms/twilio")
        fast = await client.post("/channels/sms/twilio", content=body, headers=headers)
        body, headers = _twilio_request(gateway, framework_params, "/channels/sms/twilio?via=framework")
        framework = await client.post("/channels/sms/twilio?via=framework", content=body, headers=headers)
        assert fast.status_code == 200, fast.text
        assert _compared(fast) == _compared(framework)
        assert fast.headers["content-type"].startswith("text/xml")
        assert fast.headers["content-security-policy"].startswith("default-src 'none'")
        assert await published(gateway) == 2
        # Twilio's retry of the first message: accepted, stored once.
        body, headers = _twilio_request(gateway, fast_params, "/channels/sms/twilio")
        again = await client.post("/channels/sms/twilio", content=body, headers=headers)
        assert _compared(again) == _compared(fast)
        assert await published(gateway) == 2


async def test_a_signed_whatsapp_webhook_is_answered_and_stored_alike_on_both_paths(gateway):
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        body = _whatsapp_body()
        fast = await client.post("/channels/social/meta", content=body, headers=_meta_headers(gateway, body))
        body = _whatsapp_body()
        framework = await client.post(
            "/channels/social/meta?via=framework", content=body, headers=_meta_headers(gateway, body)
        )
        assert fast.status_code == 200, fast.text
        assert fast.json() == {"received": 1}
        assert _compared(fast) == _compared(framework)

        async def chunks(data: bytes):  # no Content-Length: the framework reads it
            yield data[:10]
            yield data[10:]

        body = _whatsapp_body()
        chunked = await client.post("/channels/social/meta", content=chunks(body), headers=_meta_headers(gateway, body))
        assert _compared(chunked) == _compared(fast)
        assert await published(gateway) == 3


async def test_bad_webhooks_get_the_same_contract_error_on_both_paths_and_record_nothing(gateway):
    sms_body, sms_headers = _twilio_request(gateway, _sms_params(), "/channels/sms/twilio")
    whatsapp = _whatsapp_body()
    meta_headers = _meta_headers(gateway, whatsapp)
    json_type = {"content-type": "application/json"}
    cases = [
        ("/channels/sms/twilio", sms_body, {**sms_headers, "x-twilio-signature": "bm90IGl0"}, 401),
        ("/channels/sms/twilio", sms_body, {"content-type": "application/x-www-form-urlencoded"}, 401),
        ("/channels/sms/twilio", sms_body, {**sms_headers, "content-type": "application/json"}, 415),
        ("/channels/sms/twilio", b"\xff\xfe=%ZZ", sms_headers, 400),
        ("/channels/sms/twilio/status", sms_body, {**sms_headers, "x-twilio-signature": ""}, 401),
        ("/channels/social/meta", whatsapp + b" ", meta_headers, 401),
        ("/channels/social/meta", whatsapp, {**meta_headers, "x-hub-signature-256": "sha1=00"}, 401),
        ("/channels/social/meta", whatsapp, {**meta_headers, "content-type": "text/plain"}, 415),
        ("/channels/social/meta", b"{not json", {**meta_headers, **_meta_headers(gateway, b"{not json")}, 400),
        ("/channels/social/telegram", b'{"update_id": 1}', json_type, 401),
        ("/channels/social/telegram", b"x" * (MAX_BODY + 1), json_type, 413),
    ]
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        for path, body, headers, status in cases:
            fast = await client.post(path, content=body, headers=headers)
            framework = await client.post(path + "?via=framework", content=body, headers=headers)
            assert fast.status_code == status, (path, status, fast.text)
            assert set(fast.json()) == {"error", "detail"}
            if path.startswith("/channels/sms/"):
                # The URL is part of what Twilio signs: the query string changes the check, not the answer.
                assert fast.status_code == framework.status_code, (path, framework.text)
            else:
                assert _compared(fast) == _compared(framework), path
    await asyncio.sleep(0.2)  # a stray publish would have landed by now
    assert await published(gateway) == 0
