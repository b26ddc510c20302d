"""Segments over HTTP: a supervisor saves a filter, agents read it and its members (paged, and as CSV
safe to open in a spreadsheet); a bad filter is a 400 naming the path of what is wrong, nothing
recorded; membership follows the data (an attribute set over the API moves a customer in)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from events.interactions import Identity, Interaction
from services.api.auth import create_token
from services.domain.customer import Customer

pytestmark = pytest.mark.e2e

T0 = datetime.now(UTC) - timedelta(days=3)


def _customer(store, name: str, channel: str) -> tuple[uuid.UUID, int]:
    customer = Customer.register(uuid.uuid4(), T0)
    customer.update_profile({"name": name}, True, T0)
    customer.record(
        Interaction(
            id=uuid.uuid4(),
            channel=channel,
            direction="inbound",
            occurred_at=T0,
            identities=[Identity("email", f"{uuid.uuid4().hex[:10]}@example.org")],
            text="hi",
        ),
        None,
    )
    with store.transaction() as tx:
        tx.append(customer.collect())
    return customer.id, tx.positions[-1]


@pytest.fixture
async def api(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        yield client


def _at(position: int) -> dict[str, str]:
    return {"Sb-Min-Position": str(position)}


async def test_a_segment_is_saved_listed_and_its_members_paged_and_exported(server, api, settings):
    store = server.sb.open_store()
    made = [_customer(store, name, "sms") for name in ('=HYPERLINK("http://x")', "Ana", "+34 Bo", "@cy")]
    _customer(store, "Email only", "email")
    sms_ids = sorted(str(i) for i, _ in made)

    body = {"name": "SMS people", "filter": {"all": [{"field": "channels", "op": "contains", "value": "sms"}]}}
    created = await api.post("/api/v1/segments", json=body)
    assert created.status_code == 201, created.text
    saved = created.json()
    assert saved["name"] == "SMS people" and saved["filter"] == body["filter"] and saved["position"] > 0
    seg = saved["id"]
    fresh = _at(max(saved["position"], *(p for _, p in made)))

    listed = (await api.get("/api/v1/segments", headers=fresh)).json()["items"]
    assert [(s["id"], s["name"], s["created_by"]) for s in listed] == [(seg, "SMS people", "admin")]
    one = (await api.get(f"/api/v1/segments/{seg}", headers=fresh)).json()
    assert one["filter"] == body["filter"]

    first = (await api.get(f"/api/v1/segments/{seg}/members", params={"limit": 3}, headers=fresh)).json()
    assert [m["id"] for m in first["items"]] == sms_ids[:3] and first["next_cursor"] == sms_ids[2]
    rest = (
        await api.get(f"/api/v1/segments/{seg}/members", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    assert [m["id"] for m in rest["items"]] == sms_ids[3:] and rest["next_cursor"] is None
    member = first["items"][0]
    assert set(member) == {"id", "name", "channels", "first_seen", "last_seen", "interaction_count", "open_cases"}
    assert member["channels"] == ["sms"] and member["interaction_count"] == 1 and member["open_cases"] == 0

    exported = await api.get(f"/api/v1/segments/{seg}/members.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["id", "name", "channels", "first_seen", "last_seen", "interaction_count", "open_cases"]
    assert [r[0] for r in rows[1:]] == sms_ids
    names = sorted(r[1] for r in rows[1:])
    # Formulas neutralised: nothing a spreadsheet would run starts with = + - @.
    assert names == sorted(['\'=HYPERLINK("http://x")', "Ana", "'+34 Bo", "'@cy"])

    # The same name again is the same segment, redefined.
    body["filter"] = {"any": [{"field": "name", "op": "eq", "value": "Ana"}]}
    again = (await api.post("/api/v1/segments", json=body)).json()
    assert again["id"] == seg
    names_now = (await api.get(f"/api/v1/segments/{seg}/members", headers=_at(again["position"]))).json()["items"]
    assert [m["name"] for m in names_now] == ["Ana"]


async def test_membership_follows_the_customers_data(server, api):
    store = server.sb.open_store()
    ana, position = _customer(store, "Ana", "chat")
    defined = await api.put("/api/v1/attribute-definitions/plan", json={"type": "text", "applies_to": "customer"})
    assert defined.status_code == 200, defined.text
    body = {"name": "gold", "filter": {"all": [{"field": "attributes.plan", "op": "eq", "value": "gold"}]}}
    seg = (await api.post("/api/v1/segments", json=body)).json()
    fresh = _at(max(position, seg["position"]))
    assert (await api.get(f"/api/v1/segments/{seg['id']}/members", headers=fresh)).json()["items"] == []

    changed = await api.patch(f"/api/v1/customers/{ana}/attributes", json={"plan": "gold"})
    assert changed.status_code == 200, changed.text
    page = (await api.get(f"/api/v1/segments/{seg['id']}/members", headers=_at(changed.json()["position"]))).json()
    assert [m["id"] for m in page["items"]] == [str(ana)]


@pytest.mark.parametrize(
    ("filter_", "detail"),
    [
        ({"all": [{"field": "nope", "op": "eq", "value": 1}]}, "filter.all[0].field: unknown field 'nope'"),
        ({"all": [{"field": "name", "op": "gt", "value": "a"}]}, "filter.all[0].op: 'gt' does not apply"),
        (
            {"any": [{"field": "name", "op": "eq", "value": "a"}, {"field": "csat_avg", "op": "gte", "value": "x"}]},
            "filter.any[1].value: expected a finite number",
        ),
        ({"all": [{"all": [{"field": "name", "op": "matches", "value": "("}]}]}, "filter.all[0].all[0].value: "),
        ({"some": []}, "filter: expected an object"),
        ([], "filter: expected an object"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_its_path_and_records_nothing(server, api, filter_, detail):
    before = server.sb.open_store().max_position()
    answer = await api.post("/api/v1/segments", json={"name": "bad", "filter": filter_})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_filter"
    assert answer.json()["detail"].startswith(detail), answer.json()
    assert server.sb.open_store().max_position() == before


async def test_roles_and_unknowns(server, api, settings):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        _, agent_token = create_token(conn, "agent")
    body = {"name": "x", "filter": {"all": [{"field": "name", "op": "eq", "value": "x"}]}}
    async with httpx.AsyncClient(base_url=server.http_url, headers={"Authorization": f"Bearer {agent_token}"}) as agent:
        assert (await agent.post("/api/v1/segments", json=body)).status_code == 403
        assert (await agent.get("/api/v1/segments")).status_code == 200
    missing = uuid.uuid4()
    assert (await api.get(f"/api/v1/segments/{missing}")).json()["error"] == "not_found"
    assert (await api.get(f"/api/v1/segments/{missing}/members")).status_code == 404
    seg = (await api.post("/api/v1/segments", json=body)).json()["id"]
    bad = await api.get(f"/api/v1/segments/{seg}/members", params={"cursor": "nope"})
    assert bad.status_code == 400 and bad.json() == {"error": "malformed", "detail": "invalid cursor"}
    assert (await api.post("/api/v1/segments", json={**body, "name": " "})).status_code == 400


async def test_metrics_answer_retention_per_period_keeping_their_other_keys(server, api):
    _, position = _customer(server.sb.open_store(), "Ana", "sms")
    start = (T0 - timedelta(days=40)).isoformat()
    for interval in ("week", "month"):
        answer = await api.get("/api/v1/metrics", params={"interval": interval, "from": start}, headers=_at(position))
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert {"cases_opened", "volume_per_channel", "series", "overall"} <= set(report)
        active = [p for p in report["retention"] if p["active"]]
        assert [(p["active"], p["retained"], p["churned"], p["churn_rate"]) for p in active] == [(1, 0, 1, 1.0)]
        assert active[0]["start"] <= T0.date().isoformat() < active[0]["end"]
    assert (await api.get("/api/v1/metrics", params={"interval": "year"})).status_code == 400
