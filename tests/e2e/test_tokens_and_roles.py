"""API tokens as an operator makes them (`switchboard token create/revoke`) and what each role may do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets

pytestmark = pytest.mark.e2e

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_NATS_URL=settings.nats_url,
        SWITCHBOARD_DATABASE_URL=settings.database_url,
        SWITCHBOARD_MASTER_KEY=settings.master_key,
        SWITCHBOARD_DATA_DIR=str(settings.data_dir),
    )
    return subprocess.run([SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=60)


async def _a_case(server, admin_headers) -> str:
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        session = (await client.post("/channels/chat/sessions", json={})).json()
        url = server.http_url.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "message", "text": "help", "client_id": "1"}))
            await ws.recv()
        for _ in range(300):
            found = await client.get(
                "/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]}
            )
            if found.status_code == 200:
                items = (await client.get(f"/api/v1/customers/{found.json()['id']}/timeline")).json()["items"]
                if items:
                    return items[0]["case_id"]
            import asyncio  # noqa: PLC0415

            await asyncio.sleep(0.05)
    raise AssertionError("the chat message never reached the timeline")


async def test_tokens_from_the_cli_work_by_role_and_end_when_revoked(server, settings, admin_headers):
    case_id = await _a_case(server, admin_headers)
    created = {}
    for role in ("agent", "auditor"):
        result = _cli(settings, "token", "create", "--role", role, "--name", f"{role}-1")
        assert result.returncode == 0, result.stderr
        created[role] = result.stdout.strip()
        assert created[role].startswith("sb_")

    with psycopg.connect(settings.database_url) as conn:
        stored = [bytes(r[0]) for r in conn.execute("SELECT token_hash FROM sb_tokens").fetchall()]
    assert created["agent"].encode() not in b"".join(stored), "only hashes are stored"

    async with httpx.AsyncClient(base_url=server.http_url) as client:
        agent = {"Authorization": f"Bearer {created['agent']}"}
        auditor = {"Authorization": f"Bearer {created['auditor']}"}
        assert (await client.get(f"/api/v1/cases/{case_id}", headers=agent)).status_code == 200
        assert (await client.get(f"/api/v1/cases/{case_id}", headers=auditor)).status_code == 200
        someone = await client.post(
            "/api/v1/agents",
            json={"email": "ana@example.com", "name": "Ana", "role": "agent"},
            headers={"Authorization": f"Bearer {settings.admin_token}"},
        )
        assert someone.status_code == 201, someone.text
        ana = someone.json()["id"]
        assigned = await client.post(f"/api/v1/cases/{case_id}/assign", json={"assignee": ana}, headers=agent)
        assert assigned.status_code == 200 and assigned.json()["assignee"] == ana
        refused = await client.post(f"/api/v1/cases/{case_id}/resolve", headers=auditor)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"

        assert _cli(settings, "token", "revoke", "agent-1").returncode == 0
        after = await client.get(f"/api/v1/cases/{case_id}", headers=agent)
        assert after.status_code == 401

    again = _cli(settings, "token", "revoke", "agent-1")
    assert again.returncode != 0 and "no active token" in again.stderr
    duplicate = _cli(settings, "token", "create", "--role", "agent", "--name", "auditor-1")
    assert duplicate.returncode != 0 and "exists" in duplicate.stderr


async def test_case_commands_change_the_case_and_the_queue(server, admin_headers):
    case_id = await _a_case(server, admin_headers)
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        tagged = (await client.post(f"/api/v1/cases/{case_id}/tags", json={"tags": ["billing", "vip"]})).json()
        assert tagged["tags"] == ["billing", "vip"]
        noted = await client.post(f"/api/v1/cases/{case_id}/notes", json={"text": "called back"})
        assert noted.status_code == 200
        resolved = (await client.post(f"/api/v1/cases/{case_id}/resolve")).json()
        assert resolved["status"] == "resolved"
        again = await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": ""})
        assert again.status_code == 409 and again.json()["error"] == "rejected"
        unknown = await client.post(f"/api/v1/cases/{case_id}/reply", json={"text": "x", "extra": 1})
        assert unknown.status_code == 400
        reopened = (await client.post(f"/api/v1/cases/{case_id}/reopen")).json()
        assert reopened["status"] == "open"
        missing = await client.post("/api/v1/cases/00000000-0000-0000-0000-000000000000/resolve")
        assert missing.status_code == 404
        # Read your writes: the reads answer once the read models applied the last command.
        fresh = {"Sb-Min-Position": str(reopened["position"])}
        view = (await client.get(f"/api/v1/cases/{case_id}", headers=fresh)).json()
        queue = (await client.get("/api/v1/cases", params={"status": "open"}, headers=fresh)).json()["items"]
        assert view["status"] == "open" and view["tags"] == ["billing", "vip"]
        assert case_id in [c["id"] for c in queue]
        assert [n["text"] for n in view["notes"]] == ["called back"]
