"""Twilio's signature is checked against the URL Twilio requested: `SWITCHBOARD_PUBLIC_URL` when set;
otherwise the request's own, with `X-Forwarded-Proto`/`-Host` believed only from a trusted proxy.
Signed by the twilio package's own `RequestValidator`, sent from a loopback peer that the server
trusts or not."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.fixtures.recorded import published, running_server

pytestmark = pytest.mark.e2e

PATH = "/channels/sms/twilio"
PROXY_HEADERS = {"x-forwarded-proto": "https", "x-forwarded-host": "sms.example.com", "x-forwarded-for": "203.0.113.9"}


def _sms() -> dict:
    sid = "SM" + secrets.token_hex(16)
    return {
        "MessageSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": "+14155550170",
        "To": "+15005550006",
        "Body": "hello",
        "NumMedia": "0",
    }


async def _post(server, params: dict, signed_url: str, headers: dict | None = None, query: str = "") -> int:
    signature = RequestValidator(server.settings.twilio_auth_token).compute_signature(signed_url, params)
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post(
            PATH + query,
            content=urlencode(params),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": signature,
                **(headers or {}),
            },
        )
    return response.status_code


async def test_forwarded_headers_count_from_a_trusted_proxy(settings, names):
    async with running_server(settings.with_(trusted_proxies="10.0.0.0/8, 127.0.0.1"), names, ("gateway",)) as srv:
        # The proxy terminated TLS for https://sms.example.com and says so: that is what Twilio signed.
        assert await _post(srv, _sms(), "https://sms.example.com" + PATH, PROXY_HEADERS) == 200
        assert (
            await _post(
                srv, _sms(), "https://sms.example.com" + PATH + "?a=1&b=%C3%A9", PROXY_HEADERS, query="?a=1&b=%C3%A9"
            )
            == 200
        )
        # Signed over the internal URL while the proxy says otherwise: refused.
        assert await _post(srv, _sms(), srv.http_url + PATH, PROXY_HEADERS) == 401
        assert await published(srv) == 2


async def test_forwarded_headers_from_anyone_else_are_ignored(settings, names):
    # The peer (127.0.0.1) is not among the trusted proxies; with no setting at all, nobody is.
    for trusted in ("10.0.0.0/8", None):
        async with running_server(settings.with_(trusted_proxies=trusted), names, ("gateway",)) as srv:
            before = await published(srv)
            assert await _post(srv, _sms(), "https://sms.example.com" + PATH, PROXY_HEADERS) == 401
            assert await published(srv) == before
            # What the request really asked for is what counts, whatever the headers claim.
            assert await _post(srv, _sms(), srv.http_url + PATH, PROXY_HEADERS) == 200
            assert await published(srv) == before + 1


async def test_a_public_url_wins_over_host_and_proxy_headers(settings, names):
    public = "https://public.example.com/sb"
    settings = settings.with_(public_url=public + "/", trusted_proxies="127.0.0.1")
    async with running_server(settings, names, ("gateway",)) as srv:
        assert await _post(srv, _sms(), public + PATH) == 200
        assert await _post(srv, _sms(), public + PATH + "?x=1", PROXY_HEADERS, query="?x=1") == 200
        assert await _post(srv, _sms(), public + PATH, query="?x=1") == 401  # the query is signed too
        assert await _post(srv, _sms(), "https://sms.example.com" + PATH, PROXY_HEADERS) == 401
        assert await _post(srv, _sms(), srv.http_url + PATH) == 401
        assert await published(srv) == 2
