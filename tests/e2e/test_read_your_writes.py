"""Read your writes through the API: a command's `position` in `Sb-Min-Position` makes the next GET
see the command, with no polling; a malformed header is 400, a position never reached 503."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets

from tests.fixtures.providers import eventually

pytestmark = pytest.mark.e2e


async def a_case(server, client: httpx.AsyncClient) -> str:
    """A case opened by a chat visitor's message (an inbound message: waited for, it is not ours)."""
    session = (await client.post("/channels/chat/sessions", json={})).json()
    url = server.http_url.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "message", "text": "help", "client_id": "1"}))
        await ws.recv()

    async def items():
        found = await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]})
        if found.status_code != 200:
            return []
        return (await client.get(f"/api/v1/customers/{found.json()['id']}/timeline")).json()["items"]

    return (await eventually(items))[0]["case_id"]


async def test_a_get_with_the_commands_position_sees_the_command(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        case_id = await a_case(server, client)
        agents = []
        for n in range(5):
            created = await client.post(
                "/api/v1/agents", json={"email": f"a{n}@example.com", "name": f"Agent {n}", "role": "agent"}
            )
            assert created.status_code == 201, created.text
            agents.append(created.json()["id"])
        for n in range(5):  # each GET right after its command: the read side caught up every time
            tagged = (await client.post(f"/api/v1/cases/{case_id}/tags", json={"tags": [f"t{n}"]})).json()
            fresh = {"Sb-Min-Position": str(tagged["position"])}
            view = (await client.get(f"/api/v1/cases/{case_id}", headers=fresh)).json()
            assert f"t{n}" in view["tags"]
            assigned = (await client.post(f"/api/v1/cases/{case_id}/assign", json={"assignee": agents[n]})).json()
            fresh = {"Sb-Min-Position": str(assigned["position"])}
            mine = (await client.get("/api/v1/cases", params={"assignee": agents[n]}, headers=fresh)).json()
            assert [c["id"] for c in mine["items"]] == [case_id]


async def test_a_malformed_position_is_400_and_one_never_reached_503(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as client:
        for bad in ("abc", "-1", "1.5", "", "99999999999999999999"):
            response = await client.get("/api/v1/cases", headers={"Sb-Min-Position": bad})
            assert response.status_code == 400, bad
            assert response.json()["error"] == "malformed"
        # Without a valid token nobody is held: the handler answers 401 at once.
        refused = await client.get(
            "/api/v1/cases", headers={"Sb-Min-Position": str(10**15), "Authorization": "Bearer nope"}
        )
        assert refused.status_code == 401
        later = await client.get("/api/v1/cases", headers={"Sb-Min-Position": str(10**15)})
        assert later.status_code == 503
        assert later.headers["retry-after"] == "1"
        assert later.json()["error"] == "unavailable"
        assert "position" in later.json()["detail"]
