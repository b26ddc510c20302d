"""`switchboard projections rebuild`: after live traffic (messages on several channels, a merge, a
suggested merge, agents working cases, an erasure), the rebuilt read models equal the live ones."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import psycopg
import pytest

from events.interactions import ENCODER, Identity, Interaction, interaction_id
from services.core.commands import erase_customer

pytestmark = pytest.mark.e2e

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))
READ_MODELS = {  # table → its key, for an ordered dump
    "proj_timeline": "interaction_id",
    "proj_customer_alias": "absorbed_id",
    "proj_customers": "id",
    "proj_identities": "customer_id, kind, value",
    "proj_cases": "id",
    "proj_case_notes": "note_id",
    "proj_replies": "reply_id",
    "proj_agents": "id",
    "proj_teams": "id",
}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def dump(database_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
            for table, key in READ_MODELS.items()
        }


def caught_up(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        head = conn.execute("SELECT coalesce(max(notification_id), 0) FROM sb_events").fetchone()[0]
        behind = conn.execute(
            "SELECT count(*) FROM (SELECT max(notification_id) AS p FROM sb_tracking "
            "WHERE application_name LIKE 'projection:%%' GROUP BY application_name) t "
            "WHERE p < %s",
            (head,),
        ).fetchone()[0]
    return head > 0 and behind == 0


def message(channel: str, *identities: Identity, at: int, **fields) -> Interaction:
    provider_id = uuid.uuid4().hex
    return Interaction(
        id=interaction_id(channel, provider_id),
        channel=channel,
        direction="inbound",
        occurred_at=T0 + timedelta(minutes=at),
        identities=list(identities),
        provider_message_id=provider_id,
        **fields,
    )


async def eventually(check, timeout: float = 20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
    return result


async def test_rebuilt_read_models_equal_the_live_ones(
    server, settings, names, nats_url, database_url, admin_headers, store
):
    traffic = []
    for c in range(12):  # customers writing on several channels, in threads
        phone, mail = Identity("phone", f"+4477009005{c:02d}"), Identity("email", f"C{c}@Example.org")
        for k in range(6):
            channel, identity = [
                ("sms", phone),
                ("email", mail),
                ("whatsapp", Identity("phone", f"4477009005{c:02d}")),
            ][k % 3]
            traffic.append(
                message(
                    channel,
                    identity,
                    at=c * 10 + k,
                    text=f"message {c}.{k}",
                    profile={"name": f"C {c}"},
                    thread_key=f"email:<t{c}-{k % 2}@example.org>" if channel == "email" else None,
                )
            )
    # A logged-in chat links customer 0's email and phone (a merge); customer 1's session claims an address.
    traffic.append(
        message(
            "chat",
            Identity("chat", "s-0"),
            Identity("external", "user-0"),
            Identity("email", "c0@example.org"),
            Identity("phone", "+447700900500"),
            at=500,
            text="logged in",
            thread_key="chat:s-0",
        )
    )
    traffic.append(
        message(
            "chat",
            Identity("chat", "s-1"),
            Identity("email", "c2@example.org", verified=False),
            at=501,
            text="who am I",
            thread_key="chat:s-1",
            profile={"name": "Maybe"},
        )
    )
    traffic.append(
        message(
            "chat",
            Identity("chat", "s-3"),
            Identity("external", "user-3"),
            Identity("email", "c3@example.org"),
            at=502,
            text="three",
            thread_key="chat:s-3",
        )
    )
    traffic.append(
        message(
            "chat",
            Identity("chat", "s-4"),
            Identity("external", "user-4"),
            Identity("email", "c3@example.org"),
            at=503,
            text="four says three",
            thread_key="chat:s-4",
        )
    )  # suggested merge
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for i in traffic:
        await js.publish(
            names.interaction_subject(i.channel, i.direction), ENCODER.encode(i), headers={"Nats-Msg-Id": str(i.id)}
        )
    await nc.close()

    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:

        async def chat_customer():
            r = await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": "s-0"})
            return r.json() if r.status_code == 200 and r.json()["interaction_count"] >= 7 else None

        customer = await eventually(chat_customer)
        items = (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()["items"]
        chat_case = next(i["case_id"] for i in items if i["channel"] == "chat")
        other_case = next(i["case_id"] for i in items if i["channel"] == "sms")
        agent = await client.post(
            "/api/v1/agents", json={"email": "agent-7@example.com", "name": "Seven", "role": "agent", "teams": ["t"]}
        )
        assert agent.status_code == 201, agent.text
        assert (await client.patch(f"/api/v1/agents/{agent.json()['id']}", json={"skills": ["es"]})).status_code == 200
        for path, body in (
            ("assign", {"assignee": agent.json()["id"]}),
            ("tags", {"tags": ["vip", "refund"]}),
            ("notes", {"text": "called back"}),
            ("priority", {"priority": "high"}),
            ("reply", {"text": "Hello from an agent"}),
        ):
            response = await client.post(f"/api/v1/cases/{chat_case}/{path}", json=body)
            assert response.status_code == 200, response.text
        for path in ("resolve", "reopen", "resolve"):
            assert (await client.post(f"/api/v1/cases/{other_case}/{path}")).status_code == 200

        async def reply_on_timeline():
            items = (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()["items"]
            return any(i["direction"] == "outbound" for i in items)

        await eventually(reply_on_timeline)
    erased = next(
        r[0] for r in psycopg.connect(database_url).execute("SELECT id FROM proj_customers WHERE name = 'C 5'")
    )
    await asyncio.to_thread(erase_customer, store, erased, "test", datetime.now(UTC))
    await eventually(lambda: asyncio.sleep(0.2, result=caught_up(database_url)))

    live = dump(database_url)
    assert len(live["proj_timeline"]) == len(traffic) + 1 and live["proj_customer_alias"] and live["proj_case_notes"]
    assert any(row[9] for row in live["proj_customers"])  # someone erased (`erased`, the 10th column)
    env = {
        **os.environ,
        "SWITCHBOARD_NATS_URL": nats_url,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_MASTER_KEY": settings.master_key,
        "SWITCHBOARD_DATA_DIR": str(settings.data_dir),
    }
    # Through two worker processes, as a long log would be (a short one is opened in-process).
    result = subprocess.run(
        [SWITCHBOARD, "projections", "rebuild", "--workers", "2"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "rebuilt timeline, profile, cases" in result.stdout and "events/s" in result.stdout
    rebuilt = dump(database_url)
    for table in READ_MODELS:
        assert rebuilt[table] == live[table], table
