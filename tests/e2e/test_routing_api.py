"""Queues and routing through the API of a whole Switchboard: queues configured with PUT (bad values
refused, nothing recorded), a burst of chat and Telegram conversations on two routed queues served
by three agents of different skills and capacity; every case assigned, nobody over capacity at any
position of the log, an agent going offline has their cases handed on, a transfer answers the case
with its position and routes it again, and `projections rebuild` gives the same queues and
assignments."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import httpx
import psycopg
import pytest
import websockets

from services.api.auth import create_token
from services.core.commands import append_new
from services.domain.agent import Team
from tests.fixtures.cli import switchboard
from tests.fixtures.providers import eventually
from tests.fixtures.routing import create_agent, fold, now, set_status

pytestmark = pytest.mark.e2e

CHATS, TELEGRAMS = 8, 6


async def chat_conversation(server, client: httpx.AsyncClient, text: str) -> None:
    session = (await client.post("/channels/chat/sessions", json={})).json()
    url = server.http_url.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "message", "text": text, "client_id": "1"}))
        await ws.recv()  # the ack: stored


async def telegram_conversation(server, client: httpx.AsyncClient, n: int) -> None:
    user = {"id": 700000 + n, "is_bot": False, "first_name": f"User{n}"}
    update = {
        "update_id": 900000 + n,
        "message": {
            "message_id": n,
            "from": user,
            "chat": {**user, "type": "private"},
            "date": 1749417400,
            "text": "hi",
        },
    }
    answer = await client.post(
        "/channels/social/telegram",
        json=update,
        headers={"x-telegram-bot-api-secret-token": server.settings.telegram_secret_token},
    )
    assert answer.status_code == 200, answer.text


def opens(queues: dict[str, dict]) -> tuple[int, int]:
    return queues.get("chat", {}).get("open", 0), queues.get("telegram", {}).get("open", 0)


def held(queues: dict[str, dict]) -> int:
    """Open cases somebody holds, in both queues."""
    return sum(queues[q]["open"] - queues[q]["unassigned"] for q in ("chat", "telegram") if q in queues)


async def cases_of(client, queue: str) -> list[dict]:
    return (await client.get("/api/v1/cases", params={"queue": queue, "limit": 100})).json()["items"]


async def queues_by_name(client) -> dict[str, dict]:
    return {q["name"]: q for q in (await client.get("/api/v1/queues")).json()["items"]}


def dump(database_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        return {
            "proj_queues": conn.execute("SELECT * FROM proj_queues ORDER BY name").fetchall(),
            "proj_cases": conn.execute("SELECT * FROM proj_cases ORDER BY id").fetchall(),
        }


async def test_queues_route_a_burst_within_capacity_through_the_api(server, settings, admin_headers) -> None:
    store = server.sb.open_store()
    for team in ("support", "sales"):
        append_new(store, Team.create(team, now()))
    ana = create_agent(store, "ana@example.com", ["support", "sales"], ["en"], capacity=2)
    bo = create_agent(store, "bo@example.com", ["support"], ["en", "es"], capacity=3)
    cy = create_agent(store, "cy@example.com", ["sales"], ["fr"], capacity=2)
    with psycopg.connect(settings.database_url) as conn:
        _, agent_token = create_token(conn, "agent", "agent-1")
    agent = {"Authorization": f"Bearer {agent_token}"}

    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers, timeout=30) as client:
        # -- configuring queues: bad values refused with the contract's error, nothing recorded --------
        before = store.max_position()
        for name, body in (
            ("chat", {"strategy": "fastest"}),
            ("chat", {"strategy": "round_robin", "team": "nobody"}),
            ("chat", {"strategy": "round_robin", "required_skills": [""]}),
            ("chat", {"strategy": "round_robin", "colour": "red"}),
            ("chat", {"team": "support"}),
            ("-chat", {"strategy": "manual"}),
        ):
            refused = await client.put(f"/api/v1/queues/{name}", json=body)
            assert refused.status_code == 400, (body, refused.text)
            assert refused.json()["error"] == "malformed"
        refused = await client.put("/api/v1/queues/chat", json={"strategy": "manual"}, headers=agent)
        assert refused.status_code == 403
        assert store.max_position() == before

        chat = await client.put(
            "/api/v1/queues/chat", json={"strategy": "round_robin", "team": "support", "required_skills": ["en"]}
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["position"] > before
        assert chat.json()["strategy"] == "round_robin" and chat.json()["required_skills"] == ["en"]
        telegram = await client.put("/api/v1/queues/telegram", json={"strategy": "least_loaded", "team": "sales"})
        assert telegram.status_code == 200, telegram.text
        listed = await eventually(
            lambda: client.get("/api/v1/queues", headers=agent), lambda r: len(r.json()["items"]) == 2
        )
        assert [(q["name"], q["strategy"], q["team"]) for q in listed.json()["items"]] == [
            ("chat", "round_robin", "support"),
            ("telegram", "least_loaded", "sales"),
        ]

        # -- a burst on two queues: room for 5 chats (ana 2, bo 3; cy has no en) and cy's 2 Telegrams ---
        await asyncio.gather(
            *(chat_conversation(server, client, f"help {i}") for i in range(CHATS)),
            *(telegram_conversation(server, client, i) for i in range(TELEGRAMS)),
        )
        await eventually(lambda: queues_by_name(client), lambda qs: opens(qs) == (CHATS, TELEGRAMS) and held(qs) == 7)
        chats, telegrams = await cases_of(client, "chat"), await cases_of(client, "telegram")
        # Demand outruns everyone's room, so each ends full: ana (both teams) 2, bo 3 chats, cy 2 Telegrams.
        holders = Counter(c["assignee"] for c in chats + telegrams if c["assignee"])
        assert holders == {ana: 2, bo: 3, cy: 2}
        assert bo not in {c["assignee"] for c in telegrams} and cy not in {c["assignee"] for c in chats}
        assert fold(store).violations == []

        # -- bo goes offline: ana is full, so bo's three chats wait, unassigned ------------------------
        set_status(store, bo, "offline")
        queues = await eventually(lambda: queues_by_name(client), lambda qs: held(qs) == 4)
        assert opens(queues) == (CHATS, TELEGRAMS)
        assert (await client.get("/api/v1/cases", params={"assignee": bo})).json()["items"] == []

        # -- a transfer of a waiting chat to Telegram: answered with the case and its position ---------
        waiting = next(c for c in await cases_of(client, "chat") if c["assignee"] is None)
        refused = await client.post(f"/api/v1/cases/{waiting['id']}/transfer", json={"queue": ""})
        assert refused.status_code == 400
        refused = await client.post(f"/api/v1/cases/{uuid.uuid4()}/transfer", json={"queue": "telegram"})
        assert refused.status_code == 404
        moved = await client.post(f"/api/v1/cases/{waiting['id']}/transfer", json={"queue": "telegram"}, headers=agent)
        assert moved.status_code == 200, moved.text
        assert moved.json()["queue"] == "telegram" and moved.json()["position"] > 0
        await eventually(
            lambda: client.get(f"/api/v1/cases/{waiting['id']}"), lambda r: r.json()["queue"] == "telegram"
        )

        # -- bo back, agents resolve what they get until every case was assigned -----------------------
        set_status(store, bo, "online")
        resolved: set[str] = set()

        async def resolve_assigned() -> int:
            for case in await cases_of(client, "chat") + await cases_of(client, "telegram"):
                if case["assignee"] and case["status"] != "resolved":
                    answer = await client.post(f"/api/v1/cases/{case['id']}/resolve")
                    assert answer.status_code == 200
                    resolved.add(case["id"])
            return len(resolved)

        await eventually(resolve_assigned, lambda n: n == CHATS + TELEGRAMS, timeout=90)
        queues = await eventually(
            lambda: queues_by_name(client), lambda qs: qs["chat"]["open"] == 0 and qs["telegram"]["open"] == 0
        )
        # A queue nobody configured is listed once a case is in it, as manual.
        moved = await client.post(f"/api/v1/cases/{waiting['id']}/transfer", json={"queue": "vip"})
        assert moved.status_code == 200
        queues = await eventually(lambda: queues_by_name(client), lambda qs: "vip" in qs)
        assert (queues["vip"]["strategy"], queues["vip"]["team"], queues["vip"]["open"]) == ("manual", None, 0)

    log = fold(store)
    assert log.violations == []
    every = log.opened
    assert len(every) == CHATS + TELEGRAMS
    handed_back = 0
    for case_id in every:
        # Assigned once each time it waited: to someone, then (bo gone offline) back to nobody, then
        # to someone again; never twice in a row.
        steps = [a for _, c, a in log.assignments if c == case_id]
        assert steps and steps[-1] is not None, f"case {case_id}: {steps}"
        assert all((a is None) == (i % 2 == 1) for i, a in enumerate(steps)), f"case {case_id}: {steps}"
        handed_back += steps.count(None)
    assert handed_back == 3  # bo's three chats

    # -- `projections rebuild` reproduces the queues and every case's queue and assignee ------------
    await eventually(
        lambda: asyncio.to_thread(_projected_to, settings.database_url), lambda p: p >= store.max_position()
    )
    live = dump(settings.database_url)
    result = await asyncio.to_thread(switchboard, settings, "projections", "rebuild")
    assert result.returncode == 0, result.stderr.decode()
    assert dump(settings.database_url) == live
    assert len(live["proj_queues"]) == 2 and len(live["proj_cases"]) == CHATS + TELEGRAMS


def _projected_to(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT min(p) FROM (SELECT max(notification_id) AS p FROM sb_tracking "
            "WHERE application_name LIKE 'projection:%%' GROUP BY application_name) x"
        ).fetchone()[0]
