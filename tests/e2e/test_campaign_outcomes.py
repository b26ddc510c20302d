"""What became of a campaign's messages, end to end through the real channel endpoints and fake
providers on loopback: Twilio's status callbacks (repeated, as Twilio does) count each message
`delivered` or `failed` once, the recipients' SMS replies count `replied` once each, the messages
show on the recipients' timelines; a WhatsApp campaign goes out as Graph API template messages and
its statuses come back through the Meta webhook; a campaign email carries the campaign's name as its
subject and a working unsubscribe link (header and body), and a later campaign skips who used it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.providers import FakeHTTPProvider, FakeSMTPRelay, Recorded, eventually
from tests.fixtures.recorded import customer, running_server, timeline
from tests.fixtures.twilio import ACCOUNT_SID, OUR_NUMBER, PUBLIC_URL, FakeTwilio, post_signed, sms_params

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parents[1] / "fixtures" / "social"
ACCESS_TOKEN = "EAAG-test-access-token"
PHONE_NUMBER_ID = "106540352242922"
FAST = {"campaign_tick_seconds": 0.2, "campaign_rate_per_second": "sms=20,whatsapp=20,email=20"}


async def segment_of(api: httpx.AsyncClient, name: str, channel: str, size: int) -> str:
    created = await api.post(
        "/api/v1/segments",
        json={"name": name, "filter": {"all": [{"field": "channels", "op": "contains", "value": channel}]}},
    )
    assert created.status_code == 201, created.text
    segment_id = created.json()["id"]

    async def members():
        response = await api.get(f"/api/v1/segments/{segment_id}/members")
        return response.json()["items"] if response.status_code == 200 else []  # the read model lags

    await eventually(members, lambda items: len(items) == size)
    return segment_id


async def run_campaign(api: httpx.AsyncClient, body: dict) -> str:
    created = await api.post("/api/v1/campaigns", json=body)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert (await api.post(f"/api/v1/campaigns/{campaign_id}/start")).status_code == 200
    return campaign_id


async def counts_until(api: httpx.AsyncClient, campaign_id: str, **expected: int) -> dict:
    async def view():
        return (await api.get(f"/api/v1/campaigns/{campaign_id}")).json()

    done = await eventually(
        view, lambda v: v["status"] == "completed" and all(v["counts"][k] == n for k, n in expected.items()), 60
    )
    return done["counts"]


async def campaign_events(srv, campaign_id: str) -> list:
    store = srv.sb.open_store()
    return await asyncio.to_thread(store.load, uuid.UUID(campaign_id))


# -- SMS: delivery through Twilio's status callback, replies, the timeline ----------------------------

NUMBERS = ["+14155550161", "+14155550162", "+14155550163"]


@pytest.fixture
async def twilio():
    fake = await FakeTwilio().start()
    yield fake
    await fake.stop()


async def test_sms_campaign_counts_each_delivery_failure_and_first_reply_once(settings, names, twilio, admin_headers):
    s = settings.with_(
        twilio_account_sid=ACCOUNT_SID,
        twilio_from=OUR_NUMBER,
        twilio_api_base=twilio.url,
        public_url=PUBLIC_URL,
        **FAST,
    )
    token = s.twilio_auth_token
    async with (
        running_server(s, names) as srv,
        httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api,
    ):
        ids = {}
        for number in NUMBERS:
            assert (await post_signed(srv.http_url, token, sms_params(number, "Where is my order?"))).status_code == 200
            ids[number] = (await customer(api, "phone", number))["id"]
        segment_id = await segment_of(api, "sms people", "sms", len(NUMBERS))
        campaign_id = await run_campaign(
            api, {"name": "Spring sale", "segment_id": segment_id, "channel": "sms", "text": "20% off this week"}
        )
        await counts_until(api, campaign_id, sent=3)
        sid = {m["to"]: m["sid"] for m in twilio.messages}
        assert sorted(sid) == sorted(NUMBERS)
        delivered, undelivered, silent = NUMBERS

        async def status(number: str, word: str, **extra: str) -> None:
            params = {
                "MessageSid": sid[number],
                "MessageStatus": word,
                "AccountSid": ACCOUNT_SID,
                "From": OUR_NUMBER,
                "To": number,
                **extra,
            }
            response = await post_signed(srv.http_url, token, params, path="/channels/sms/twilio/status")
            assert response.status_code == 200, response.text

        await status(delivered, "sent")
        await status(delivered, "delivered")
        await status(delivered, "delivered")  # Twilio retries a callback it got no answer to
        await status(undelivered, "undelivered", ErrorCode="30003")
        await status(undelivered, "failed", ErrorCode="30003")  # a later word changes nothing
        await counts_until(api, campaign_id, delivered=1, failed=1)

        # Replies: the first of a recipient counts, once; a message on another channel does not.
        for text in ("Thanks, I will look", "Is it also for shoes?"):
            assert (await post_signed(srv.http_url, token, sms_params(delivered, text))).status_code == 200
        counts = await counts_until(api, campaign_id, replied=1)
        assert counts == {
            "targeted": 3,
            "skipped_no_consent": 0,
            "skipped_no_address": 0,
            "sent": 3,
            "delivered": 1,
            "failed": 1,
            "replied": 1,
        }

        events = await campaign_events(srv, campaign_id)
        named = [(e.NAME, str(getattr(e, "recipient_id", ""))) for e in events]
        assert named.count(("campaign.MessageDelivered", ids[delivered])) == 1
        assert named.count(("campaign.MessageUndelivered", ids[undelivered])) == 1
        assert named.count(("campaign.MessageReplied", ids[delivered])) == 1
        assert not any(
            n in ("campaign.MessageDelivered", "campaign.MessageUndelivered") for n, r in named if r == ids[silent]
        )
        reason = next(e.reason for e in events if e.NAME == "campaign.MessageUndelivered")
        assert "30003" in reason

        # On each recipient's timeline, once: outbound, the campaign's channel and text.
        for number in NUMBERS:
            items = await eventually(
                lambda n=number: timeline(api, ids[n]), lambda got: any(i["kind"] == "campaign" for i in got)
            )
            ours = [i for i in items if i["kind"] == "campaign"]
            assert [(i["direction"], i["channel"], i["text"], i["case_id"]) for i in ours] == [
                ("outbound", "sms", "20% off this week", None)
            ]


# -- WhatsApp: a template message through the Graph API, statuses through the Meta webhook ------------

WA_IDS = ["34600111222", "34600111333"]


def _graph(request: Recorded) -> tuple[int, dict]:
    body = request.json()
    return 200, {
        "messaging_product": "whatsapp",
        "contacts": [{"input": body["to"], "wa_id": body["to"]}],
        "messages": [{"id": f"wamid.CAMPAIGN-{body['to']}"}],
    }


@pytest.fixture
async def graph():
    fake = await FakeHTTPProvider(default=_graph).start()
    yield fake
    await fake.stop()


async def post_meta(srv, payload: dict) -> httpx.Response:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(srv.settings.meta_app_secret.encode(), body, hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(base_url=srv.http_url) as client:
        return await client.post(
            "/channels/social/meta",
            content=body,
            headers={"content-type": "application/json", "x-hub-signature-256": signature},
        )


def whatsapp_message(wa_id: str, text: str) -> dict:
    payload = json.loads((FIXTURES / "whatsapp_text.json").read_text())
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["wa_id"] = wa_id
    value["messages"][0].update(
        {
            "from": wa_id,
            "id": f"wamid.IN-{uuid.uuid4().hex}",
            "timestamp": str(int(time.time())),
            "text": {"body": text},
        }
    )
    return payload


def whatsapp_status(wa_id: str, word: str) -> dict:
    payload = json.loads((FIXTURES / "whatsapp_status.json").read_text())
    value = payload["entry"][0]["changes"][0]["value"]
    template = value["statuses"][1] if word == "failed" else value["statuses"][0]
    status = copy.deepcopy(template)
    status.update(
        {"id": f"wamid.CAMPAIGN-{wa_id}", "status": word, "recipient_id": wa_id, "timestamp": str(int(time.time()))}
    )
    value["statuses"] = [status]
    return payload


async def test_whatsapp_campaign_sends_graph_template_messages_and_counts_their_statuses(
    settings, names, graph, admin_headers
):
    s = settings.with_(meta_access_token=ACCESS_TOKEN, meta_graph_base=graph.url + "/v21.0", **FAST)
    async with (
        running_server(s, names) as srv,
        httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api,
    ):
        ids = {}
        for wa_id in WA_IDS:
            assert (await post_meta(srv, whatsapp_message(wa_id, "Hola, do you ship to Spain?"))).status_code == 200
            ids[wa_id] = (await customer(api, "phone", "+" + wa_id))["id"]
        segment_id = await segment_of(api, "whatsapp people", "whatsapp", len(WA_IDS))
        base = {"name": "Rebajas", "segment_id": segment_id, "channel": "whatsapp"}
        for bad, why in (
            ({"whatsapp_template": {"name": "rebajas"}}, "language"),
            ({"whatsapp_template": {"name": "Rebajas de invierno!", "language": "es"}}, "name"),
            ({"whatsapp_template": {"name": "rebajas", "language": "es", "components": [{"type": "x"}]}}, "type"),
            ({"whatsapp_template": {"name": "rebajas", "language": "es"}, "text": "hola"}, "not both"),
            ({"whatsapp_template": {"name": "rebajas", "language": "es"}, "channel": "sms"}, "whatsapp channel only"),
        ):
            refused = await api.post("/api/v1/campaigns", json={**base, **bad})
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["error"] and why in refused.json()["detail"]
        components = [{"type": "body", "parameters": [{"type": "text", "text": "20%"}]}]
        template = {"name": "rebajas_invierno", "language": "es", "components": components}
        campaign_id = await run_campaign(api, {**base, "whatsapp_template": template})
        await counts_until(api, campaign_id, sent=2)

        sends = [r for r in graph.requests if r.method == "POST"]
        assert sorted(r.json()["to"] for r in sends) == sorted(WA_IDS)
        for request in sends:
            assert request.path == f"/v21.0/{PHONE_NUMBER_ID}/messages"
            assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
            assert request.json() == {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": request.json()["to"],
                "type": "template",
                "template": {"name": "rebajas_invierno", "language": {"code": "es"}, "components": components},
            }

        first, second = WA_IDS
        for payload in (
            whatsapp_status(first, "sent"),
            whatsapp_status(first, "delivered"),
            whatsapp_status(first, "read"),
            whatsapp_status(first, "delivered"),
            whatsapp_status(second, "failed"),
        ):
            assert (await post_meta(srv, payload)).status_code == 200
        counts = await counts_until(api, campaign_id, delivered=1, failed=1)
        assert (counts["sent"], counts["replied"]) == (2, 0)
        events = await campaign_events(srv, campaign_id)
        assert [e.NAME for e in events].count("campaign.MessageDelivered") == 1
        undelivered = [e for e in events if e.NAME == "campaign.MessageUndelivered"]
        assert [str(e.recipient_id) for e in undelivered] == [ids[second]] and "131047" in undelivered[0].reason

        items = await eventually(
            lambda: timeline(api, ids[first]), lambda got: any(i["kind"] == "campaign" for i in got)
        )
        assert [(i["channel"], i["direction"], i["text"]) for i in items if i["kind"] == "campaign"] == [
            ("whatsapp", "outbound", "template rebajas_invierno (es)")
        ]


# -- Email: the campaign's subject, List-Unsubscribe (RFC 8058) and the link in the body ---------------

ADDRESSES = ["lucia@example.com", "marta@example.com"]


@pytest.fixture
async def relay():
    fake = await FakeSMTPRelay().start()
    yield fake
    await fake.stop()


def inbound_email(sender: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "hello@shop.example.com"
    message["Subject"] = "Opening hours"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    message.set_content("Are you open on Sunday?")
    return bytes(message)


async def test_campaign_email_has_its_subject_and_an_unsubscribe_link_that_a_later_campaign_honours(
    settings, names, relay, admin_headers
):
    s = settings.with_(
        smtp_relay=relay.address, email_from="Shop <news@shop.example.com>", public_url=PUBLIC_URL, **FAST
    )
    async with (
        running_server(s, names) as srv,
        httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api,
        httpx.AsyncClient(base_url=srv.http_url) as public,
    ):
        ids = {}
        for address in ADDRESSES:
            response = await public.post(
                "/channels/email/inbound",
                content=inbound_email(address),
                headers={"content-type": "message/rfc822", "authorization": f"Bearer {s.ingest_token}"},
            )
            assert response.status_code in (200, 202), response.text
            ids[address] = (await customer(api, "email", address))["id"]
        segment_id = await segment_of(api, "email people", "email", len(ADDRESSES))
        body = {"segment_id": segment_id, "channel": "email", "text": "Our winter collection is here."}
        first = await run_campaign(api, {**body, "name": "Winter collection"})
        await counts_until(api, first, sent=2)

        mails = {m["To"]: m for m in relay.messages()}
        assert sorted(mails) == ADDRESSES
        links = {}
        for address, mail in mails.items():
            assert mail["Subject"] == "Winter collection"
            assert mail["In-Reply-To"] is None and mail["References"] is None
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            header = mail["List-Unsubscribe"]
            assert header.startswith(f"<{PUBLIC_URL}/unsubscribe/") and header.endswith(">")
            link = header[1:-1]
            text = mail.get_content()
            assert "Our winter collection is here." in text and link in text
            links[address] = urlsplit(link).path

        leaving, staying = ADDRESSES
        store = srv.sb.open_store()

        async def withdrawals():
            loaded = await asyncio.to_thread(store.load, uuid.UUID(ids[leaving]))
            return [e for e in loaded if e.NAME == "customer.ConsentChanged"]

        # The contract's link is a GET that withdraws; the mail client's one-click POST says it again.
        page = await public.get(links[leaving])
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "unsubscribed" in page.text
        assert (await public.get(links[leaving] + "x")).status_code == 400
        done = await public.post(links[leaving], content="List-Unsubscribe=One-Click")
        assert done.status_code == 200 and "unsubscribed" in done.text

        changes = await eventually(withdrawals)
        assert [(e.channel, e.granted, e.source) for e in changes] == [("email", False, "unsubscribe-link")]
        staying_changes = [
            e
            for e in await asyncio.to_thread(store.load, uuid.UUID(ids[staying]))
            if e.NAME == "customer.ConsentChanged"
        ]
        assert staying_changes == []

        second = await run_campaign(api, {**body, "name": "Winter sale"})
        counts = await counts_until(api, second, sent=1, skipped_no_consent=1)
        assert counts["targeted"] == 2
        later = [m for m in relay.messages() if m["Subject"] == "Winter sale"]
        assert [m["To"] for m in later] == [staying]
