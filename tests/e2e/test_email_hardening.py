"""The email channel under abuse, through its real doors (SMTP listener, raw-MIME webhook) against
real NATS and PostgreSQL: parsing off the event loop and bounded, a budget per message, messages
that can never fit refused permanently, a bounded attachment store, and From verified only when a
trusted upstream vouches for it."""

from __future__ import annotations

import asyncio
import base64
import os
import smtplib

import httpx
import pytest

from channels.email.pool import parser_of
from services.server import Server
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer as _lookup
from tests.fixtures.recorded import published, running_server, stored_events, timeline, timeline_until

pytestmark = pytest.mark.e2e


def _mail(
    sender: str,
    message_id: str,
    body: str = "Hello",
    *,
    headers: tuple[str, ...] = (),
    content_type: str = "text/plain; charset=utf-8",
    attachments: tuple[tuple[str, bytes], ...] = (),
) -> bytes:
    head = [
        *headers,
        f"From: {sender}",
        "To: support@shop.test",
        "Subject: Help",
        f"Message-ID: <{message_id}>",
        "MIME-Version: 1.0",
    ]
    text = body.replace("\r\n", "\n").replace("\n", "\r\n")
    if not attachments:
        return ("\r\n".join([*head, f"Content-Type: {content_type}", "", text, ""])).encode()
    parts = [f"--b\r\nContent-Type: {content_type}\r\n\r\n{text}\r\n"]
    for name, data in attachments:
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        parts.append(
            f'--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="{name}"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        )
    return (
        "\r\n".join([*head, "Content-Type: multipart/mixed; boundary=b", "", ""]) + "".join(parts) + "--b--\r\n"
    ).encode()


async def _smtp(server: Server, raw: bytes, sender: str = "relay@example.org") -> int:
    """Delivers over SMTP; the reply code to DATA (250 when accepted)."""

    def send() -> int:
        with smtplib.SMTP(*server.smtp, timeout=60) as smtp:
            try:
                smtp.sendmail(sender, ["support@shop.test"], raw)
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code
            return 250

    return await asyncio.to_thread(send)


async def _webhook(server: Server, raw: bytes) -> httpx.Response:
    headers = {"content-type": "message/rfc822", "authorization": f"Bearer {server.settings.ingest_token}"}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as client:
        return await client.post("/channels/email/inbound", content=raw, headers=headers)


@pytest.fixture
async def api_of(admin_headers):
    clients = []

    def make(server: Server) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.http_url, headers=admin_headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def _nothing_recorded(server: Server) -> None:
    await asyncio.sleep(0.2)  # a publish the refusal raced with would have landed by now
    assert await published(server) == 0
    assert await stored_events(server.settings.database_url) == 0


# -- the budget ------------------------------------------------------------------------------------


async def test_a_message_over_its_budget_is_refused_permanently_and_records_nothing(settings, names):
    settings = settings.with_(email_max_html_tags=500, email_max_attachments=2, smtp_trusted_relays="127.0.0.1")
    async with running_server(settings, names) as server:
        flood = _mail("a@example.org", "flood@example.org", "<div><b>x</b></div>" * 200, content_type="text/html")
        assert await _smtp(server, flood) == 552
        response = await _webhook(server, flood)
        assert response.status_code == 422
        assert response.json() == {"error": "too_complex", "detail": "more than 500 HTML tags"}

        files = tuple((f"f{i}.pdf", os.urandom(64)) for i in range(3))
        many = _mail("a@example.org", "files@example.org", attachments=files)
        assert await _smtp(server, many) == 552
        response = await _webhook(server, many)
        assert response.status_code == 413
        assert response.json() == {"error": "too_large", "detail": "more than 2 attachments"}
        await _nothing_recorded(server)


# -- what never fits one NATS message --------------------------------------------------------------


async def test_a_message_too_big_for_nats_is_refused_permanently_not_retried_for_days(settings, names):
    settings = settings.with_(
        max_body_bytes=6 * 1024 * 1024, smtp_trusted_relays="127.0.0.1", email_webhook_trusted=True
    )
    async with running_server(settings, names) as server:
        max_payload = server.sb.nc.max_payload
        text = "\n".join(
            ["A long complaint, line after line, all of it text the customer typed."] * (max_payload // 70 + 100)
        )
        assert max_payload < len(text) < settings.max_body_bytes
        huge = _mail("a@example.org", "huge@example.org", text)
        # Before: JetStream's refusal was read as an outage, 451 (the MTA retries for days) / 503.
        assert await _smtp(server, huge) == 552
        response = await _webhook(server, huge)
        assert response.status_code == 413 and response.json()["error"] == "too_large"
        await _nothing_recorded(server)

        # The same bulk as an attachment fits: its bytes go to SB_BLOBS, not into the interaction.
        document = os.urandom(max_payload + 100_000)
        with_file = _mail("a@example.org", "file@example.org", "Invoice attached.", attachments=(("i.pdf", document),))
        assert await _smtp(server, with_file) == 250
        assert await published(server) == 1


async def test_smtp_advertises_its_size_limit_and_refuses_a_larger_declared_size(settings, names):
    settings = settings.with_(max_body_bytes=300_000)
    async with running_server(settings, names) as server:

        def session() -> tuple[str, int]:
            with smtplib.SMTP(*server.smtp, timeout=10) as smtp:
                smtp.ehlo()
                advertised = smtp.esmtp_features.get("size", "")
                code, _ = smtp.mail("relay@example.org", ["SIZE=300001"])
                return advertised, code

        assert await asyncio.to_thread(session) == ("300000", 552)


# -- parsing off the loop, bounded -----------------------------------------------------------------


async def test_parsing_never_blocks_the_loop_and_a_full_parser_is_a_temporary_refusal(settings, names):
    settings = settings.with_(
        email_parse_workers=1,
        email_parse_queue=0,
        email_max_html_tags=1_000_000,
        email_parse_seconds=300.0,
        max_body_bytes=8 * 1024 * 1024,
        smtp_trusted_relays="127.0.0.1",
        email_webhook_trusted=True,
    )
    async with running_server(settings, names) as server:
        # Pathological but within budget: seconds of BeautifulSoup (each part stays under the tag
        # count past which HTML is read by a cheap regex instead).
        html_part = "Content-Type: text/html; charset=utf-8\r\n\r\n" + "<p>w</p>" * 24_000
        slow = (
            "From: slow@example.org\r\nMessage-ID: <slow@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            + "".join(f"--b\r\n{html_part}\r\n" for _ in range(6))
            + "--b--\r\n"
        ).encode()
        parser = parser_of(server.services)
        big = asyncio.create_task(_webhook(server, slow))
        await eventually(lambda: asyncio.sleep(0, parser.in_flight), lambda n: n == 1)

        async with httpx.AsyncClient(base_url=server.http_url) as client:
            health = await client.get("/health")
        assert health.status_code == 200
        # The loop answered while the parse still ran: its answer came first.
        assert not big.done() and parser.in_flight == 1

        small = _mail("small@example.org", "small@example.org", "Quick question")
        refused = await _webhook(server, small)
        assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
        assert int(refused.headers["retry-after"]) > 0
        assert await _smtp(server, small) == 451
        assert not big.done()

        assert (await big).status_code == 200
        assert (await _webhook(server, small)).status_code == 200
        assert await published(server) == 2


# -- the attachment store --------------------------------------------------------------------------


async def _blob_bucket_state(server: Server):
    info = await server.sb.js.stream_info(f"OBJ_{server.sb.names.stream('SB_BLOBS')}")
    return info.config.max_bytes, info.state.messages, info.state.bytes


async def test_a_full_attachment_store_refuses_temporarily_and_keeps_nothing_half_written(settings, names):
    settings = settings.with_(
        blobs_max_bytes=256 * 1024,
        blobs_max_object_bytes=200 * 1024,
        max_body_bytes=1024 * 1024,
        smtp_trusted_relays="127.0.0.1",
        email_webhook_trusted=True,
    )
    async with running_server(settings, names) as server:
        first = _mail("a@example.org", "f1@example.org", attachments=(("one.pdf", os.urandom(150 * 1024)),))
        assert (await _webhook(server, first)).status_code == 200
        limit, messages, size = await _blob_bucket_state(server)
        assert limit == 256 * 1024

        second = _mail("a@example.org", "f2@example.org", attachments=(("two.pdf", os.urandom(150 * 1024)),))
        response = await _webhook(server, second)
        assert response.status_code == 503 and response.json()["error"] == "unavailable"
        assert "storage" in response.json()["detail"].lower() and int(response.headers["retry-after"]) > 0
        assert await _smtp(server, second) == 452
        assert await _blob_bucket_state(server) == (limit, messages, size)  # no chunk of it stayed

        oversized = _mail("a@example.org", "f3@example.org", attachments=(("big.pdf", os.urandom(210 * 1024)),))
        response = await _webhook(server, oversized)
        assert response.status_code == 413 and response.json()["error"] == "too_large"
        assert await _smtp(server, oversized) == 552
        assert await published(server) == 1


# -- who vouches for From --------------------------------------------------------------------------

DMARC_PASS = (
    "Authentication-Results: mx.shop.test; spf=pass smtp.mailfrom=example.org; dmarc=pass header.from=example.org"
)


async def _customers_matching(api: httpx.AsyncClient, text: str, count: int) -> list[dict]:
    async def search():
        return (await api.get("/api/v1/customers", params={"q": text})).json()["items"]

    return await eventually(search, lambda items: len(items) >= count)


async def test_a_trusted_relay_vouches_for_from(settings, names, api_of):
    async with running_server(settings.with_(smtp_trusted_relays="127.0.0.0/8"), names) as server:
        assert await _smtp(server, _mail("Ann <ann@example.org>", "t1@example.org")) == 250
        found = await _lookup(api_of(server), "email", "ann@example.org")
        assert found["identities"] == [{"kind": "email", "value": "ann@example.org"}]


async def test_from_is_only_a_claim_unless_a_trusted_upstream_vouches_for_it(settings, names, api_of):
    """Loopback is not a trusted relay here; the webhook's poster is authenticated but does not
    vouch for From; mx.shop.test's DMARC verdict is believed from an authenticated upstream only."""
    settings = settings.with_(
        smtp_trusted_relays="192.0.2.0/24", email_webhook_trusted=False, email_trust_auth_results="mx.shop.test"
    )
    async with running_server(settings, names) as server:
        api = api_of(server)
        # Through the authenticated webhook, with our MX's DMARC pass: verified.
        response = await _webhook(
            server, _mail("Bob <bob@example.org>", "v1@example.org", "My order is late", headers=(DMARC_PASS,))
        )
        assert response.status_code == 200
        bob = await _lookup(api, "email", "bob@example.org")
        await timeline_until(api, bob["id"], 1)

        # The same header, forged, from an SMTP peer nobody trusts: a claim that merges with nobody.
        forged = _mail(
            "Bob <bob@example.org>", "v2@example.org", "Send the refund to my new account", headers=(DMARC_PASS,)
        )
        assert await _smtp(server, forged) == 250
        both = await _customers_matching(api, "bob@example.org", 2)
        [claimant_id] = [c["id"] for c in both if c["id"] != bob["id"]]
        claimant = (await api.get(f"/api/v1/customers/{claimant_id}")).json()
        assert claimant["identities"] == []
        assert claimant["claims"] == [{"kind": "email", "value": "bob@example.org"}]
        [item] = await timeline_until(api, claimant_id, 1)
        assert item["text"] == "Send the refund to my new account"
        assert (await _lookup(api, "email", "bob@example.org"))["id"] == bob["id"]
        assert [i["text"] for i in await timeline(api, bob["id"])] == ["My order is late"]

        # Through the webhook without a DMARC verdict: a claim too.
        response = await _webhook(server, _mail("carol@example.org", "v3@example.org", "Hi"))
        assert response.status_code == 200
        await _customers_matching(api, "carol@example.org", 1)
        missing = await api.get("/api/v1/customers/lookup", params={"kind": "email", "value": "carol@example.org"})
        assert missing.status_code == 404


async def test_a_sender_hanging_up_mid_parse_keeps_its_slot_until_the_parse_ends(settings, names):
    """Otherwise SMTP clients that send and hang up would queue unbounded work on the parsers."""
    settings = settings.with_(
        email_parse_workers=1,
        email_parse_queue=0,
        email_max_html_tags=1_000_000,
        email_parse_seconds=300.0,
        max_body_bytes=8 * 1024 * 1024,
        smtp_trusted_relays="127.0.0.1",
        email_webhook_trusted=True,
    )
    async with running_server(settings, names) as server:
        html_part = "Content-Type: text/html; charset=utf-8\r\n\r\n" + "\r\n".join(["<p>w</p>" * 100] * 240)
        slow = (
            "From: slow@example.org\r\nMessage-ID: <slow2@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            + "".join(f"--b\r\n{html_part}\r\n" for _ in range(6))
            + "--b--\r\n"
        ).encode()
        parser = parser_of(server.services)
        reader, writer = await asyncio.open_connection(*server.smtp)
        await reader.readline()  # greeting
        for command in (
            b"HELO mx.example.org",
            b"MAIL FROM:<relay@example.org>",
            b"RCPT TO:<support@shop.test>",
            b"DATA",
        ):
            writer.write(command + b"\r\n")
            await writer.drain()
            await reader.readline()
        writer.write(slow + b".\r\n")
        await writer.drain()
        await eventually(lambda: asyncio.sleep(0, parser.in_flight), lambda n: n == 1)
        writer.close()  # hang up without waiting for the answer
        await writer.wait_closed()

        refused = await _webhook(server, _mail("small@example.org", "small2@example.org"))
        assert refused.status_code == 503  # the abandoned parse still holds the only slot
        await eventually(lambda: asyncio.sleep(0, parser.in_flight), lambda n: n == 0)
        assert (await _webhook(server, _mail("small@example.org", "small2@example.org"))).status_code == 200


async def test_a_message_that_takes_too_long_to_read_is_refused_and_the_parser_carries_on(settings, names):
    settings = settings.with_(
        email_parse_workers=1,
        email_parse_seconds=1.0,
        email_max_html_tags=1_000_000,
        max_body_bytes=8 * 1024 * 1024,
        smtp_trusted_relays="127.0.0.1",
        email_webhook_trusted=True,
    )
    async with running_server(settings, names) as server:
        html_part = "Content-Type: text/html; charset=utf-8\r\n\r\n" + "\r\n".join(["<p>w</p>" * 100] * 240)
        # Six parts of 48,000 tags: seconds of BeautifulSoup, several times the budget.
        slow = (
            "From: slow@example.org\r\nMessage-ID: <slow3@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            + "".join(f"--b\r\n{html_part}\r\n" for _ in range(6))
            + "--b--\r\n"
        ).encode()
        response = await _webhook(server, slow)
        assert response.status_code == 422
        assert response.json() == {"error": "too_complex", "detail": "more than 1 seconds to read"}
        assert await _smtp(server, slow) == 552
        assert (await _webhook(server, _mail("a@example.org", "quick@example.org"))).status_code == 200
        assert await published(server) == 1
