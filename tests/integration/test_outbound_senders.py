"""The provider senders against real servers on loopback: which provider a thread goes to, what the
request carries, and which failures are worth a retry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
import nats
import pytest
from aiosmtpd.smtp import SMTP

from channels.errors import ProviderError
from channels.outbound import ChatSender, Delivery, EmailSender, channel_senders, provider_senders
from events.interactions import CHANNELS
from services.platform.embedded import free_port
from services.platform.settings import Settings
from services.platform.streams import ensure_streams
from tests.fixtures.providers import FakeHTTPProvider, FakeSMTPRelay

pytestmark = pytest.mark.integration


def _delivery(channel: str, thread_key: str | None, identities=(), thread_meta=None, text="Hello") -> Delivery:
    return Delivery(
        reply_id=uuid.uuid4(),
        case_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        channel=channel,
        thread_key=thread_key,
        text=text,
        identities=frozenset(identities),
        thread_meta=thread_meta or {},
    )


def test_only_configured_channels_get_a_sender():
    assert provider_senders(Settings()) == {}
    everything = Settings(
        smtp_relay="127.0.0.1:25",
        email_from="s@shop.test",
        twilio_account_sid="AC1",
        twilio_auth_token="t",
        twilio_from="+15005550006",
        meta_access_token="m",
        telegram_bot_token="1:b",
    )
    assert set(provider_senders(everything)) == {"email", "sms", "whatsapp", "messenger", "instagram", "telegram"}
    assert set(provider_senders(Settings(meta_access_token="m"))) == {"whatsapp", "messenger", "instagram"}
    assert set(provider_senders(Settings(smtp_relay="127.0.0.1:25"))) == set()  # no sender address


def test_an_email_reply_threads_onto_the_customers_last_message():
    sender = EmailSender("127.0.0.1:2525", "Support <support@shop.test>")
    d = _delivery(
        "email",
        "root@example.org",
        {("email", "a@example.org"), ("email", "b@example.org")},
        {
            "from": "b@example.org",
            "message_id": "m3@example.org",
            "subject": "Re: Refund",
            "references": "root@example.org m2@shop.test",
        },
    )
    message, message_id, recipient = sender.compose(d, datetime(2024, 6, 1, tzinfo=UTC))
    assert recipient == "b@example.org" and message["To"] == "b@example.org"
    assert message_id == f"{d.reply_id}@shop.test" and message["Message-ID"] == f"<{message_id}>"
    assert message["Subject"] == "Re: Refund"
    assert message["In-Reply-To"] == "<m3@example.org>"
    assert message["References"] == "<root@example.org> <m2@shop.test> <m3@example.org>"


def test_an_email_reply_to_a_customer_with_two_addresses_and_no_thread_is_refused():
    sender = EmailSender("127.0.0.1:2525", "support@shop.test")
    with pytest.raises(ProviderError) as refused:
        sender.compose(_delivery("email", None, {("email", "a@x.org"), ("email", "b@x.org")}), datetime.now(UTC))
    assert refused.value.retryable is False


class _Refuse:
    def __init__(self, answer: str):
        self.answer = answer

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return self.answer


@pytest.mark.parametrize("answer,retryable", [("450 4.2.1 Mailbox busy", True), ("550 5.1.1 No such user", False)])
async def test_smtp_refusals_are_classified(answer, retryable):
    port = free_port()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_Refuse(answer), hostname="relay.test", loop=loop), "127.0.0.1", port
    )
    try:
        sender = EmailSender(f"127.0.0.1:{port}", "support@shop.test")
        with pytest.raises(ProviderError) as failed:
            await sender(_delivery("email", "r@x.org", {("email", "who@example.org")}))
    finally:
        server.close()
    assert failed.value.retryable is retryable
    assert "who@example.org" not in failed.value.detail


async def test_an_unreachable_relay_is_worth_a_retry():
    with pytest.raises(ProviderError) as failed:
        await EmailSender(f"127.0.0.1:{free_port()}", "s@shop.test")(
            _delivery("email", "r@x.org", {("email", "who@example.org")})
        )
    assert failed.value.retryable is True


async def test_the_relay_receives_the_envelope_and_the_message():
    relay = await FakeSMTPRelay().start()
    try:
        sender = EmailSender(relay.address, "Support <support@shop.test>")
        provider_id = await sender(_delivery("email", "r@x.org", {("email", "who@example.org")}, text="Grüße"))
    finally:
        await relay.stop()
    [(mail_from, rcpt_tos, _)] = relay.received
    assert (mail_from, rcpt_tos) == ("support@shop.test", ["who@example.org"])
    [message] = relay.messages()
    assert message["Message-ID"] == f"<{provider_id}>" and message.get_content().strip() == "Grüße"
    assert message["In-Reply-To"] == "<r@x.org>"


def _ok(request):
    if "/Messages.json" in request.path:
        return 201, {"sid": "SM" + "a" * 32}
    if request.path.endswith("/sendMessage"):
        return 200, {"ok": True, "result": {"message_id": 7, "chat": {"id": request.json()["chat_id"]}}}
    body = request.json()
    if body.get("messaging_product") == "whatsapp":
        return 200, {"messages": [{"id": "wamid.X"}]}
    return 200, {"message_id": "m_X"}


async def test_whatsapp_replies_leave_the_way_the_customer_came():
    fake = await FakeHTTPProvider(default=_ok).start()
    try:
        senders = provider_senders(
            Settings(
                twilio_account_sid="AC1",
                twilio_auth_token="t",
                twilio_from="+15005550006",
                twilio_api_base=fake.url,
                meta_access_token="m",
                meta_graph_base=fake.url + "/v21.0",
            )
        )
        via_twilio = await senders["whatsapp"](_delivery("whatsapp", "whatsapp:+14155238886:+14155550100"))
        via_meta = await senders["whatsapp"](_delivery("whatsapp", "whatsapp:106540352242922:16505551234"))
        sms = await senders["sms"](_delivery("sms", "sms:+15005550001:+14155550100"))
    finally:
        await fake.stop()
    assert (via_twilio, via_meta, sms) == ("SM" + "a" * 32, "wamid.X", "SM" + "a" * 32)
    twilio_wa, meta_wa, twilio_sms = fake.requests
    assert (twilio_wa.form()["From"], twilio_wa.form()["To"]) == ("whatsapp:+14155238886", "whatsapp:+14155550100")
    assert meta_wa.path == "/v21.0/106540352242922/messages" and meta_wa.json()["to"] == "16505551234"
    assert (twilio_sms.form()["From"], twilio_sms.form()["To"]) == ("+15005550001", "+14155550100")


async def test_a_thread_of_an_unconfigured_provider_is_refused_not_retried():
    senders = provider_senders(Settings(meta_access_token="m"))
    with pytest.raises(ProviderError) as refused:
        await senders["whatsapp"](_delivery("whatsapp", "whatsapp:+14155238886:+14155550100"))
    assert refused.value.retryable is False


@pytest.fixture
async def jetstream(nats_url, names):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, names, 3600)
    yield js
    await nc.close()


async def test_the_channels_own_a_sender_for_every_channel(jetstream, names):
    everything = Settings(
        smtp_relay="127.0.0.1:25",
        email_from="s@shop.test",
        twilio_account_sid="AC1",
        twilio_auth_token="t",
        twilio_from="+15005550006",
        meta_access_token="m",
        telegram_bot_token="1:b",
    )
    # every channel a conversation can be on; an activity (an order, an invoice) is never answered
    assert set(channel_senders(everything, jetstream, names)) == set(CHANNELS) - {"activity"}
    only_chat = channel_senders(Settings(), jetstream, names)
    assert set(only_chat) == {"chat"} and isinstance(only_chat["chat"], ChatSender)


async def test_a_chat_reply_lands_once_in_its_sessions_outbox(jetstream, names):
    sender = channel_senders(Settings(), jetstream, names)["chat"]
    reply = _delivery("chat", "chat:s-1", text="Your parcel left today")
    assert await sender(reply) == f"chat:{reply.reply_id}"
    assert await sender(reply) == f"chat:{reply.reply_id}"  # a retried delivery: the same message id
    stored = await jetstream.get_msg(names.chat_outbox, subject=names.chat_outbox_subject("s-1"), next=True, seq=1)
    frame = msgspec.json.decode(stored.data)
    assert (frame["type"], frame["id"], frame["text"], frame["from"]) == (
        "message",
        str(reply.reply_id),
        "Your parcel left today",
        "agent",
    )
    assert stored.headers["Nats-Msg-Id"] == str(reply.reply_id)
    assert (await jetstream.stream_info(names.chat_outbox)).state.messages == 1


async def test_a_chat_case_without_a_session_is_refused_not_retried(jetstream, names):
    with pytest.raises(ProviderError) as refused:
        await ChatSender(jetstream, names)(_delivery("chat", "telegram:42"))
    assert refused.value.retryable is False
    assert (await jetstream.stream_info(names.chat_outbox)).state.messages == 0
