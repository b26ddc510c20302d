"""Consent and business activities end to end: an SMS "STOP" and "START" through the real Twilio
webhook, consent by API and by an unsubscribe link (and its one-click POST), and activities over
HTTP and over NATS recorded once per type and reference, on the timeline and in the profile."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

import httpx
import msgspec
import pytest
from twilio.request_validator import RequestValidator

from services.domain.consent import sign_unsubscribe, unsubscribe_headers, unsubscribe_key
from services.platform.nats_client import connect
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer, timeline, timeline_until

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://switchboard.example.com"
OUR_NUMBER = "+15005550006"


@pytest.fixture
async def srv(settings, names):
    from services.bootstrap import ROLES  # noqa: PLC0415
    from services.server import Server  # noqa: PLC0415

    settings = settings.with_(public_url=PUBLIC_URL)
    server = Server(settings, ROLES, http=("127.0.0.1", 0), smtp=("127.0.0.1", 0), names=names)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def api(srv, admin_headers):
    async with httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as client:
        yield client


async def _sms(srv, sender: str, body: str) -> None:
    sid = "SM" + secrets.token_hex(16)
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "1" * 32, "From": sender, "To": OUR_NUMBER}
    params |= {"Body": body, "NumMedia": "0"}
    signature = RequestValidator(srv.settings.twilio_auth_token).compute_signature(
        PUBLIC_URL + "/channels/sms/twilio", params
    )
    async with httpx.AsyncClient(base_url=srv.http_url) as client:
        response = await client.post(
            "/channels/sms/twilio",
            content=urlencode(params),
            headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
        )
    assert response.status_code == 200, response.text


async def _profile_where(api, customer_id: str, predicate) -> dict:
    async def fetch():
        return (await api.get(f"/api/v1/customers/{customer_id}")).json()

    return await eventually(fetch, predicate)


async def test_sms_stop_and_start_change_marketing_consent_and_open_no_case(srv, api):
    number = "+34600111222"
    await _sms(srv, number, "Hola, ¿dónde está mi pedido?")
    found = await customer(api, "phone", number)
    [first] = await timeline_until(api, found["id"], 1)
    assert first["case_id"] is not None
    await _sms(srv, number, "  stop ")
    items = await timeline_until(api, found["id"], 2)
    stop = next(i for i in items if i["text"].strip().lower() == "stop")
    profile = await _profile_where(api, found["id"], lambda p: p["consent"].get("marketing", {}).get("sms") is False)
    assert profile["consent"] == {"marketing": {"sms": False}}
    assert profile["open_cases"] == 1  # the STOP opened nothing of its own
    cases = (await api.get("/api/v1/cases")).json()["items"]
    assert [c["id"] for c in cases if c["customer_id"] == found["id"]] == [first["case_id"]]
    assert stop["case_id"] in (None, first["case_id"])

    await _sms(srv, number, "ALTA")
    await _profile_where(api, found["id"], lambda p: p["consent"]["marketing"]["sms"] is True)
    await _sms(srv, number, "please stop sending me the invoice twice")  # a message, not a keyword
    await timeline_until(api, found["id"], 4)
    profile = await _profile_where(api, found["id"], lambda p: p["interaction_count"] >= 4)
    assert profile["consent"]["marketing"]["sms"] is True


async def test_consent_by_api_and_by_unsubscribe_link(srv, api):
    await _sms(srv, "+34600333444", "hello")
    found = await customer(api, "phone", "+34600333444")
    response = await api.post(f"/api/v1/customers/{found['id']}/consent", json={"channel": "email", "granted": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["consent"] == {"marketing": {"email": True}} and body["position"] > 0
    for bad in (
        {"channel": "fax", "granted": True},
        {"channel": "email", "granted": True, "purpose": "spam"},
        {"channel": "email"},
    ):
        refused = await api.post(f"/api/v1/customers/{found['id']}/consent", json=bad)
        assert refused.status_code == 400, bad

    key = unsubscribe_key(srv.settings.master_key_bytes)
    headers = unsubscribe_headers(PUBLIC_URL, key, __import__("uuid").UUID(found["id"]))
    url = headers["List-Unsubscribe"].strip("<>")
    assert (
        url.startswith(PUBLIC_URL + "/unsubscribe/")
        and headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    )
    path = url.removeprefix(PUBLIC_URL)
    async with httpx.AsyncClient(base_url=srv.http_url) as public:
        page = await public.get(path)
        assert page.status_code == 200 and "unsubscribed" in page.text
        again = await public.post(path, content="List-Unsubscribe=One-Click")  # RFC 8058 one-click
        assert again.status_code == 200
        forged = sign_unsubscribe(b"x" * 32, __import__("uuid").UUID(found["id"]), "email")
        assert (await public.get(f"/unsubscribe/{forged}")).status_code == 400
        assert (await public.get("/unsubscribe/not-a-token")).status_code == 400
    profile = await _profile_where(api, found["id"], lambda p: p["consent"]["marketing"]["email"] is False)
    assert profile["consent"]["marketing"]["email"] is False
    events = [
        e
        for e in (await api.get(f"/api/v1/customers/{found['id']}/timeline")).json()["items"]
        if e["channel"] == "email"
    ]
    assert events == []  # consent is not a touchpoint


ORDER = {
    "customer": {"kind": "email", "value": "Lucia@Example.com"},
    "type": "order.placed",
    "occurred_at": "2026-11-20T10:00:00+01:00",
    "reference": "ORD-1001",
    "amount": "42.50",
    "currency": "EUR",
    "data": {"items": 2},
}


async def test_activities_over_http_and_nats_are_recorded_once_on_timeline_and_profile(srv, api):
    first = await api.post("/api/v1/activities", json=ORDER)
    assert first.status_code == 202, first.text
    retry = await api.post("/api/v1/activities", json=ORDER)  # the shop retries: the same activity
    assert retry.status_code == 202 and retry.json()["id"] == first.json()["id"]
    nc = await connect(srv.settings)
    try:
        js = nc.jetstream()
        same = dict(ORDER, source="shop")
        await js.publish(srv.sb.names.activity_subject("shop"), msgspec.json.encode(same))  # both paths: once
        late = dict(ORDER, type="order.delivered_late", reference="ORD-1001", amount=None, currency=None)
        await js.publish(srv.sb.names.activity_subject("erp"), msgspec.json.encode(late))
        await js.publish(srv.sb.names.activity_subject("erp"), b'{"not": "an activity"}')  # dead-lettered
        paid = dict(ORDER, type="order.placed", reference="ORD-1002", amount="10", occurred_at="2026-11-25T09:00:00Z")
        await js.publish(srv.sb.names.activity_subject("shop"), msgspec.json.encode(paid))
    finally:
        await nc.close()

    found = await customer(api, "email", "lucia@example.com")  # created by the activity itself
    items = await timeline_until(api, found["id"], 3)
    assert sorted((i["channel"], i["kind"], i["text"]) for i in items) == [
        ("activity", "order.delivered_late", "order.delivered_late ORD-1001"),
        ("activity", "order.placed", "order.placed ORD-1001 (42.50 EUR)"),
        ("activity", "order.placed", "order.placed ORD-1002 (10 EUR)"),
    ]
    assert all(i["case_id"] is None and i["direction"] == "inbound" for i in items)
    only = (await api.get(f"/api/v1/customers/{found['id']}/timeline", params={"channel": "activity"})).json()
    assert len(only["items"]) == 3
    profile = await _profile_where(api, found["id"], lambda p: p["activities"] and p["activities"]["orders"] == 2)
    assert profile["activities"]["amounts"] == {"EUR": "52.50"}
    assert profile["activities"]["by_type"]["order.placed"]["count"] == 2
    assert profile["activities"]["by_type"]["order.delivered_late"]["count"] == 1
    assert profile["activities"]["last_purchase_at"].startswith("2026-11-25T09:00:00")
    assert len(await timeline(api, found["id"])) == 3  # nothing twice


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"type": "Order Placed"}, "type"),
        ({"occurred_at": "2026-11-20T10:00:00"}, "time zone"),
        ({"reference": ""}, "reference"),
        ({"currency": "euros"}, "currency"),
        ({"amount": "NaN"}, "amount"),
        ({"customer": {"kind": "phone", "value": "not a number"}}, "customer"),
        ({"colour": "red"}, "colour"),
        ({"data": {"blob": "x" * 9000}}, "data"),
    ],
)
async def test_a_bad_activity_is_refused_and_records_nothing(api, change, says):
    response = await api.post("/api/v1/activities", json={**ORDER, **change})
    assert response.status_code == 400, response.text
    assert says in response.text
