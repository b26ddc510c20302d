"""Supervisors resolve suggested merges and merge by hand, through the agent API: a suggestion that
the core made (two signed-in website users sharing an email) is listed with both customers, and
accepted joins both timelines under the survivor; a rejected one is recorded and gone from the list."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.test_chat_identity import customer, open_session, say, sign
from tests.fixtures.providers import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def api(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        yield client


async def two_members_sharing_an_email(server, settings, api, n: int) -> tuple[dict, dict]:
    """Two website users (external ids) whose verified email is the same: the core keeps them apart
    and suggests merging them."""
    secret, email = settings.chat_identity_secret, f"shared{n}@example.org"
    first = await open_session(
        api, user_id=f"m{n}-a", email=email, name="Ada", identity_hash=sign(secret, f"m{n}-a|{email}|")
    )
    await say(server, first, f"first account {n}")
    owner = await customer(api, "external", f"m{n}-a")
    second = await open_session(api, user_id=f"m{n}-b", email=email, identity_hash=sign(secret, f"m{n}-b|{email}|"))
    await say(server, second, f"second account {n}")
    other = await customer(api, "external", f"m{n}-b")
    assert owner["id"] != other["id"]
    return owner, other


async def pending(api) -> list[dict]:
    response = await api.get("/api/v1/merge-suggestions")
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_an_accepted_suggestion_joins_both_timelines_under_the_survivor(server, settings, api):
    owner, other = await two_members_sharing_an_email(server, settings, api, 1)
    [suggestion] = await eventually(lambda: pending(api), lambda items: len(items) == 1)
    sides = {c["id"]: c for c in suggestion["customers"]}
    assert set(sides) == {owner["id"], other["id"]}
    assert {"kind": "external", "value": "m1-a"} in sides[owner["id"]]["identities"]
    assert {"kind": "external", "value": "m1-b"} in sides[other["id"]]["identities"]
    assert sides[owner["id"]]["name"] == "Ada"
    assert suggestion["reason"] and suggestion["suggested_at"]

    accepted = await api.post(f"/api/v1/merge-suggestions/{suggestion['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    result = accepted.json()
    # The first registered survives, as when the core merges.
    assert (result["status"], result["survivor_id"], result["absorbed_id"]) == ("merged", owner["id"], other["id"])

    fresh = {"Sb-Min-Position": str(result["position"])}
    timeline = (await api.get(f"/api/v1/customers/{owner['id']}/timeline", headers=fresh)).json()["items"]
    assert sorted(i["text"] for i in timeline) == ["first account 1", "second account 1"]
    absorbed = (await api.get(f"/api/v1/customers/{other['id']}", headers=fresh)).json()
    assert absorbed["id"] == owner["id"]  # the absorbed id keeps resolving to the survivor
    externals = {i["value"] for i in absorbed["identities"] if i["kind"] == "external"}
    assert externals == {"m1-a", "m1-b"}
    assert (await customer(api, "external", "m1-b"))["id"] == owner["id"]
    assert await pending(api) == []
    again = await api.post(f"/api/v1/merge-suggestions/{suggestion['id']}/reject")
    assert again.status_code == 409 and again.json()["error"] == "rejected"  # accepted stays accepted

    # The second account writes again: its message lands on the survivor's timeline too.
    secret, email = settings.chat_identity_secret, "shared1@example.org"
    later = await open_session(api, user_id="m1-b", email=email, identity_hash=sign(secret, f"m1-b|{email}|"))
    await say(server, later, "after the merge")

    async def texts():
        items = (await api.get(f"/api/v1/customers/{owner['id']}/timeline")).json()["items"]
        return {i["text"] for i in items}

    await eventually(texts, lambda got: "after the merge" in got)


async def test_a_rejected_suggestion_is_recorded_and_no_longer_listed(server, settings, api):
    owner, other = await two_members_sharing_an_email(server, settings, api, 2)
    [suggestion] = await eventually(lambda: pending(api), lambda items: len(items) == 1)
    rejected = await api.post(f"/api/v1/merge-suggestions/{suggestion['id']}/reject")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected" and rejected.json()["absorbed_id"] is None
    fresh = {"Sb-Min-Position": str(rejected.json()["position"])}
    assert (await api.get("/api/v1/merge-suggestions", headers=fresh)).json()["items"] == []
    assert (await api.get(f"/api/v1/customers/{other['id']}", headers=fresh)).json()["id"] == other["id"]
    assert (await api.post(f"/api/v1/merge-suggestions/{suggestion['id']}/accept")).status_code == 409
    unknown = await api.post("/api/v1/merge-suggestions/00000000-0000-0000-0000-000000000000/accept")
    assert unknown.status_code == 404


async def test_a_supervisor_merges_two_customers_by_hand_and_an_agent_may_not(server, settings, api):
    sessions = [await open_session(api) for _ in range(2)]
    for n, session in enumerate(sessions):
        await say(server, session, f"visitor {n}")
    first, second = [await customer(api, "chat", s["session_id"]) for s in sessions]

    refused = await api.post(f"/api/v1/customers/{first['id']}/merge", json={"other_id": "not-a-uuid"})
    assert refused.status_code == 400
    missing = await api.post(
        f"/api/v1/customers/{first['id']}/merge", json={"other_id": "00000000-0000-0000-0000-000000000000"}
    )
    assert missing.status_code == 404

    merged = await api.post(f"/api/v1/customers/{first['id']}/merge", json={"other_id": second["id"]})
    assert merged.status_code == 200, merged.text
    assert (merged.json()["survivor_id"], merged.json()["absorbed_id"]) == (first["id"], second["id"])
    fresh = {"Sb-Min-Position": str(merged.json()["position"])}
    timeline = (await api.get(f"/api/v1/customers/{second['id']}/timeline", headers=fresh)).json()["items"]
    assert sorted(i["text"] for i in timeline) == ["visitor 0", "visitor 1"]
    again = await api.post(f"/api/v1/customers/{second['id']}/merge", json={"other_id": first["id"]})
    assert again.status_code == 409  # one customer already


async def test_merges_are_for_supervisors_and_admins(server, settings, api):
    from tests.e2e.test_tokens_and_roles import _cli  # noqa: PLC0415 -- the operator's way to make a token

    created = _cli(settings, "token", "create", "--role", "agent", "--name", "agent-m")
    assert created.returncode == 0, created.stderr
    agent = {"Authorization": f"Bearer {created.stdout.strip()}"}
    assert (await api.get("/api/v1/merge-suggestions", headers=agent)).status_code == 403
    body = {"other_id": "00000000-0000-0000-0000-000000000001"}
    assert (
        await api.post("/api/v1/customers/00000000-0000-0000-0000-000000000002/merge", json=body, headers=agent)
    ).status_code == 403
