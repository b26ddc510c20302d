"""deploy/nats/auth.conf on a real nats-server: each role works under its own user, and only there.

Every role runs as `switchboard serve ROLE` with `SWITCHBOARD_NATS_URL=nats://USER:PASSWORD@…` (the
password percent-encoded), one chat message goes through the gateway to the timeline, an agent's
reply comes back over the WebSocket, an email's attachment is stored by the gateway and served by
the api, and a downstream `reader` consumes the events; the server
records no permission violation on the way. Then the limits: the gateway cannot publish events, the
reader cannot publish interactions or read them, a wrong password is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from email.message import EmailMessage
from pathlib import Path

import httpx
import nats
import pytest
import websockets
from nats.js.api import ConsumerConfig

from services.platform.embedded import free_port
from services.platform.streams import Names, ensure_streams
from tests.fixtures.nats_auth import AuthorizedNats, wait_for

pytestmark = pytest.mark.e2e

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


@pytest.fixture
def auth_nats(tmp_path):
    server = AuthorizedNats(tmp_path / "nats").start()
    yield server
    server.stop()


def _serve(settings, server: AuthorizedNats, user: str, roles: list[str], tmp: Path, http_port: int | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_NATS_URL=server.url(user),
        SWITCHBOARD_DATABASE_URL=settings.database_url,
        SWITCHBOARD_MASTER_KEY=settings.master_key,
        SWITCHBOARD_ADMIN_TOKEN=settings.admin_token,
        SWITCHBOARD_CHAT_IDENTITY_SECRET=settings.chat_identity_secret,
        SWITCHBOARD_LOG_FORMAT="json",
        SWITCHBOARD_INGEST_TOKEN=settings.ingest_token,
    )
    args = [SWITCHBOARD, "serve", *roles]
    if http_port:
        args += ["--http", f"127.0.0.1:{http_port}", "--smtp", f"127.0.0.1:{free_port()}"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / f"{user}.log", "ab"), cwd=tmp)


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(url + "/ready")).status_code == 200
    except httpx.TransportError:
        return False


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.timeout(180)
async def test_every_role_works_under_its_own_user(settings, auth_nats, tmp_path):
    gateway_port, api_port = free_port(), free_port()
    # All at once, on a server without streams yet: whichever role comes first creates them.
    procs = [
        _serve(settings, auth_nats, "gateway", ["gateway"], tmp_path, gateway_port),
        _serve(settings, auth_nats, "api", ["api"], tmp_path, api_port),
        _serve(settings, auth_nats, "core", ["core"], tmp_path),
        _serve(settings, auth_nats, "projector", ["projector"], tmp_path),
        _serve(settings, auth_nats, "relay", ["relay"], tmp_path),
    ]
    reader = await auth_nats.client("reader")
    try:
        gateway, api = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{api_port}"
        for url in (gateway, api):
            await wait_for(lambda url=url: _ready(url), 60, f"{url}/ready")

        headers = {"Authorization": f"Bearer {settings.admin_token}"}
        async with (
            httpx.AsyncClient(base_url=gateway) as visitor,
            httpx.AsyncClient(base_url=api, headers=headers) as agent,
        ):
            session = (await visitor.post("/channels/chat/sessions", json={"name": "Ada"})).json()
            ws_url = gateway.replace("http://", "ws://") + f"/channels/chat/ws?token={session['token']}"
            async with websockets.connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "message", "text": "hello under permissions", "client_id": "1"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 15))["type"] == "ack"

                async def customer():
                    r = await agent.get(
                        "/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]}
                    )
                    return r.json() if r.status_code == 200 else None

                found = await wait_for(customer, 60, "the customer in the read model")
                items = (await agent.get(f"/api/v1/customers/{found['id']}/timeline")).json()["items"]
                assert [i["text"] for i in items] == ["hello under permissions"]
                reply = await agent.post(f"/api/v1/cases/{items[0]['case_id']}/reply", json={"text": "hi Ada"})
                assert reply.status_code == 200, reply.text
                pushed = json.loads(await asyncio.wait_for(ws.recv(), 30))  # relay → outbox → gateway
                assert pushed["text"] == "hi Ada"

            # An email with an attachment: the gateway stores the bytes, the api serves them back.
            mail = EmailMessage()
            mail["From"], mail["To"], mail["Subject"] = "zoe@example.org", "support@shop.test", "invoice"
            mail["Message-ID"] = f"<{uuid.uuid4()}@example.org>"
            mail.set_content("see attached")
            pdf = b"%PDF-1.4 " + uuid.uuid4().bytes * 64
            mail.add_attachment(pdf, maintype="application", subtype="pdf", filename="invoice.pdf")
            stored = await visitor.post(
                "/channels/email/inbound",
                content=mail.as_bytes(),
                headers={"content-type": "message/rfc822", "authorization": f"Bearer {settings.ingest_token}"},
            )
            assert stored.status_code < 300, stored.text
            # Attachments are served by their SHA-256; the 2xx came after the bytes were stored.
            served = await agent.get(f"/api/v1/attachments/{hashlib.sha256(pdf).hexdigest()}")
            assert served.status_code == 200 and served.content == pdf

        # A downstream reader consumes SB_EVENTS through a durable consumer of its own.
        js = reader.jetstream()
        sub = await js.pull_subscribe(
            "sb.events.>", durable="downstream", stream="SB_EVENTS", config=ConsumerConfig(ack_wait=30)
        )
        seen: list[str] = []

        async def read_events():
            try:
                for msg in await sub.fetch(50, timeout=1):
                    seen.append(msg.subject)
                    await msg.ack()
            except nats.errors.TimeoutError:
                pass
            return "sb.events.case.ReplyRequested" in seen

        await wait_for(read_events, 60, "the reader to see the events")
        assert "sb.events.customer.Registered" in seen and "sb.events.case.Opened" in seen
        assert all(p.poll() is None for p in procs), "every role still running"
        assert "Permissions Violation" not in auth_nats.log_text(), auth_nats.log_text()[-3000:]
    finally:
        await reader.close()
        _stop_all(procs)


async def _ignore(exc: Exception) -> None:
    pass


async def _violation(server: AuthorizedNats, kind: str, user: str, subject: str) -> None:
    """The server logged that `user` was refused `kind` ("Publish" or "Subscription") on `subject`."""
    needle = f'"$G/user:{user}" - {kind} Violation - Subject "{subject}"'

    async def logged():
        return needle in server.log_text()

    await wait_for(logged, 10, needle)


async def test_the_gateway_cannot_publish_events_and_the_reader_only_reads_events(auth_nats):
    # nats-py closes a connection the server reported a permissions violation on: one per attempt.
    connect = lambda user: auth_nats.client(user, error_cb=_ignore, max_reconnect_attempts=0)  # noqa: E731
    admin = await auth_nats.client("admin")
    try:
        admin_js = admin.jetstream()
        await ensure_streams(admin_js, Names(), 3600)
        body = json.dumps({"id": str(uuid.uuid4())}).encode()

        # The gateway stores an interaction ...
        gateway = await connect("gateway")
        ack = await gateway.jetstream().publish(
            "sb.interactions.chat.inbound", body, headers={"Nats-Msg-Id": str(uuid.uuid4())}
        )
        assert ack.stream == "SB_INTERACTIONS"
        # ... but cannot put anything into the events stream.
        with pytest.raises(nats.errors.TimeoutError):
            await gateway.jetstream().publish("sb.events.customer.Registered", body, timeout=1)
        await _violation(auth_nats, "Publish", "gateway", "sb.events.customer.Registered")
        assert (await admin_js.stream_info("SB_EVENTS")).state.messages == 0
        await gateway.close()

        # The reader sees events, live and through a JetStream consumer of its own ...
        reader = await connect("reader")
        live = await reader.subscribe("sb.events.>")
        await reader.flush()
        await admin_js.publish("sb.events.customer.Registered", body, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        try:
            # Sized for a loaded CI machine (it once waited more than 5 s there); the server's log says why if not.
            got = await live.next_msg(timeout=30)
        except nats.errors.TimeoutError:
            pytest.fail(f"no live event for the reader; server log: {auth_nats.log_text()[-3000:]}")
        assert got.subject == "sb.events.customer.Registered"
        pulled = await reader.jetstream().pull_subscribe("sb.events.>", durable="reader-test", stream="SB_EVENTS")
        assert [m.subject for m in await pulled.fetch(1, timeout=5)] == ["sb.events.customer.Registered"]
        await reader.close()

        # ... but cannot publish an interaction,
        reader = await connect("reader")
        with pytest.raises(nats.errors.TimeoutError):
            await reader.jetstream().publish("sb.interactions.chat.inbound", body, timeout=1)
        await _violation(auth_nats, "Publish", "reader", "sb.interactions.chat.inbound")
        assert (await admin_js.stream_info("SB_INTERACTIONS")).state.messages == 1
        await reader.close()
        # nor listen to interactions,
        reader = await connect("reader")
        spy = await reader.subscribe("sb.interactions.>")
        await _violation(auth_nats, "Subscription", "reader", "sb.interactions.>")
        await admin.publish("sb.interactions.chat.inbound", body)
        with pytest.raises((nats.errors.TimeoutError, nats.errors.ConnectionClosedError)):
            await spy.next_msg(timeout=1)
        await reader.close()
        # nor open a consumer on the interactions stream.
        reader = await connect("reader")
        with pytest.raises((nats.errors.TimeoutError, nats.errors.ConnectionClosedError)):
            await reader.jetstream().pull_subscribe("sb.interactions.>", durable="spy", stream="SB_INTERACTIONS")
        await _violation(auth_nats, "Publish", "reader", "$JS.API.CONSUMER.INFO.SB_INTERACTIONS.spy")
        await reader.close()

        # A wrong password is refused outright.
        with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
            await auth_nats.client(
                "gateway",
                password="wrong",
                max_reconnect_attempts=0,
                allow_reconnect=False,
                connect_timeout=2,
                error_cb=_ignore,
            )
    finally:
        await admin.close()


@pytest.mark.parametrize("verb", [["serve", "core"], ["deadletters", "list"]])
def test_a_wrong_nats_password_is_one_line_and_exit_1(settings, auth_nats, tmp_path, verb):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_NATS_URL=auth_nats.url("core", password="not-the-password"),
        SWITCHBOARD_DATABASE_URL=settings.database_url,
        SWITCHBOARD_MASTER_KEY=settings.master_key,
        SWITCHBOARD_DATA_DIR=str(settings.data_dir),
        SWITCHBOARD_LOG_FORMAT="json",
    )
    proc = subprocess.run([SWITCHBOARD, *verb], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert f"NATS at nats://127.0.0.1:{auth_nats.port} refused the credentials" in lines[0], lines[0]
    assert "not-the-password" not in proc.stderr and "Traceback" not in proc.stderr
