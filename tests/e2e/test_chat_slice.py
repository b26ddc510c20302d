"""The foundation's vertical slice, driven as a user would: HTTP, WebSocket, then the agent API."""

from __future__ import annotations

import asyncio
import json

import httpx
import psycopg
import pytest
import websockets

pytestmark = pytest.mark.e2e


async def _eventually(fetch, predicate, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await fetch()
        if predicate(result):
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(0.05)


async def _session(client: httpx.AsyncClient, **body) -> dict:
    response = await client.post("/channels/chat/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _ws_url(server, token: str) -> str:
    return server.http_url.replace("http://", "ws://") + f"/channels/chat/ws?token={token}"


async def test_chat_message_reaches_the_timeline_of_a_new_customer(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        session = await _session(client, name="Ada Lovelace")
        async with websockets.connect(_ws_url(server, session["token"])) as ws:
            await ws.send(json.dumps({"type": "message", "text": "Where is my order?", "client_id": "m-1"}))
            ack = json.loads(await ws.recv())
        assert ack["type"] == "ack" and ack["client_id"] == "m-1"

        async def lookup():
            return await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]})

        found = await _eventually(lookup, lambda r: r.status_code == 200)
        customer = found.json()
        assert customer["name"] == "Ada Lovelace"
        assert {"kind": "chat", "value": session["session_id"]} in customer["identities"]
        assert customer["interaction_count"] == 1 and customer["channels"] == ["chat"]

        timeline = (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()
        assert [(i["channel"], i["direction"], i["text"]) for i in timeline["items"]] == [
            ("chat", "inbound", "Where is my order?")
        ]
        assert timeline["items"][0]["id"] == ack["id"] and timeline["next_cursor"] is None


async def test_the_same_client_message_sent_twice_is_recorded_once(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        session = await _session(client)
        async with websockets.connect(_ws_url(server, session["token"])) as ws:
            for text in ("first", "first (retry)", "second"):
                client_id = "m-2" if text == "second" else "m-1"
                await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
                assert json.loads(await ws.recv())["type"] == "ack"

        async def timeline():
            r = await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]})
            if r.status_code != 200:
                return []
            return (await client.get(f"/api/v1/customers/{r.json()['id']}/timeline")).json()["items"]

        items = await _eventually(timeline, lambda items: len(items) >= 2)
        await asyncio.sleep(0.5)  # anything recorded twice would have arrived by now
        items = await timeline()
        assert sorted(i["text"] for i in items) == ["first", "second"]


async def test_agent_reply_is_pushed_live_and_joins_the_timeline(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        session = await _session(client, name="Grace")
        async with websockets.connect(_ws_url(server, session["token"])) as ws:
            await ws.send(json.dumps({"type": "message", "text": "Hi", "client_id": "1"}))
            await ws.recv()

            async def lookup():
                return await client.get(
                    "/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]}
                )

            customer = (await _eventually(lookup, lambda r: r.status_code == 200)).json()
            items = (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()["items"]
            case_id = items[0]["case_id"]
            reply = await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Hello Grace!"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["status"] == "pending"
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert pushed["type"] == "message" and pushed["text"] == "Hello Grace!" and pushed["from"] == "agent"

        async def timeline():
            return (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()["items"]

        items = await _eventually(timeline, lambda items: len(items) == 2)
        assert [(i["direction"], i["text"]) for i in items] == [("outbound", "Hello Grace!"), ("inbound", "Hi")]

        # The case list is another read model: the projector writes it behind the timeline.
        async def case_view():
            return (await client.get(f"/api/v1/cases/{case_id}")).json()

        case = await _eventually(case_view, lambda case: case["message_count"] == 2)
        assert case["first_response_at"] is not None


async def test_a_reconnecting_visitor_receives_replies_sent_while_away(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        session = await _session(client)
        async with websockets.connect(_ws_url(server, session["token"])) as ws:
            await ws.send(json.dumps({"type": "message", "text": "anyone?", "client_id": "1"}))
            await ws.recv()

        async def lookup():
            return await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]})

        customer = (await _eventually(lookup, lambda r: r.status_code == 200)).json()
        case_id = (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()["items"][0]["case_id"]
        await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Sorry for the wait"})
        async with websockets.connect(_ws_url(server, session["token"])) as ws:
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert pushed["text"] == "Sorry for the wait"


async def _count_events(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        # The classifier annotates earlier messages when it will: not what a refused request did.
        cur = await conn.execute("SELECT count(*) FROM sb_events WHERE topic <> 'case.Classified'")
        return (await cur.fetchone())[0]


@pytest.mark.parametrize(
    "body,content_type,status,code",
    [
        (b"{not json", "application/json", 400, "malformed"),
        (b'{"name": 42}', "application/json", 400, "malformed"),
        (b'{"user_id": "u1", "identity_hash": "00"}', "application/json", 401, "unauthorized"),
        (b'{"user_id": "u1"}', "application/json", 400, "malformed"),
        (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
async def test_bad_session_requests_get_the_contract_error_and_record_nothing(
    server, settings, body, content_type, status, code
):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post("/channels/chat/sessions", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert response.json()["error"] == code and response.json()["detail"]
    assert await _count_events(settings.database_url) == 0


async def test_oversized_session_request_is_413(server, settings):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post(
            "/channels/chat/sessions",
            content=b"{" + b" " * (settings.max_body_bytes + 10) + b"}",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413 and response.json()["error"] == "too_large"


@pytest.mark.parametrize("token", ["", "nonsense", "abc.def"])
async def test_a_missing_or_wrong_chat_token_is_refused_with_401(server, token):
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(_ws_url(server, token)):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"] == "unauthorized"


async def test_bad_frames_get_an_error_frame_and_record_nothing(server, settings, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        session = await _session(client)
    async with websockets.connect(_ws_url(server, session["token"]), max_size=None) as ws:
        frames = [
            "not json",
            json.dumps({"type": "message"}),
            json.dumps({"type": "message", "text": "x"}),
            json.dumps({"type": "dance"}),
            json.dumps([1, 2]),
            json.dumps({"type": "message", "text": "x" * (settings.max_chat_text + 1), "client_id": "big"}),
        ]
        replies = []
        for frame in frames:
            await ws.send(frame)
            replies.append(json.loads(await ws.recv()))
    assert [r["type"] for r in replies] == ["error"] * len(frames)
    assert replies[-1]["error"] == "too_large"
    assert {r["error"] for r in replies[:-1]} == {"malformed"}
    await asyncio.sleep(0.3)
    assert await _count_events(settings.database_url) == 0


async def test_api_needs_a_valid_token(server):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        missing = await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": "x"})
        wrong = await client.get(
            "/api/v1/customers/lookup", params={"kind": "chat", "value": "x"}, headers={"Authorization": "Bearer nope"}
        )
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert wrong.status_code == 401


async def test_health_ready_and_published_documents(server):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = (await client.get("/ready")).json()
        assert ready == {"status": "ready", "nats": "ok", "postgres": "ok", "interactions": "ok"}
        openapi = (await client.get("/schema/openapi.json")).json()
        assert "/api/v1/customers/{customer_id}/timeline" in openapi["paths"]
        asyncapi = (await client.get("/asyncapi.json")).json()
        addresses = {c["address"] for c in asyncapi["channels"].values()}
        assert any(a.endswith("sb.interactions.chat.inbound") for a in addresses)
        assert any(a.endswith("sb.events.customer.InteractionRecorded") for a in addresses)
