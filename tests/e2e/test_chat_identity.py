"""Who a chat visitor is, end to end: the website's `identity_hash` through HTTP and WebSocket to
the customer the agent API shows (the contract's "Channels and identities")."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets

from services.platform.embedded import free_port
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import running_server, stored_events

pytestmark = pytest.mark.e2e


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def ws_url(server, token: str) -> str:
    return server.http_url.replace("http://", "ws://") + f"/channels/chat/ws?token={token}"


async def open_session(api: httpx.AsyncClient, **body) -> dict:
    response = await api.post("/channels/chat/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def say(server, session: dict, text: str, client_id: str = "1") -> None:
    async with websockets.connect(ws_url(server, session["token"])) as ws:
        await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
        assert json.loads(await ws.recv())["type"] == "ack"


async def lookup(api: httpx.AsyncClient, kind: str, value: str) -> httpx.Response:
    return await api.get("/api/v1/customers/lookup", params={"kind": kind, "value": value})


async def customer(api: httpx.AsyncClient, kind: str, value: str) -> dict:
    return (await eventually(lambda: lookup(api, kind, value), lambda r: r.status_code == 200)).json()


@pytest.fixture
async def api(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        yield client


async def test_a_hash_over_user_id_email_and_phone_verifies_all_three(server, settings, api):
    body = {"name": "Ada", "user_id": "member-1", "email": "Ada@Example.org", "phone": "+44 7700 900101"}
    body["identity_hash"] = sign(settings.chat_identity_secret, "member-1|Ada@Example.org|+44 7700 900101")
    session = await open_session(api, **body)
    await say(server, session, "hello, logged in")
    found = await customer(api, "email", "ada@example.org")
    assert {"kind": "external", "value": "member-1"} in found["identities"]
    assert {"kind": "phone", "value": "+447700900101"} in found["identities"]
    assert {"kind": "chat", "value": session["session_id"]} in found["identities"]
    assert (await lookup(api, "phone", "+447700900101")).json()["id"] == found["id"]


async def test_a_hash_of_user_id_alone_leaves_email_a_claim_that_links_nobody(server, settings, api):
    email = "grace@example.org"
    session = await open_session(
        api, user_id="member-2", email=email, identity_hash=sign(settings.chat_identity_secret, "member-2")
    )
    await say(server, session, "hello from the website")
    visitor = await customer(api, "external", "member-2")
    assert {"kind": "email", "value": email} in visitor["claims"]
    assert {"kind": "email", "value": email} not in visitor["identities"]
    assert (await lookup(api, "email", email)).status_code == 404

    # Later, a real email from that address: its own customer, not merged into the chat visitor.
    raw = (
        f"From: Grace <{email}>\r\nTo: support@shop.test\r\nSubject: hi\r\nMessage-ID: <g1@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIt is me, by mail\r\n"
    ).encode()
    inbound = await api.post(
        "/channels/email/inbound",
        content=raw,
        headers={"content-type": "message/rfc822", "authorization": f"Bearer {settings.ingest_token}"},
    )
    assert inbound.status_code == 200, inbound.text
    by_mail = await customer(api, "email", email)
    assert by_mail["id"] != visitor["id"]
    again = (await api.get(f"/api/v1/customers/{visitor['id']}")).json()
    assert again["id"] == visitor["id"] and again["channels"] == ["chat"] and again["interaction_count"] == 1


@pytest.mark.parametrize("signed", ["member-3|someone-else@example.org|", "member-4", "member-3|"])
async def test_a_hash_that_matches_neither_form_gets_401_and_no_session(server, settings, signed):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post(
            "/channels/chat/sessions",
            json={
                "user_id": "member-3",
                "email": "a@example.org",
                "identity_hash": sign(settings.chat_identity_secret, signed),
            },
        )
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    sessions = await server.sb.js.stream_info(f"KV_{server.sb.names.chat_sessions_bucket}")
    assert sessions.state.messages == 0
    assert await stored_events(settings.database_url) == 0


async def test_without_a_secret_every_identity_hash_gets_401(settings, names):
    async with running_server(settings.with_(chat_identity_secret=None), names, roles=("gateway",)) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url) as client:
            # The HMAC with an empty key: what anyone can compute when no secret is configured.
            forged = await client.post(
                "/channels/chat/sessions", json={"user_id": "admin", "identity_hash": sign("", "admin||")}
            )
            alone = await client.post(
                "/channels/chat/sessions", json={"user_id": "admin", "identity_hash": sign("", "admin")}
            )
            anonymous = await client.post("/channels/chat/sessions", json={"name": "Ada"})
    assert forged.status_code == alone.status_code == 401
    assert forged.json()["error"] == "unauthorized"
    assert anonymous.status_code == 201  # nobody is verified, but visitors still chat


async def test_a_verified_session_never_gives_a_customer_a_second_external_id(server, settings, api, database_url):
    secret = settings.chat_identity_secret
    email = "shared@example.org"
    first = await open_session(api, user_id="member-5", email=email, identity_hash=sign(secret, f"member-5|{email}|"))
    await say(server, first, "I am member 5")
    owner = await customer(api, "external", "member-5")
    # Another signed-in user whose website account carries the same email.
    second = await open_session(api, user_id="member-6", email=email, identity_hash=sign(secret, f"member-6|{email}|"))
    await say(server, second, "I am member 6")
    other = await customer(api, "external", "member-6")
    assert other["id"] != owner["id"]
    owner = (await api.get(f"/api/v1/customers/{owner['id']}")).json()
    assert [i for i in owner["identities"] if i["kind"] == "external"] == [{"kind": "external", "value": "member-5"}]
    assert (await lookup(api, "email", email)).json()["id"] == owner["id"]  # the email stayed where it was

    async def suggestions():
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute("SELECT originator_id FROM sb_events WHERE topic = 'customer.MergeSuggested'")
            return {str(r[0]) for r in await cur.fetchall()}

    assert await eventually(suggestions, lambda ids: ids == {owner["id"], other["id"]})


# -- `switchboard serve` without the secret --------------------------------------------------------


def test_serve_without_a_chat_secret_starts_warns_once_and_verifies_nobody(settings, names, tmp_path):
    script = Path(sys.executable).with_name("switchboard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_DATA_DIR=str(tmp_path / "serve"),
        SWITCHBOARD_DATABASE_URL=settings.database_url,
        SWITCHBOARD_NATS_URL=settings.nats_url,
        SWITCHBOARD_MASTER_KEY=settings.master_key,
        SWITCHBOARD_LOG_FORMAT="json",
    )
    stderr_path = tmp_path / "serve.err"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [*command, "serve", "gateway", "--http", f"127.0.0.1:{port}", "--smtp", f"127.0.0.1:{free_port()}"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_for_health(url, proc))
        with httpx.Client(base_url=url) as client:
            # Both forms, made with the empty key anyone can use when no secret is configured.
            refused = [
                client.post("/channels/chat/sessions", json={"user_id": "u1", "identity_hash": sign("", signed)})
                for signed in ("u1||", "u1")
            ]
            anonymous = client.post("/channels/chat/sessions", json={"name": "Ada"})
        assert [r.status_code for r in refused] == [401, 401]
        assert {r.json()["error"] for r in refused} == {"unauthorized"}
        assert anonymous.status_code == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in stderr_path.read_bytes().splitlines() if line.startswith(b"{")]
    warnings = [line for line in lines if line.get("event") == "chat_identity_secret_missing"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"


async def _wait_for_health(url: str, proc: subprocess.Popen) -> None:
    async def health():
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            async with httpx.AsyncClient(base_url=url) as client:
                return (await client.get("/health")).status_code
        except httpx.TransportError:
            return None

    await eventually(health, lambda status: status == 200, timeout=60)


async def test_a_non_ascii_identity_hash_is_a_401_not_a_server_error(server):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post("/channels/chat/sessions", json={"user_id": "u1", "identity_hash": "ü" * 64})
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
