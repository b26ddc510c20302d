"""The email channel as mail systems use it: SMTP into the listener, raw MIME into the webhook, and
agents' replies out through an SMTP relay, threaded onto the customer's conversation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import smtplib
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx
import psycopg
import pytest

from services.server import Server
from tests.fixtures.providers import FakeSMTPRelay, eventually
from tests.fixtures.recorded import customer as _lookup
from tests.fixtures.recorded import published as _published
from tests.fixtures.recorded import running_server, stored_events
from tests.fixtures.recorded import timeline as _timeline
from tests.fixtures.recorded import timeline_until as _timeline_until

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parents[1] / "fixtures" / "email"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
MAX_BODY = 256 * 1024
SUPPORT = "Switchboard Support <support@shop.test>"


@pytest.fixture
async def relay():
    relay = await FakeSMTPRelay().start()
    yield relay
    await relay.stop()


@pytest.fixture
async def mail_server(settings, names, relay):
    """Every role, with outbound email through the loopback relay and quick retries; the test's own
    SMTP connections (loopback) and webhook posts vouch for From, as the company's MX would."""
    settings = settings.with_(
        smtp_relay=relay.address,
        email_from=SUPPORT,
        outbound_retry_base_seconds=0.05,
        max_body_bytes=MAX_BODY,
        smtp_trusted_relays="127.0.0.1",
        email_webhook_trusted=True,
    )
    async with running_server(settings, names) as srv:
        yield srv


@pytest.fixture
async def api(mail_server, admin_headers):
    async with httpx.AsyncClient(base_url=mail_server.http_url, headers=admin_headers) as client:
        yield client


def _mail(
    sender: str,
    subject: str,
    body: str,
    message_id: str,
    *,
    in_reply_to: str | None = None,
    references: str | None = None,
    extra: str = "",
) -> bytes:
    # No Date header: the time of receipt orders the timeline.
    headers = [f"From: {sender}", "To: support@shop.test", f"Subject: {subject}", f"Message-ID: <{message_id}>"]
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        headers.append(f"References: {references}")
    headers += [h for h in extra.split("\n") if h]
    headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


async def _customer(api: httpx.AsyncClient, address: str) -> dict:
    return await _lookup(api, "email", address)


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def _smtp_send(server: Server, raw: bytes, sender: str = "someone@example.org") -> dict:
    """Delivers over SMTP as an MTA would (smtplib blocks: off the loop the server runs on)."""

    def send() -> dict:
        with smtplib.SMTP(*server.smtp, timeout=10) as smtp:
            return smtp.sendmail(sender, ["support@shop.test"], raw)

    return await asyncio.to_thread(send)


async def _webhook(server: Server, raw: bytes, *, token: str | None, content_type: str = "message/rfc822"):
    headers = {"content-type": content_type}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        return await client.post("/channels/email/inbound", content=raw, headers=headers)


# -- inbound -------------------------------------------------------------------------------------


async def test_a_thread_opens_one_case_and_a_reply_joins_it(mail_server, api, settings):
    first = _mail("Ada Lovelace <ada@example.org>", "Broken kettle", "My kettle leaks.", "k1@example.org")
    assert await _smtp_send(mail_server, first) == {}  # every recipient accepted: 250 after the ack
    customer = await _customer(api, "ada@example.org")
    assert customer["name"] == "Ada Lovelace"
    [opened] = await _timeline_until(api, customer["id"], 1)
    assert (opened["channel"], opened["direction"], opened["kind"], opened["text"]) == (
        "email",
        "inbound",
        "message",
        "My kettle leaks.",
    )

    reply = _mail(
        "ada@example.org",
        "Re: Broken kettle",
        "Photo attached soon.\n\nOn Monday you wrote:\n> hi",
        "k3@example.org",
        in_reply_to="k2@shop.test",
        references="<k1@example.org> <k2@shop.test>",
    )
    response = await _webhook(mail_server, reply, token=settings.ingest_token)
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is False

    items = await _timeline_until(api, customer["id"], 2)
    assert [i["text"] for i in items] == ["Photo attached soon.", "My kettle leaks."]
    assert items[0]["case_id"] == items[1]["case_id"] == opened["case_id"]

    async def case():
        return (await api.get(f"/api/v1/cases/{opened['case_id']}")).json()

    found = await eventually(case, lambda c: c["message_count"] == 2)
    assert found["channel"] == "email" and found["status"] == "open"


async def test_the_same_message_delivered_twice_is_recorded_once(mail_server, api, settings):
    raw = _mail("bob@example.org", "Invoice", "Where is my invoice?", "dup-1@example.org")
    assert await _smtp_send(mail_server, raw) == {}
    again = await _webhook(mail_server, raw, token=settings.ingest_token)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert await _smtp_send(mail_server, raw) == {}
    customer = await _customer(api, "bob@example.org")
    await _timeline_until(api, customer["id"], 1)
    await asyncio.sleep(0.3)  # anything recorded twice would have arrived by now
    assert len(await _timeline(api, customer["id"])) == 1
    assert await _published(mail_server) == 1


async def test_auto_replies_are_recorded_without_a_case_and_bounces_register_nobody(mail_server, api, settings):
    for name in ("08_out_of_office.eml", "09_dsn_bounce.eml"):
        response = await _webhook(mail_server, (FIXTURES / name).read_bytes(), token=settings.ingest_token)
        assert response.status_code == 200, response.text
    customer = await _customer(api, EXPECTED["08_out_of_office.eml"]["sender"])
    [item] = await _timeline_until(api, customer["id"], 1)
    assert item["kind"] == "auto_reply" and item["case_id"] is None
    # The bounce is the mail server's, about a message we never sent: it changes nothing.
    await asyncio.sleep(0.5)
    missing = await api.get(
        "/api/v1/customers/lookup", params={"kind": "email", "value": EXPECTED["09_dsn_bounce.eml"]["sender"]}
    )
    assert missing.status_code == 404
    assert (await api.get("/api/v1/cases")).json()["items"] == []


def _bounce_of(message_id: str, recipient: str) -> bytes:
    """A delivery status notification (RFC 3464) as a receiving MTA writes it, returning our message."""
    boundary = "dsn-boundary"
    return "\r\n".join(
        [
            "From: Mail Delivery Subsystem <mailer-daemon@mx.example.org>",
            "To: support@shop.test",
            "Subject: Undelivered Mail Returned to Sender",
            "Message-ID: <bounce-1@mx.example.org>",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
            "",
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            "Your message could not be delivered.",
            f"--{boundary}",
            "Content-Type: message/delivery-status",
            "",
            "Reporting-MTA: dns; mx.example.org",
            "",
            f"Final-Recipient: rfc822; {recipient}",
            "Action: failed",
            "Status: 5.1.1",
            f"--{boundary}",
            "Content-Type: text/rfc822-headers",
            "",
            f"Message-ID: <{message_id}>",
            f"To: {recipient}",
            "Subject: Re: Order 7781",
            f"--{boundary}--",
            "",
        ]
    ).encode()


async def test_a_bounce_of_our_reply_marks_the_reply_failed(mail_server, api, relay, settings):
    customer, case_id = await _open_case(mail_server, api, "gone@example.org", "b1@example.org")
    response = await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Here you go."})
    reply_id = response.json()["reply_id"]

    async def received():
        return relay.messages()

    [sent] = await eventually(received, lambda m: len(m) == 1)
    await _timeline_until(api, customer["id"], 2)  # our reply is recorded (and its Message-ID with it)
    bounce = _bounce_of(sent["Message-ID"].strip("<>"), "gone@example.org")
    assert (await _webhook(mail_server, bounce, token=settings.ingest_token)).status_code == 200

    async def reply_status():
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            cur = await conn.execute("SELECT status, reason FROM proj_replies WHERE reply_id = %s", (reply_id,))
            return await cur.fetchone()

    status, reason = await eventually(reply_status, lambda row: row is not None and row[0] == "failed")
    assert reason.startswith("bounced")
    lookup = await api.get(
        "/api/v1/customers/lookup", params={"kind": "email", "value": "mailer-daemon@mx.example.org"}
    )
    assert lookup.status_code == 404


async def test_attachments_are_kept_and_served_by_sha256(mail_server, api, settings):
    raw = (FIXTURES / "07_pdf_and_image_attachments.eml").read_bytes()
    message = BytesParser(policy=policy.default).parsebytes(raw)
    sent = [
        part.get_payload(decode=True)
        for part in message.walk()
        if not part.is_multipart() and part.get_content_maintype() != "text"
    ]
    assert await _smtp_send(mail_server, _crlf(raw)) == {}

    customer = await _customer(api, "zoe@example.org")
    [item] = await _timeline_until(api, customer["id"], 1)
    expected = EXPECTED["07_pdf_and_image_attachments.eml"]["attachments"]
    assert [(a["name"], a["content_type"], a["size"]) for a in item["attachments"]] == [
        (e["name"], e["content_type"], e["size"]) for e in expected
    ]
    assert [a["sha256"] for a in item["attachments"]] == [hashlib.sha256(data).hexdigest() for data in sent]
    for attachment, data in zip(item["attachments"], sent, strict=True):
        response = await api.get(f"/api/v1/attachments/{attachment['sha256']}")
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "application/octet-stream"
    async with httpx.AsyncClient(base_url=mail_server.http_url) as anonymous:
        assert (await anonymous.get(f"/api/v1/attachments/{item['attachments'][0]['sha256']}")).status_code == 401
    assert (await api.get("/api/v1/attachments/" + "0" * 64)).status_code == 404
    assert (await api.get("/api/v1/attachments/not-a-digest")).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "01_gmail_alternative_reply.eml",
        "04_windows1252_8bit.eml",
        "05_shift_jis.eml",
        "11_thread_reply_references.eml",
        "17_outlook_web_german_reply.eml",
    ],
)
async def test_real_world_mails_reach_the_timeline_as_written(mail_server, api, settings, name):
    response = await _webhook(mail_server, (FIXTURES / name).read_bytes(), token=settings.ingest_token)
    assert response.status_code == 200, response.text
    expected = EXPECTED[name]
    customer = await _customer(api, expected["sender"])
    [item] = await _timeline_until(api, customer["id"], 1)
    assert (item["channel"], item["direction"], item["kind"], item["text"]) == (
        "email",
        "inbound",
        expected["kind"],
        expected["text"],
    )
    assert [a["name"] for a in item["attachments"]] == [a["name"] for a in expected["attachments"]]


@pytest.mark.parametrize(
    "token,content_type,body,status,code",
    [
        (None, "message/rfc822", b"From: a@example.org\r\n\r\nhi", 401, "unauthorized"),
        ("wrong", "message/rfc822", b"From: a@example.org\r\n\r\nhi", 401, "unauthorized"),
        ("ok", "text/plain", b"From: a@example.org\r\n\r\nhi", 415, "unsupported_media_type"),
        ("ok", "message/rfc822", b"this is not an email at all", 400, "malformed"),
        ("ok", "message/rfc822", b"", 400, "malformed"),
        ("ok", "message/rfc822", b"\x00\xff\xfe" * 50, 400, "malformed"),
        ("ok", "message/rfc822", b"From: a@example.org\r\n\r\n" + b"x" * (MAX_BODY + 1), 413, "too_large"),
    ],
)
async def test_bad_webhook_requests_get_the_contract_error_and_record_nothing(
    mail_server, settings, token, content_type, body, status, code
):
    token = settings.ingest_token if token == "ok" else token
    response = await _webhook(mail_server, body, token=token, content_type=content_type)
    assert response.status_code == status
    assert response.json()["error"] == code and response.json()["detail"]
    await asyncio.sleep(0.2)
    assert await _published(mail_server) == 0
    assert await stored_events(settings.database_url) == 0


async def test_smtp_refuses_unreadable_and_oversized_messages_and_records_nothing(mail_server, settings):
    with pytest.raises(smtplib.SMTPDataError) as unreadable:
        await _smtp_send(mail_server, b"Subject: no sender here\r\n\r\nhello\r\n")
    assert unreadable.value.smtp_code == 554
    big = _mail("c@example.org", "big", "x" * 1000 + ("\n" + "y" * 900) * (MAX_BODY // 900), "big@example.org")
    with pytest.raises(smtplib.SMTPException) as oversized:
        await _smtp_send(mail_server, big)
    assert getattr(oversized.value, "smtp_code", None) == 552
    await asyncio.sleep(0.2)
    assert await _published(mail_server) == 0
    assert await stored_events(settings.database_url) == 0


# -- outbound ------------------------------------------------------------------------------------


async def _open_case(mail_server, api, address: str, message_id: str) -> tuple[dict, str]:
    raw = _mail(f"Grace <{address}>", "Order 7781", "Where is order 7781?", message_id)
    assert await _smtp_send(mail_server, raw) == {}
    customer = await _customer(api, address)
    [item] = await _timeline_until(api, customer["id"], 1)
    return customer, item["case_id"]


async def test_an_agent_reply_goes_out_in_the_thread_and_the_answer_joins_the_case(mail_server, api, relay):
    customer, case_id = await _open_case(mail_server, api, "grace@example.org", "o1@example.org")
    response = await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "It ships today. Grüße!"})
    assert response.status_code == 200, response.text

    async def received():
        return relay.messages()

    [sent] = await eventually(received, lambda m: len(m) == 1)
    assert relay.received[0][1] == ["grace@example.org"]
    assert sent["To"] == "grace@example.org" and sent["From"] == SUPPORT
    assert sent["Subject"] == "Re: Order 7781"
    assert sent["In-Reply-To"] == "<o1@example.org>" and sent["References"] == "<o1@example.org>"
    assert sent.get_content().strip() == "It ships today. Grüße!"

    items = await _timeline_until(api, customer["id"], 2)
    assert (items[0]["direction"], items[0]["text"], items[0]["case_id"]) == (
        "outbound",
        "It ships today. Grüße!",
        case_id,
    )

    # The customer answers our reply: their mail client threads onto our Message-ID.
    ours = sent["Message-ID"].strip("<>")
    answer = _mail(
        "grace@example.org",
        "Re: Order 7781",
        "Thanks!",
        "o3@example.org",
        in_reply_to=ours,
        references=f"<o1@example.org> <{ours}>",
    )
    assert await _smtp_send(mail_server, answer) == {}
    items = await _timeline_until(api, customer["id"], 3)
    assert items[0]["text"] == "Thanks!" and items[0]["case_id"] == case_id

    await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "You're welcome."})
    second = (await eventually(received, lambda m: len(m) == 2))[1]
    assert second["In-Reply-To"] == "<o3@example.org>"
    assert second["References"] == f"<o1@example.org> <{ours}> <o3@example.org>"


async def test_a_reply_waits_out_a_relay_outage_and_is_delivered_once(mail_server, api, relay):
    customer, case_id = await _open_case(mail_server, api, "hedy@example.org", "h1@example.org")
    await relay.stop()
    response = await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "On its way."})
    assert response.status_code == 200
    await asyncio.sleep(0.8)  # a few attempts against the closed port
    assert relay.received == []
    await relay.start()

    async def received():
        return relay.received

    await eventually(received, lambda r: len(r) == 1)
    items = await _timeline_until(api, customer["id"], 2)
    assert items[0]["direction"] == "outbound" and items[0]["text"] == "On its way."
    await asyncio.sleep(0.5)
    assert len(relay.received) == 1
