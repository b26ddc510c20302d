"""`GET /widget.js` and the CORS of the public chat endpoints, over HTTP and WebSocket as a browser would."""

from __future__ import annotations

import gzip

import httpx
import pytest
import websockets

from services.api.console import STATIC

pytestmark = pytest.mark.e2e

SHOP = "https://shop.example"


async def _token(client: httpx.AsyncClient) -> str:
    response = await client.post("/channels/chat/sessions", json={})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def _ws_url(server, token: str) -> str:
    return server.http_url.replace("http://", "ws://") + f"/channels/chat/ws?token={token}"


async def test_the_widget_script_is_public_cacheable_and_revalidated_by_etag(server):
    source = (STATIC / "widget.js").read_bytes()
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        plain = await client.get("/widget.js", headers={"accept-encoding": "identity"})
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/javascript")
        assert "content-encoding" not in plain.headers
        assert plain.content == source
        assert plain.headers["cache-control"] == "public, max-age=300"
        assert plain.headers["cross-origin-resource-policy"] == "cross-origin"
        etag = plain.headers["etag"]

        zipped = await client.get("/widget.js", headers={"accept-encoding": "gzip, deflate"})
        assert zipped.headers["content-encoding"] == "gzip" and zipped.content == source
        assert zipped.headers["etag"] != etag and "accept-encoding" in zipped.headers["vary"].lower()
        assert len(gzip.compress(source)) < len(source)

        again = await client.get("/widget.js", headers={"accept-encoding": "identity", "if-none-match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        changed = await client.get("/widget.js", headers={"accept-encoding": "identity", "if-none-match": '"old"'})
        assert changed.status_code == 200 and changed.content == source


async def test_the_session_endpoint_answers_cors_for_any_origin_and_the_api_for_none(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        preflight = await client.options(
            "/channels/chat/sessions",
            headers={
                "origin": SHOP,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "content-type" in preflight.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in preflight.headers

        created = await client.post("/channels/chat/sessions", json={}, headers={"origin": SHOP})
        assert created.status_code == 201 and created.headers["access-control-allow-origin"] == "*"
        refused = await client.post("/channels/chat/sessions", content=b"{nope", headers={"origin": SHOP})
        assert refused.status_code == 400 and refused.headers["access-control-allow-origin"] == "*"

        api_preflight = await client.options(
            "/api/v1/cases", headers={"origin": SHOP, "access-control-request-method": "GET"}
        )
        assert "access-control-allow-origin" not in api_preflight.headers
        api = await client.get("/api/v1/cases", headers={"origin": SHOP, **admin_headers})
        assert api.status_code == 200 and "access-control-allow-origin" not in api.headers

        token = created.json()["token"]
    async with websockets.connect(_ws_url(server, token), origin=SHOP) as ws:
        assert ws.protocol.state.name == "OPEN"


class TestOnlyTheAllowedOrigins:
    @pytest.fixture
    def settings(self, settings):
        return settings.with_(chat_allowed_origins=f"{SHOP}, https://www.shop.example")

    async def test_the_allowed_origin_is_echoed_and_any_other_refused(self, server):
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            ok = await client.options(
                "/channels/chat/sessions", headers={"origin": SHOP, "access-control-request-method": "POST"}
            )
            assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == SHOP
            assert ok.headers["vary"] == "Origin"

            evil = {"origin": "https://evil.example", "access-control-request-method": "POST"}
            denied = await client.options("/channels/chat/sessions", headers=evil)
            assert denied.status_code == 403 and "access-control-allow-origin" not in denied.headers
            post = await client.post("/channels/chat/sessions", json={}, headers={"origin": "https://evil.example"})
            assert post.status_code == 403 and post.json()["error"] == "forbidden"
            assert "access-control-allow-origin" not in post.headers

            created = await client.post("/channels/chat/sessions", json={}, headers={"origin": SHOP})
            assert created.status_code == 201 and created.headers["access-control-allow-origin"] == SHOP
            token = await _token(client)  # no Origin: not a browser, not CORS's business

        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(_ws_url(server, token), origin="https://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(_ws_url(server, token), origin=SHOP) as ws:
            assert ws.protocol.state.name == "OPEN"


async def test_a_chat_token_tells_whether_its_session_is_still_alive(server):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        created = (await client.post("/channels/chat/sessions", json={})).json()
        bearer = {"authorization": f"Bearer {created['token']}", "origin": SHOP}
        alive = await client.get("/channels/chat/session", headers=bearer)
        assert alive.status_code == 200 and alive.json() == {"session_id": created["session_id"]}
        assert alive.headers["access-control-allow-origin"] == "*"

        preflight = await client.options(
            "/channels/chat/session",
            headers={
                "origin": SHOP,
                "access-control-request-method": "GET",
                "access-control-request-headers": "authorization",
            },
        )
        assert preflight.status_code == 204 and "authorization" in preflight.headers["access-control-allow-headers"]

        for headers in ({}, {"authorization": "Bearer nonsense"}, {"authorization": f"Bearer {created['token']}x"}):
            refused = await client.get("/channels/chat/session", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"

        await server.services.chat.kv.delete(created["session_id"])  # what retention does to an old session
        gone = await client.get("/channels/chat/session", headers=bearer)
        assert gone.status_code == 401 and gone.json()["error"] == "unauthorized"
