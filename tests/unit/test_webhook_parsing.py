"""The pieces of the webhook fast path that need no server: the form parser (exactly parse_qs), the
sanitise-and-encode shortcut (exactly sanitize then encode), and which requests the ASGI fast path
serves itself (a POST to a provider route with a Content-Length and no query string) and which it
hands to the framework."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.errors import Malformed
from channels.sms.twilio import MAX_FORM_FIELDS, parse_form, validate_twilio_signature
from events.interactions import ENCODER, Identity, Interaction, interaction_id
from events.sanitize import sanitize, sanitized_json
from services.api.context import Services
from services.api.fastpath import WebhookFastPath, _Headers
from services.platform.settings import Settings
from services.platform.streams import Names

pytestmark = pytest.mark.unit

# -- the form parser -------------------------------------------------------------------------------

FORM_TEXT = st.text(alphabet=st.sampled_from("ab=&+%2F0Zé€ \x00"), max_size=40)


def _reference(body: bytes):
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return Malformed


def _parsed(body: bytes):
    try:
        return parse_form(body)
    except Malformed:
        return Malformed


@given(FORM_TEXT)
def test_the_form_parser_reads_any_text_as_parse_qs_does(text):
    body = text.encode("utf-8")
    assert _parsed(body) == _reference(body)


@given(st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=12), min_size=1, max_size=3), max_size=6))
def test_the_form_parser_reads_back_what_urlencode_wrote(form):
    body = urlencode(form, doseq=True).encode()
    assert parse_form(body) == _reference(body) == form


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe=1", b"a=%ff", b"a=%C3%28", b"&" * MAX_FORM_FIELDS, b"a=1&&b=2&c&=d&a=3", b"a=%zz%2&b=+%2B+"],
)
def test_the_form_parser_refuses_and_accepts_what_parse_qs_does(body):
    assert _parsed(body) == _reference(body)


def test_a_parsed_form_verifies_a_twilio_signature():
    from twilio.request_validator import RequestValidator

    params = {"MessageSid": "SM1", "From": "+14155550100", "Body": "50% off + free & fast"}
    url = "https://example.com/channels/sms/twilio"
    signature = RequestValidator("token").compute_signature(url, params)
    form = parse_form(urlencode(params).encode())
    assert validate_twilio_signature("token", url, form, signature)
    assert validate_twilio_signature("token", "https://example.com:443/channels/sms/twilio", form, signature)
    assert not validate_twilio_signature("other", url, form, signature)


# -- sanitise and encode in one ---------------------------------------------------------------------


def _interaction(text: str, name: str = "Ada") -> Interaction:
    return Interaction(
        id=interaction_id("sms", "SM1"),
        channel="sms",
        direction="inbound",
        occurred_at=datetime(2026, 11, 27, tzinfo=UTC),
        identities=[Identity("phone", "+14155550100")],
        text=text,
        profile={"name": name},
        meta={"provider": "twilio", text[:5]: text},
    )


@given(st.text(), st.text(max_size=10))
def test_sanitized_json_is_sanitize_then_encode(text, name):
    interaction = _interaction(text, name)
    expected = sanitize(interaction)
    value, data = sanitized_json(interaction, ENCODER.encode)
    assert value == expected
    assert data == ENCODER.encode(expected)


def test_clean_input_is_returned_itself_and_dirty_input_cleaned():
    clean = _interaction("Where is my order?\nThanks\t!")
    assert sanitized_json(clean, ENCODER.encode)[0] is clean
    dirty = _interaction("a\x00b\r\nc \udce9")
    value, data = sanitized_json(dirty, ENCODER.encode)
    assert value.text == "ab\nc \ufffd"
    assert msgspec.json.decode(data)["text"] == "ab\nc \ufffd"


# -- which requests the fast path serves ------------------------------------------------------------


class _Framework:
    """The app behind the fast path: records what reached it and answers 299."""

    def __init__(self):
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send):
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _call(app, method: str, path: str, body: bytes, headers: dict[str, str], query: bytes = b""):
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query}
    scope |= {"headers": raw, "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start, body_message = sent
    return start["status"], dict(start["headers"]), body_message["body"]


@pytest.fixture
def fast_path():
    settings = Settings(twilio_auth_token="token", meta_app_secret="secret", telegram_secret_token="tg")
    framework = _Framework()
    services = Services(settings=settings, names=Names())
    return WebhookFastPath(framework, services, max_body_bytes=100), framework, services


async def test_requests_it_does_not_serve_go_to_the_framework(fast_path):
    app, framework, _ = fast_path
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert (await _call(app, "POST", "/channels/sms/twilio", b"a=1", form, query=b"x=1"))[0] == 299
    assert (await _call(app, "GET", "/channels/social/meta", b"", {}))[0] == 299
    assert (await _call(app, "POST", "/api/v1/cases", b"{}", {"content-length": "2"}))[0] == 299
    assert (await _call(app, "POST", "/channels/sms/twilio", b"a=1", form))[0] == 299  # no Content-Length
    too_large = {**form, "content-length": "101"}
    assert (await _call(app, "POST", "/channels/sms/twilio", b"a" * 101, too_large))[0] == 299
    assert len(framework.paths) == 5


async def test_refusals_it_serves_carry_the_contract_body_security_headers_and_a_count(fast_path):
    app, framework, services = fast_path
    body = urlencode({"MessageSid": "SM1", "From": "+14155550100"}).encode()
    headers = {"content-type": "application/x-www-form-urlencoded", "content-length": str(len(body))}
    status, sent_headers, answer = await _call(app, "POST", "/channels/sms/twilio", body, headers)
    assert status == 401
    assert msgspec.json.decode(answer)["error"] == "unauthorized"
    assert sent_headers[b"content-type"] == b"application/json"
    assert sent_headers[b"x-content-type-options"] == b"nosniff"
    assert sent_headers[b"content-security-policy"].startswith(b"default-src 'none'")
    status, _, answer = await _call(app, "POST", "/channels/social/meta", b"{}", {"content-length": "2"})
    assert (status, msgspec.json.decode(answer)["error"]) == (415, "unsupported_media_type")
    assert framework.paths == []
    assert services.counters == {"channel_rejected_unauthorized": 1, "channel_rejected_unsupported_media_type": 1}


def test_headers_are_read_by_lower_case_name_first_value_first():
    headers = _Headers([(b"x-hub-signature-256", b"first"), (b"host", b"h"), (b"x-hub-signature-256", b"second")])
    assert headers.get("x-hub-signature-256") == "first"
    assert headers.get("missing") is None and headers.get("missing", "") == ""
    assert dict(headers) == {"x-hub-signature-256": "first", "host": "h"}
