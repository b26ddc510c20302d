"""The outbound clients against a real HTTP server on loopback that records what they send."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx
import pytest

from channels.errors import ProviderError
from channels.sms.twilio import TwilioClient
from channels.social.meta import MetaClient
from channels.social.telegram import TelegramClient

pytestmark = pytest.mark.integration

ACCOUNT_SID = "ACae0e1f5d3b4c2a1908f7e6d5c4b3a291"
AUTH_TOKEN = "12345678901234567890123456789012"
BOT_TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class LoopbackProvider:
    """An HTTP server on 127.0.0.1 that records every request and answers the queued replies."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: list[Reply] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                provider.requests.append(
                    Recorded(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
                    )
                )
                reply = provider.replies.pop(0) if provider.replies else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def reply(self, status: int = 200, body: object = None, **kwargs) -> None:
        self.replies.append(Reply(status, {} if body is None else body, **kwargs))


@pytest.fixture
def provider():
    server = LoopbackProvider()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
async def http():
    # trust_env=False: a proxy configured in the environment must not intercept loopback calls.
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        yield client


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- Twilio ------------------------------------------------------------------------------------


async def test_twilio_posts_the_form_with_basic_auth_and_returns_the_sid(provider, http):
    provider.reply(201, {"sid": "SM9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d", "status": "queued"})
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, "+14155552671", api_base=provider.url, http=http)

    sid = await client.send_sms("+14155550100", "Your parcel ships today", status_callback="https://sb.example/status")

    assert sid == "SM9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
    [request] = provider.requests
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert (
        request.headers["authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    )
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode()) == {
        "To": ["+14155550100"],
        "From": ["+14155552671"],
        "Body": ["Your parcel ships today"],
        "StatusCallback": ["https://sb.example/status"],
    }


async def test_twilio_without_status_callback_and_over_whatsapp(provider, http):
    provider.reply(201, {"sid": "SM1"})
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, "+14155552671", api_base=provider.url, http=http)

    await client.send_sms("whatsapp:+447700900123", "Hi", from_="whatsapp:+14155238886")

    form = parse_qs(provider.requests[0].body.decode())
    assert "StatusCallback" not in form
    assert (form["To"], form["From"]) == (["whatsapp:+447700900123"], ["whatsapp:+14155238886"])


@pytest.mark.parametrize(
    ("status", "body", "retryable", "code"),
    [
        (500, {"code": 20500, "message": "Internal Server Error"}, True, "20500"),
        (503, b"<html>unavailable</html>", True, None),
        (429, {"code": 20429, "message": "Too Many Requests"}, True, "20429"),
        (
            400,
            {
                "code": 21211,
                "message": "The 'To' number +14155550100 is not a valid phone number.",
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            },
            False,
            "21211",
        ),
        (401, {"code": 20003, "message": "Authenticate"}, False, "20003"),
    ],
)
async def test_twilio_failures(provider, http, status, body, retryable, code):
    provider.reply(status, body)
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, "+14155552671", api_base=provider.url, http=http)

    with pytest.raises(ProviderError) as raised:
        await client.send_sms("+14155550100", "Hi")

    assert raised.value.retryable is retryable
    assert raised.value.status == status
    assert raised.value.provider_code == code
    assert "+1415" not in raised.value.detail  # the provider's message may quote the number


async def test_twilio_timeout_and_refused_connection_are_retryable(provider):
    provider.reply(201, {"sid": "SM-late"}, delay=1.0)
    async with httpx.AsyncClient(timeout=0.2, trust_env=False) as slow:
        client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, "+1", api_base=provider.url, http=slow)
        with pytest.raises(ProviderError) as timed_out:
            await client.send_sms("+14155550100", "Hi")
        refused = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, "+1", api_base=closed_port_url(), http=slow)
        with pytest.raises(ProviderError) as not_connected:
            await refused.send_sms("+14155550100", "Hi")

    assert timed_out.value.retryable and not_connected.value.retryable


async def test_twilio_success_without_sid_is_not_retried(provider, http):
    provider.reply(201, {"status": "queued"})
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, "+1", api_base=provider.url, http=http)

    with pytest.raises(ProviderError) as raised:
        await client.send_sms("+14155550100", "Hi")
    assert raised.value.retryable is False


async def test_client_owning_its_http_client_closes_it(provider, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    provider.reply(201, {"sid": "SM2"})
    async with TwilioClient(ACCOUNT_SID, AUTH_TOKEN, "+1", api_base=provider.url) as client:
        assert await client.send_sms("+14155550100", "Hi") == "SM2"
    assert client._http.is_closed


# -- Meta --------------------------------------------------------------------------------------


async def test_whatsapp_send(provider, http):
    provider.reply(
        200,
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
            "messages": [{"id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}],
        },
    )
    client = MetaClient("EAAGm0PX4ZCpsBA", graph_base=f"{provider.url}/v21.0", http=http)

    message_id = await client.send_whatsapp("106540352242922", "+16505551234", "We are on it")

    assert message_id == "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    [request] = provider.requests
    assert request.path == "/v21.0/106540352242922/messages"
    assert request.headers["authorization"] == "Bearer EAAGm0PX4ZCpsBA"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"preview_url": False, "body": "We are on it"},
    }


@pytest.mark.parametrize("send", ["send_messenger", "send_instagram"])
async def test_messenger_and_instagram_send(provider, http, send):
    provider.reply(200, {"recipient_id": "6945812301234567", "message_id": "m_sent_1"})
    client = MetaClient("EAAGm0PX4ZCpsBA", graph_base=f"{provider.url}/v21.0/", http=http)

    message_id = await getattr(client, send)("6945812301234567", "Thanks for waiting")

    assert message_id == "m_sent_1"
    [request] = provider.requests
    assert request.path == "/v21.0/me/messages"
    assert request.headers["authorization"] == "Bearer EAAGm0PX4ZCpsBA"
    assert json.loads(request.body) == {
        "recipient": {"id": "6945812301234567"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Thanks for waiting"},
    }


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (500, {"message": "An unknown error occurred", "type": "OAuthException", "code": 1}, True),
        (400, {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429}, True),
        (400, {"message": "Temporary", "type": "OAuthException", "code": 9999, "is_transient": True}, True),
        (400, {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}, False),
        (401, {"message": "Error validating access token", "type": "OAuthException", "code": 190}, False),
    ],
)
async def test_meta_failures(provider, http, status, error, retryable):
    provider.reply(status, {"error": {**error, "fbtrace_id": "AbCdEf"}})
    client = MetaClient("token", graph_base=provider.url, http=http)

    with pytest.raises(ProviderError) as raised:
        await client.send_whatsapp("106540352242922", "16505551234", "Hi")

    assert raised.value.retryable is retryable
    assert raised.value.provider_code == str(error["code"])


async def test_meta_timeout_is_retryable(provider):
    provider.reply(200, {"message_id": "late"}, delay=1.0)
    async with httpx.AsyncClient(timeout=0.2, trust_env=False) as slow:
        client = MetaClient("token", graph_base=provider.url, http=slow)
        with pytest.raises(ProviderError) as raised:
            await client.send_messenger("1", "Hi")
    assert raised.value.retryable


# -- Telegram ----------------------------------------------------------------------------------


async def test_telegram_send(provider, http):
    provider.reply(
        200,
        {
            "ok": True,
            "result": {
                "message_id": 1371,
                "from": {"id": 7000000001, "is_bot": True, "first_name": "Switchboard"},
                "chat": {"id": 111111111, "first_name": "Ada", "type": "private"},
                "date": 1749417700,
                "text": "Hello Ada",
            },
        },
    )
    client = TelegramClient(BOT_TOKEN, api_base=provider.url, http=http)

    sent = await client.send_message(111111111, "Hello Ada")

    assert sent == "111111111:1371"
    [request] = provider.requests
    assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert json.loads(request.body) == {"chat_id": 111111111, "text": "Hello Ada"}


@pytest.mark.parametrize(
    ("status", "body", "retryable", "retry_after"),
    [
        (
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 3",
                "parameters": {"retry_after": 3},
            },
            True,
            3.0,
        ),
        (502, b"Bad Gateway", True, None),
        (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, False, None),
        (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}, False, None),
        (200, {"ok": False, "error_code": 400, "description": "Bad Request"}, False, None),
    ],
)
async def test_telegram_failures(provider, http, status, body, retryable, retry_after):
    provider.reply(status, body)
    client = TelegramClient(BOT_TOKEN, api_base=provider.url, http=http)

    with pytest.raises(ProviderError) as raised:
        await client.send_message(111111111, "Hi")

    assert raised.value.retryable is retryable
    assert raised.value.retry_after == retry_after
    assert BOT_TOKEN not in raised.value.detail


async def test_telegram_unreachable_is_retryable_and_does_not_leak_the_token():
    async with httpx.AsyncClient(timeout=0.5, trust_env=False) as http:
        client = TelegramClient(BOT_TOKEN, api_base=closed_port_url(), http=http)
        with pytest.raises(ProviderError) as raised:
            await client.send_message(1, "Hi")

    assert raised.value.retryable
    assert BOT_TOKEN not in str(raised.value) and BOT_TOKEN not in repr(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
