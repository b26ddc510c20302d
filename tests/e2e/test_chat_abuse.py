"""The chat channel under abuse, end to end on real NATS: frame and connection limits, rate limits,
a bounded session store, one outbox subscription per process, and sockets closed by an erasure."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import UUID

import httpx
import pytest
import websockets

from services.gdpr import erase_customer
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import published, running_server

pytestmark = pytest.mark.e2e

GATEWAY = ("gateway",)


def ws_url(server, token: str, after: int | None = None) -> str:
    url = server.http_url.replace("http://", "ws://") + f"/channels/chat/ws?token={token}"
    return url if after is None else f"{url}&after={after}"


async def open_session(client: httpx.AsyncClient, **body) -> dict:
    response = await client.post("/channels/chat/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_an_oversized_frame_closes_the_socket_with_1009(settings, names):
    async with running_server(settings.with_(chat_max_frame_bytes=4096), names, roles=GATEWAY) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url) as client:
            session = await open_session(client)
        async with websockets.connect(ws_url(srv, session["token"]), max_size=None) as ws:
            await ws.send(json.dumps({"type": "message", "text": "fits", "client_id": "1"}))
            assert json.loads(await ws.recv())["type"] == "ack"
            await ws.send(json.dumps({"type": "message", "text": "x" * 5000, "client_id": "2"}))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert await published(srv) == 1  # only the message that fitted


async def test_new_sessions_from_one_address_are_rate_limited_with_429(settings, names):
    limited = settings.with_(chat_session_burst=3, chat_sessions_per_minute_per_ip=1.0)
    async with running_server(limited, names, roles=GATEWAY) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url) as client:
            answers = [await client.post("/channels/chat/sessions", json={"name": f"v{n}"}) for n in range(5)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
    assert answers[3].json() == {"error": "rate_limited", "detail": answers[3].json()["detail"]}
    assert int(answers[3].headers["retry-after"]) >= 1


async def test_messages_of_one_session_are_rate_limited_with_an_error_frame(settings, names):
    limited = settings.with_(chat_message_burst=2, chat_messages_per_minute=1.0)
    async with running_server(limited, names, roles=GATEWAY) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url) as client:
            session = await open_session(client)
        replies = []
        async with websockets.connect(ws_url(srv, session["token"])) as ws:
            for n in range(3):
                await ws.send(json.dumps({"type": "message", "text": f"m{n}", "client_id": str(n)}))
                replies.append(json.loads(await ws.recv()))
        # Reconnecting does not refill the session's bucket.
        async with websockets.connect(ws_url(srv, session["token"])) as ws:
            await ws.send(json.dumps({"type": "message", "text": "again", "client_id": "3"}))
            replies.append(json.loads(await ws.recv()))
        assert [r["type"] for r in replies] == ["ack", "ack", "error", "error"]
        assert replies[2]["error"] == "rate_limited" and replies[2]["client_id"] == "2"
        assert await published(srv) == 2


@pytest.mark.parametrize(
    "per_ip,total,status,code", [(2, 100, 429, "too_many_connections"), (100, 2, 503, "unavailable")]
)
async def test_connections_over_the_limit_are_refused(settings, names, per_ip, total, status, code):
    limited = settings.with_(chat_max_connections_per_ip=per_ip, chat_max_connections=total)
    async with running_server(limited, names, roles=GATEWAY) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url) as client:
            sessions = [await open_session(client) for _ in range(3)]
        first = await websockets.connect(ws_url(srv, sessions[0]["token"]))
        second = await websockets.connect(ws_url(srv, sessions[1]["token"]))
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.connect(ws_url(srv, sessions[2]["token"]))
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"] == code
        await first.close()

        async def third():
            try:
                return await websockets.connect(ws_url(srv, sessions[2]["token"]))
            except websockets.exceptions.InvalidStatus:
                return None

        ws = await eventually(third)  # a closed socket gives its slot back
        await ws.close()
        await second.close()


async def test_the_session_store_is_bounded(settings, names):
    bounded = settings.with_(chat_session_store_max_bytes=2048, chat_session_ttl_seconds=3600, chat_session_burst=1000)
    async with running_server(bounded, names, roles=GATEWAY) as srv:
        info = await srv.sb.js.stream_info(f"KV_{names.chat_sessions_bucket}")
        assert info.config.max_bytes == 2048 and info.config.max_age == 3600
        async with httpx.AsyncClient(base_url=srv.http_url) as client:
            statuses = []
            for n in range(40):
                response = await client.post("/channels/chat/sessions", json={"name": f"visitor {n}"})
                statuses.append(response.status_code)
                if response.status_code != 201:
                    break
        assert statuses[0] == 201 and statuses[-1] == 503, statuses
        assert response.json()["error"] == "unavailable"
        info = await srv.sb.js.stream_info(f"KV_{names.chat_sessions_bucket}")
        assert info.state.bytes <= 2048


async def test_many_sockets_share_one_outbox_consumer_and_each_gets_its_own_replies(server, names, admin_headers):
    js = server.sb.js
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as api:
        sessions = [await open_session(api, name=f"visitor {n}") for n in range(4)]
        sockets = [await websockets.connect(ws_url(server, s["token"])) for s in sessions]
        # A second tab of the first visitor.
        sockets.append(await websockets.connect(ws_url(server, sessions[0]["token"])))
        try:
            consumers = await js.consumers_info(names.chat_outbox)
            assert len(consumers) == 1
            for n, ws in enumerate(sockets[:4]):
                await ws.send(json.dumps({"type": "message", "text": f"hello {n}", "client_id": "1"}))
                assert json.loads(await ws.recv())["type"] == "ack"

            async def case_of(session: dict) -> str:
                async def lookup():
                    return await api.get(
                        "/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]}
                    )

                found = (await eventually(lookup, lambda r: r.status_code == 200)).json()
                items = (await api.get(f"/api/v1/customers/{found['id']}/timeline")).json()["items"]
                return items[0]["case_id"]

            for n in (0, 2):
                case_id = await case_of(sessions[n])
                assert (
                    await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": f"reply {n}"})
                ).status_code == 200
            first_tab = json.loads(await asyncio.wait_for(sockets[0].recv(), 30))
            second_tab = json.loads(await asyncio.wait_for(sockets[4].recv(), 30))
            third = json.loads(await asyncio.wait_for(sockets[2].recv(), 30))
            assert first_tab["text"] == second_tab["text"] == "reply 0" and first_tab["seq"] == second_tab["seq"]
            assert third["text"] == "reply 2"
            with pytest.raises(TimeoutError):  # nobody else's reply reaches visitor 1
                await asyncio.wait_for(sockets[1].recv(), 0.5)
            assert len(await js.consumers_info(names.chat_outbox)) == 1
        finally:
            for ws in sockets:
                await ws.close()

        # Reconnecting after the first reply: the backlog starts after it.
        case_id = await case_of(sessions[0])
        await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "while you were away"})
        await eventually(lambda: js.stream_info(names.chat_outbox), lambda info: info.state.messages == 3)
        async with websockets.connect(ws_url(server, sessions[0]["token"], after=first_tab["seq"])) as ws:
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert pushed["text"] == "while you were away" and pushed["seq"] > first_tab["seq"]


async def test_erasing_a_customer_closes_their_open_chat_sockets(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as api:
        session = await open_session(api, name="Erase Me")
        bystander = await open_session(api, name="Stays")
        ws = await websockets.connect(ws_url(server, session["token"]))
        other = await websockets.connect(ws_url(server, bystander["token"]))
        try:
            await ws.send(json.dumps({"type": "message", "text": "forget me", "client_id": "1"}))
            assert json.loads(await ws.recv())["type"] == "ack"

            async def lookup():
                return await api.get(
                    "/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]}
                )

            customer = (await eventually(lookup, lambda r: r.status_code == 200)).json()
            report = await asyncio.to_thread(erase_customer, server.sb, UUID(customer["id"]), "test", datetime.now(UTC))
            assert report.complete and report.chat_sessions == 1
            await asyncio.wait_for(ws.wait_closed(), 30)
            assert ws.close_code == 1008
            # Its token no longer opens a socket; the other visitor's socket is untouched.
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                await websockets.connect(ws_url(server, session["token"]))
            assert refused.value.response.status_code == 401
            await other.send(json.dumps({"type": "message", "text": "still here", "client_id": "1"}))
            assert json.loads(await asyncio.wait_for(other.recv(), 10))["type"] == "ack"
        finally:
            await ws.close()
            await other.close()
