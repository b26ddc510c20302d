"""A case's own messages, oldest first, as the console shows the conversation: attachments with the
URL of their bytes, and our replies with their delivery state (sent, or failed and why)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import websockets

from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer, timeline_until

pytestmark = pytest.mark.e2e

EMAIL = Path(__file__).parents[1] / "fixtures" / "email" / "07_pdf_and_image_attachments.eml"


async def test_messages_carry_attachments_and_a_failed_replys_delivery(server, settings, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as api:
        posted = await api.post(
            "/channels/email/inbound",
            content=EMAIL.read_bytes(),
            headers={"content-type": "message/rfc822", "authorization": f"Bearer {settings.ingest_token}"},
        )
        assert posted.status_code == 200
        zoe = await customer(api, "email", "zoe@example.org")
        [item] = await timeline_until(api, zoe["id"], 1)
        case_id = item["case_id"]

        async def case_view():  # another read model than the timeline, written behind it
            return (await api.get(f"/api/v1/cases/{case_id}")).json()

        view = await eventually(case_view, lambda v: len(v["messages"]) == 1)
        [inbound] = view["messages"]
        assert inbound["id"] == item["id"] and inbound["direction"] == "inbound"
        assert inbound["channel"] == "email" and inbound["reply_id"] is None and inbound["delivery"] is None
        assert [a["name"] for a in inbound["attachments"]] == [a["name"] for a in item["attachments"]]
        for attachment in inbound["attachments"]:
            assert set(attachment) >= {"name", "content_type", "size", "url"}
            data = await api.get(attachment["url"])
            assert data.status_code == 200 and len(data.content) == attachment["size"]

        # No SMTP relay is configured here: the relay records the reply as failed, with the reason.
        reply = (await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "On its way"})).json()
        fresh = {"Sb-Min-Position": str(reply["position"])}
        requested = (await api.get(f"/api/v1/cases/{case_id}", headers=fresh)).json()["messages"]
        assert [m["direction"] for m in requested] == ["inbound", "outbound"]
        assert requested[1]["reply_id"] == reply["reply_id"]
        assert requested[1]["delivery"]["status"] in ("requested", "failed")

        async def replies():
            messages = (await api.get(f"/api/v1/cases/{case_id}")).json()["messages"]
            return [m for m in messages if m.get("reply_id")]

        [failed] = await eventually(replies, lambda r: r and r[0]["delivery"]["status"] == "failed")
        assert failed["reply_id"] == reply["reply_id"] and failed["text"] is None
        assert "not configured" in failed["delivery"]["reason"]


async def test_a_sent_reply_is_a_message_with_its_text_and_delivery(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as api:
        session = (await api.post("/channels/chat/sessions", json={})).json()
        url = server.http_url.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "message", "text": "where is my parcel?", "client_id": "1"}))
            await ws.recv()
            visitor = await customer(api, "chat", session["session_id"])
            [item] = await timeline_until(api, visitor["id"], 1)
            case_id = item["case_id"]
            reply = (await api.post(f"/api/v1/cases/{case_id}/reply", json={"text": "Today!"})).json()
            pushed = json.loads(await ws.recv())
            assert pushed["text"] == "Today!"

        async def messages():
            return (await api.get(f"/api/v1/cases/{case_id}")).json()["messages"]

        got = await eventually(messages, lambda m: len(m) == 2 and m[1]["delivery"]["status"] == "sent")
        assert [m["text"] for m in got] == ["where is my parcel?", "Today!"]
        assert got[1]["reply_id"] == reply["reply_id"] and got[1]["direction"] == "outbound"
        assert got[1]["channel"] == "chat" and got[1]["delivery"]["reason"] is None
        assert got[0]["delivery"] is None
