"""A bearer token's principal is cached per API process (services/api/principals.py), and a
revocation still holds: at once through PostgreSQL's notice, and within the cache's TTL even when
no notice came."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest

from services.api.auth import create_token, revoke_token, token_hash

pytestmark = pytest.mark.e2e


async def _refused_within(client: httpx.AsyncClient, headers: dict, seconds: float) -> float:
    """Seconds until the token got 401 (polling; fails after `seconds`)."""
    start = time.monotonic()
    while True:
        status = (await client.get("/api/v1/cases", headers=headers)).status_code
        if status == 401:
            return time.monotonic() - start
        assert status == 200, status
        assert time.monotonic() - start < seconds, f"still served {seconds}s after the revocation"
        await asyncio.sleep(0.05)


async def test_a_revocation_empties_every_cache_through_the_notice(server, settings):
    cache = server.services.principals
    cache.ttl = 3600.0  # only the notice can end it within this test
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        name, token = create_token(conn, "agent", None)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        assert (await client.get("/api/v1/cases", headers=headers)).status_code == 200
        assert cache.get(token_hash(token)) is not None, "the principal was cached"
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            assert revoke_token(conn, name)
        await _refused_within(client, headers, 10.0)
        assert cache.get(token_hash(token)) is None


async def test_without_a_notice_a_revoked_token_ends_within_the_ttl(server, settings):
    cache = server.services.principals
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        name, token = create_token(conn, "agent", None)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        assert (await client.get("/api/v1/cases", headers=headers)).status_code == 200
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            # A lost notice, played by revoking with the triggers off (replica mode skips them).
            conn.execute("SET session_replication_role = replica")
            assert revoke_token(conn, name)
        assert cache.get(token_hash(token)) is not None, "no notice: still cached"
        await _refused_within(client, headers, cache.ttl + 5.0)


async def test_a_disabled_agents_session_and_a_logout_end_at_once(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        created = await client.post(
            "/api/v1/agents",
            json={"email": "cache@example.com", "name": "Cache", "role": "agent"},
            headers=admin_headers,
        )
        assert created.status_code == 201, created.text
        agent_id, password = created.json()["id"], created.json()["password"]
        sessions = []
        for _ in range(2):
            login = await client.post("/api/v1/auth/login", json={"email": "cache@example.com", "password": password})
            assert login.status_code == 200, login.text
            sessions.append({"Authorization": f"Bearer {login.json()['token']}"})
        for headers in sessions:
            assert (await client.get("/api/v1/cases", headers=headers)).status_code == 200
        server.services.principals.ttl = 3600.0
        assert (await client.post("/api/v1/auth/logout", headers=sessions[0])).status_code in (200, 204)
        await _refused_within(client, sessions[0], 10.0)
        assert (await client.get("/api/v1/cases", headers=sessions[1])).status_code == 200
        disabled = await client.patch(f"/api/v1/agents/{agent_id}", json={"disabled": True}, headers=admin_headers)
        assert disabled.status_code == 200, disabled.text
        await _refused_within(client, sessions[1], 10.0)
