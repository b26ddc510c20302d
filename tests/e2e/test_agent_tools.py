"""Agent tools end to end, as users drive them: CSAT surveys answered by an SMS reply (through a
fake Twilio on loopback) and by the rating link of an email survey (through a fake SMTP relay),
canned replies with their placeholders filled, and custom attributes checked by type."""

from __future__ import annotations

import contextlib
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from twilio.request_validator import RequestValidator

from services.api.auth import create_token
from services.bootstrap import ROLES
from services.core.commands import run_command
from services.domain.config import Queue
from services.domain.csat import SURVEY_QUESTION, csat_key, sign_token
from services.platform.embedded import free_port
from services.server import Server
from tests.fixtures.providers import FakeHTTPProvider, FakeSMTPRelay, eventually
from tests.fixtures.recorded import case_event_until, case_events, customer, stored_events, timeline_until

pytestmark = pytest.mark.e2e

ACCOUNT_SID = "AC" + "2" * 32
OUR_NUMBER = "+15005550006"
PUBLIC_URL = "https://switchboard.example.com"


@contextlib.asynccontextmanager
async def _running(settings, names, port: int | None = None):
    port = port or free_port()
    srv = Server(settings, ROLES, http=("127.0.0.1", port), smtp=("127.0.0.1", 0), names=names)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _configure_queue(srv: Server, name: str, csat: bool = True) -> None:
    store = srv.sb.open_store()
    at = datetime.now(UTC)
    run_command(store, Queue, Queue.stream_id(name), lambda q: q.configure(name, "test", at, csat=csat), create=True)


@pytest.fixture
async def twilio():
    fake = FakeHTTPProvider(default=lambda r: (201, {"sid": "SM" + secrets.token_hex(16), "status": "queued"}))
    await fake.start()
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
    )
    async with _running(settings, names) as srv:
        yield srv


@pytest.fixture
async def api(sms_server, admin_headers):
    async with httpx.AsyncClient(base_url=sms_server.http_url, headers=admin_headers) as client:
        yield client


async def _sms(srv: Server, sender: str, body: str, **extra) -> None:
    sid = "SM" + secrets.token_hex(16)
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT_SID, "From": sender, "To": OUR_NUMBER}
    params |= {"Body": body, "NumMedia": "0", **extra}
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


async def _sms_case(srv: Server, api: httpx.AsyncClient, number: str, text: str, **extra) -> tuple[dict, str]:
    await _sms(srv, number, text, **extra)
    kind_value = number.removeprefix("whatsapp:")
    found = await customer(api, "phone", kind_value)
    [item] = await timeline_until(api, found["id"], 1)
    return found, item["case_id"]


async def _case_view(api: httpx.AsyncClient, case_id: str, predicate) -> dict:
    async def fetch():
        return (await api.get(f"/api/v1/cases/{case_id}")).json()

    return await eventually(fetch, predicate)


# -- CSAT by SMS reply -----------------------------------------------------------------------------


async def test_a_resolved_sms_case_gets_a_survey_and_a_reply_of_5_records_csat_without_a_new_case(
    sms_server, api, twilio
):
    _configure_queue(sms_server, "sms")
    number = "+14155550170"
    found, case_id = await _sms_case(sms_server, api, number, "My router blinks red")
    assert (await api.post(f"/api/v1/cases/{case_id}/resolve")).status_code == 200

    async def sent():
        return twilio.requests

    [survey] = await eventually(sent, lambda r: len(r) == 1)
    form = survey.form()
    assert form["To"] == number and form["Body"] == SURVEY_QUESTION  # SMS: no link, just the question
    requested = await case_event_until(sms_server, case_id, "case.CsatRequested")
    resolved = next(e for e in await case_events(sms_server, case_id) if e.NAME == "case.Resolved")
    assert requested.until == resolved.occurred_at + timedelta(days=7)

    await _sms(sms_server, number, " 5 ")
    recorded = await case_event_until(sms_server, case_id, "case.CsatRecorded")
    assert (recorded.score, recorded.source) == (5, "reply")
    items = await timeline_until(api, found["id"], 3)  # the question, the survey, the answer
    assert items[0]["text"] == " 5 " or items[0]["text"].strip() == "5"
    assert {i["case_id"] for i in items} == {case_id}  # no new case
    view = await _case_view(api, case_id, lambda v: v["csat"] == 5)
    assert view["status"] == "resolved"
    cases = (await api.get("/api/v1/cases")).json()["items"]
    assert [c["id"] for c in cases if c["customer_id"] == found["id"]] == [case_id]

    # A message that is no score opens a new case, as always.
    await _sms(sms_server, number, "Still blinking, 5 times a minute")
    items = await timeline_until(api, found["id"], 4)
    assert items[0]["case_id"] not in (None, case_id)
    assert len([e for e in await case_events(sms_server, case_id) if e.NAME == "case.CsatRecorded"]) == 1


# -- canned responses ------------------------------------------------------------------------------


async def _token(settings, role: str, name: str) -> dict:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        _, token = create_token(conn, role, name)
    return {"Authorization": f"Bearer {token}"}


async def test_a_canned_reply_goes_out_with_its_placeholders_filled(sms_server, api, twilio, settings):
    text = "Hi {{customer.name}}, {{ agent.name }} here about case {{case.id}}."
    created = await api.post("/api/v1/canned-responses", json={"shortcut": "hello", "text": text})
    assert created.status_code == 201, created.text
    canned_id = created.json()["id"]
    assert created.json()["position"] > 0
    agent = await _token(settings, "agent", "Grace Hopper")
    async with httpx.AsyncClient(base_url=sms_server.http_url, headers=agent) as as_agent:
        # Read your write: the list is a read model, answered once it applied the create.
        fresh = {"Sb-Min-Position": str(created.json()["position"])}
        listed = (await as_agent.get("/api/v1/canned-responses", headers=fresh)).json()["items"]
        assert [(c["id"], c["shortcut"], c["text"]) for c in listed] == [(canned_id, "hello", text)]
        refused = await as_agent.post("/api/v1/canned-responses", json={"shortcut": "x", "text": "y"})
        assert refused.status_code == 403

        # WhatsApp through Twilio tells us the customer's name; plain SMS does not.
        named, named_case = await _sms_case(
            sms_server, api, "whatsapp:+14155550171", "hola", To="whatsapp:+14155238886", ProfileName="Lucía"
        )
        _, nameless_case = await _sms_case(sms_server, api, "+14155550172", "hello")
        for case_id in (named_case, nameless_case):
            response = await as_agent.post(f"/api/v1/cases/{case_id}/reply", json={"canned": canned_id})
            assert response.status_code == 200, response.text

        async def sent():
            return twilio.requests

        bodies = {r.form()["To"]: r.form()["Body"] for r in await eventually(sent, lambda r: len(r) == 2)}
        assert bodies["whatsapp:+14155550171"] == f"Hi Lucía, Grace Hopper here about case {named_case}."
        assert bodies["+14155550172"] == f"Hi, Grace Hopper here about case {nameless_case}."

        # Exactly one of text and canned; an unknown or deleted canned response: 400, nothing sent.
        before = await _replies_requested(settings.database_url)
        for body in ({}, {"text": "x", "canned": canned_id}, {"canned": str(uuid.uuid4())}, {"canned": named_case}):
            response = await as_agent.post(f"/api/v1/cases/{named_case}/reply", json=body)
            assert response.status_code == 400, (body, response.text)
            assert set(response.json()) == {"error", "detail"}
        assert (await api.delete(f"/api/v1/canned-responses/{canned_id}")).status_code == 200
        gone = await as_agent.post(f"/api/v1/cases/{named_case}/reply", json={"canned": canned_id})
        assert gone.status_code == 400 and "deleted" in gone.json()["detail"]
        # (counted by type: the relay records the earlier replies' delivery meanwhile)
        assert await _replies_requested(settings.database_url) == before

        async def canned_list():
            return (await as_agent.get("/api/v1/canned-responses")).json()["items"]

        await eventually(canned_list, lambda items: items == [])
        assert (await api.delete(f"/api/v1/canned-responses/{uuid.uuid4()}")).status_code == 404


# -- custom attributes -----------------------------------------------------------------------------


async def test_attributes_are_typed_recorded_and_shown_in_profile_and_case(sms_server, api, settings):
    for key, body in (
        ("plan", {"type": "list", "applies_to": "customer", "options": ["free", "pro"]}),
        ("seats", {"type": "number", "applies_to": "customer"}),
        ("renewal", {"type": "date", "applies_to": "customer"}),
        ("vip", {"type": "boolean", "applies_to": "customer"}),
        ("order", {"type": "text", "applies_to": "case"}),
    ):
        response = await api.put(f"/api/v1/attribute-definitions/{key}", json=body)
        assert response.status_code == 200, response.text
    for key, body in (
        ("Bad Key", {"type": "text", "applies_to": "case"}),
        ("colour", {"type": "list", "applies_to": "case"}),  # a list needs options
        ("size", {"type": "colour", "applies_to": "case"}),
        ("size", {"type": "text", "applies_to": "order"}),
    ):
        assert (await api.put(f"/api/v1/attribute-definitions/{key}", json=body)).status_code == 400, (key, body)
    agent = await _token(settings, "agent", "agent-1")
    async with httpx.AsyncClient(base_url=sms_server.http_url, headers=agent) as as_agent:
        denied = await as_agent.put("/api/v1/attribute-definitions/x", json={"type": "text", "applies_to": "case"})
        assert denied.status_code == 403

        async def definitions():
            return (await as_agent.get("/api/v1/attribute-definitions")).json()["items"]

        listed = await eventually(definitions, lambda items: len(items) == 5)
        assert {d["key"]: (d["type"], d["applies_to"], d["options"]) for d in listed}["plan"] == (
            "list",
            "customer",
            ["free", "pro"],
        )

        found, case_id = await _sms_case(sms_server, api, "+14155550173", "upgrade me")
        path = f"/api/v1/customers/{found['id']}/attributes"
        before = await stored_events(settings.database_url)
        for body, key in (
            ({"plan": "gold"}, "plan"),
            ({"seats": "ten"}, "seats"),
            ({"seats": 10, "renewal": "next week"}, "renewal"),
            ({"vip": "yes"}, "vip"),
            ({"order": "A-1"}, "order"),  # a case attribute
            ({"nickname": "Al"}, "nickname"),  # not defined
        ):
            response = await as_agent.patch(path, json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"] == "malformed" and key in response.json()["detail"]
        assert await stored_events(settings.database_url) == before  # nothing recorded, not even in part

        good = {"plan": "pro", "seats": 10, "renewal": "2026-12-01", "vip": True}
        response = await as_agent.patch(path, json=good)
        assert response.status_code == 200, response.text
        assert response.json()["attributes"] == good and response.json()["position"] > before
        response = await as_agent.patch(path, json={"vip": None})  # null removes
        assert response.json()["attributes"] == {"plan": "pro", "seats": 10, "renewal": "2026-12-01"}

        async def profile():
            return (await as_agent.get(f"/api/v1/customers/{found['id']}")).json()

        shown = await eventually(profile, lambda p: "vip" not in p["attributes"] and p["attributes"])
        assert shown["attributes"] == {"plan": "pro", "seats": 10, "renewal": "2026-12-01"}

        assert (await as_agent.patch(f"/api/v1/cases/{case_id}/attributes", json={"plan": "pro"})).status_code == 400
        response = await as_agent.patch(f"/api/v1/cases/{case_id}/attributes", json={"order": "A-1"})
        assert response.status_code == 200 and response.json()["attributes"] == {"order": "A-1"}
        view = await _case_view(as_agent, case_id, lambda v: v["attributes"])
        assert view["attributes"] == {"order": "A-1"}
        missing = await as_agent.patch(f"/api/v1/cases/{uuid.uuid4()}/attributes", json={"order": "A-1"})
        assert missing.status_code == 404


# -- CSAT by the email survey's link, and for connectors -------------------------------------------


@pytest.fixture
async def relay():
    relay = await FakeSMTPRelay().start()
    yield relay
    await relay.stop()


async def test_an_email_survey_link_records_csat_once_and_bad_tokens_are_refused(settings, names, relay, admin_headers):
    port = free_port()
    settings = settings.with_(
        smtp_relay=relay.address,
        email_from="Support <support@shop.test>",
        public_url=f"http://127.0.0.1:{port}",
        outbound_retry_base_seconds=0.05,
        smtp_trusted_relays="127.0.0.1",
        email_webhook_trusted=True,
    )
    async with (
        _running(settings, names, port) as srv,
        httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api,
        httpx.AsyncClient(base_url=srv.http_url) as browser,
    ):
        _configure_queue(srv, "email")
        raw = (
            b"From: Ada <ada@example.org>\r\nTo: support@shop.test\r\nSubject: Kettle\r\n"
            b"Message-ID: <kettle@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"My kettle leaks.\r\n"
        )
        async with httpx.AsyncClient(base_url=srv.http_url) as client:
            response = await client.post(
                "/channels/email/inbound",
                content=raw,
                headers={"content-type": "message/rfc822", "authorization": f"Bearer {settings.ingest_token}"},
            )
        assert response.status_code < 300, response.text
        found = await customer(api, "email", "ada@example.org")
        [item] = await timeline_until(api, found["id"], 1)
        case_id = item["case_id"]
        assert (await api.post(f"/api/v1/cases/{case_id}/resolve")).status_code == 200

        async def received():
            return relay.messages()

        [survey] = await eventually(received, lambda m: len(m) == 1)
        body = survey.get_content()
        assert SURVEY_QUESTION in body and survey["To"] == "ada@example.org"
        links = dict(re.findall(r"^([1-5]) - (\S+)", body, re.M))
        assert sorted(links) == ["1", "2", "3", "4", "5"]
        link = links["4"].removeprefix(settings.public_url)
        assert link.startswith("/csat/") and link.endswith("?score=4")

        page = await browser.get(link)  # no bearer token: the signed token is the credential
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "4 out of 5" in page.text
        recorded = await case_event_until(srv, case_id, "case.CsatRecorded")
        assert (recorded.score, recorded.source) == (4, "link")
        again = await browser.get(links["2"].removeprefix(settings.public_url))
        assert again.status_code == 200 and "already" in again.text  # the first answer counts
        await _case_view(api, case_id, lambda v: v["csat"] == 4)
        assert len([e for e in await case_events(srv, case_id) if e.NAME == "case.CsatRecorded"]) == 1

        token = link.split("/")[2].split("?")[0]
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        key = csat_key(settings.master_key_bytes)
        expired = sign_token(key, uuid.UUID(case_id), datetime.now(UTC) - timedelta(seconds=1))
        for path, status in (
            (f"/csat/{forged}?score=4", 400),
            ("/csat/not-a-token?score=4", 400),
            (f"/csat/{token}?score=9", 400),
            (f"/csat/{token}", 400),
            (f"/csat/{expired}?score=4", 410),
        ):
            response = await browser.get(path)
            assert response.status_code == status, (path, response.text)
            assert set(response.json()) == {"error", "detail"}

        # A connector's score: recorded whenever it comes, 400 outside 1-5.
        for bad in ({"score": 0}, {"score": 6}, {"score": "five"}, {"score": 2.5}, {}):
            assert (await api.post(f"/api/v1/cases/{case_id}/csat", json=bad)).status_code == 400
        response = await api.post(f"/api/v1/cases/{case_id}/csat", json={"score": 2, "comment": "slow"})
        assert response.status_code == 200 and response.json()["position"] > 0
        await _case_view(api, case_id, lambda v: v["csat"] == 2)


async def _replies_requested(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM sb_events WHERE topic = 'case.ReplyRequested'")
        return (await cur.fetchone())[0]
