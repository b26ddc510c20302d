"""Tokens only in headers; Server-Sent Events through single-use tickets; a revoked token ends its
stream. Driven as a browser and an operator would: HTTP, an SSE reader, `switchboard token ...`."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from services.api.auth import Principal, issue_ticket, token_hash
from tests.fixtures.cli import switchboard
from tests.fixtures.recorded import running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
async def srv(settings, names):
    # Streams re-check their token often here, so a test waits a fraction of a second, not 5 s.
    async with running_server(settings.with_(sse_recheck_seconds=0.2), names) as server:
        yield server


async def _token(settings, role: str, name: str) -> str:
    result = await asyncio.to_thread(switchboard, settings, "token", "create", "--role", role, "--name", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


async def _revoke(settings, name: str) -> None:
    result = await asyncio.to_thread(switchboard, settings, "token", "revoke", name)
    assert result.returncode == 0, result.stderr


async def _ticket(client: httpx.AsyncClient, token: str) -> str:
    response = await client.post("/api/v1/events/ticket", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"ticket", "expires_in"} and 0 < body["expires_in"] <= 60
    assert response.headers["cache-control"] == "no-store"
    return body["ticket"]


class Stream:
    """An open SSE response, read line by line with a deadline on every wait."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.lines = response.aiter_lines()

    async def until(self, line: str, timeout: float = 30.0) -> list[str]:
        seen = []
        async with asyncio.timeout(timeout):
            async for got in self.lines:
                seen.append(got)
                if got == line:
                    return seen
        raise AssertionError(f"stream ended before {line!r}; saw {seen!r}")

    async def closes(self, timeout: float = 30.0) -> list[str]:
        seen = []
        async with asyncio.timeout(timeout):
            async for got in self.lines:
                seen.append(got)
        return seen


async def test_a_ticket_opens_the_stream_once_and_is_bound_to_its_token(srv, settings):
    token = await _token(settings, "agent", "sse-agent")
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=30) as client:
        ticket = await _ticket(client, token)
        async with client.stream("GET", "/api/v1/events", params={"ticket": ticket}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            await Stream(response).until("event: ready")
            # Used once: a second open with the same ticket (from anyone) is refused.
            again = await client.get("/api/v1/events", params={"ticket": ticket})
            assert again.status_code == 401 and again.json()["error"] == "unauthorized"

        # A ticket of a token revoked before it was redeemed opens nothing.
        stale = await _ticket(client, token)
        await _revoke(settings, "sse-agent")
        refused = await client.get("/api/v1/events", params={"ticket": stale})
        assert refused.status_code == 401
        # Nor does an expired one, a made-up one, or one in non-ASCII.
        principal = Principal("admin", "admin", token_hash(settings.admin_token))
        expired = await issue_ticket(srv.services.pool, principal, ttl_seconds=-1)
        for bad in (expired, "sbt_" + "A" * 43, "sbt_é²", ""):
            response = await client.get("/api/v1/events", params={"ticket": bad})
            assert response.status_code == 401, (bad, response.status_code)
            assert response.json()["error"] == "unauthorized"


async def test_an_open_stream_ends_when_its_token_is_revoked(srv, settings):
    token = await _token(settings, "supervisor", "wallboard")
    other = await _token(settings, "agent", "other-agent")
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=30) as client:
        by_ticket = client.stream("GET", "/api/v1/events", params={"ticket": await _ticket(client, token)})
        by_header = client.stream("GET", "/api/v1/events", headers={"Authorization": f"Bearer {token}"})
        unrelated = client.stream("GET", "/api/v1/events", headers={"Authorization": f"Bearer {other}"})
        async with by_ticket as r1, by_header as r2, unrelated as r3:
            streams = [Stream(r) for r in (r1, r2, r3)]
            for stream in streams:
                assert stream.response.status_code == 200
                await stream.until("event: ready")
            await _revoke(settings, "wallboard")
            for stream in streams[:2]:
                tail = await stream.closes()
                assert "event: revoked" in tail
            # The other token's stream stays open and live: a new chat message still reaches it.
            session = (await client.post("/channels/chat/sessions", json={})).json()
            url = srv.http_url.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}"
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "message", "text": "still there?", "client_id": "1"}))
                await ws.recv()
            seen = await streams[2].until("event: timeline", timeout=60.0)
            assert "event: revoked" not in seen


async def test_tokens_are_read_from_the_authorization_header_only(srv, settings):
    admin = settings.admin_token
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=30) as client:
        for path in ("/api/v1/cases", "/api/v1/events", "/api/v1/attachments/" + "0" * 64, "/api/v1/customers?q=x"):
            for name in ("access_token", "token", "ticket"):
                if path == "/api/v1/events" and name == "ticket":
                    continue  # the one place a ticket (not a token) goes in the URL
                sep = "&" if "?" in path else "?"
                response = await client.get(f"{path}{sep}{name}={admin}")
                assert response.status_code == 401, (path, name, response.status_code)
        # A ticket is not a token either: it opens the event stream and nothing else.
        ticket = await _ticket(client, admin)
        assert (await client.get("/api/v1/cases", headers={"Authorization": f"Bearer {ticket}"})).status_code == 401
        assert (await client.get("/api/v1/cases", params={"ticket": ticket})).status_code == 401
        # The header keeps working, on the stream too.
        async with client.stream("GET", "/api/v1/events", headers={"Authorization": f"Bearer {admin}"}) as response:
            assert response.status_code == 200
            await Stream(response).until("event: ready")
        # Asking for a ticket needs a token.
        assert (await client.post("/api/v1/events/ticket")).status_code == 401


async def test_a_ticket_from_one_api_process_is_redeemed_once_by_another(srv, settings, names):
    async with running_server(settings, names, ("api",)) as other:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                srv.http_url + "/api/v1/events/ticket", headers={"Authorization": f"Bearer {settings.admin_token}"}
            )
            ticket = response.json()["ticket"]
            async with client.stream("GET", other.http_url + "/api/v1/events", params={"ticket": ticket}) as stream:
                assert stream.status_code == 200
                await Stream(stream).until("event: ready")
            for server in (srv, other):
                again = await client.get(server.http_url + "/api/v1/events", params={"ticket": ticket})
                assert again.status_code == 401
