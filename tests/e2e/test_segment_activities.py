"""A business activity puts a customer into a segment: an order posted to POST /api/v1/activities
(as the shop would) makes its customer a member of `activities.order.placed.count gte 1`, the members
CSV lists them, and the metrics' lifetime value counts the order's amount in its currency; a retry of
the same order changes nothing."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer

pytestmark = pytest.mark.e2e


@pytest.fixture
async def api(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        yield client


async def test_an_order_activity_puts_its_customer_into_the_segment_and_its_csv(server, api):
    body = {"name": "buyers", "filter": {"all": [{"field": "activities.order.placed.count", "op": "gte", "value": 1}]}}
    segment = (await api.post("/api/v1/segments", json=body)).json()
    empty = await api.get(
        f"/api/v1/segments/{segment['id']}/members", headers={"Sb-Min-Position": str(segment["position"])}
    )
    assert empty.json()["items"] == []

    order = {
        "customer": {"kind": "email", "value": "ana.buyer@example.com"},
        "type": "order.placed",
        "occurred_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "reference": "SO-1001",
        "amount": "120.50",
        "currency": "EUR",
    }
    first = await api.post("/api/v1/activities", json=order)
    assert first.status_code == 202, first.text  # durable in JetStream; the core records it next
    again = await api.post("/api/v1/activities", json=order)  # the shop's retry: recorded once
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    customer_id = (await customer(api, "email", "ana.buyer@example.com"))["id"]

    async def members():
        return (await api.get(f"/api/v1/segments/{segment['id']}/members")).json()["items"]

    page = await eventually(members)
    assert [m["id"] for m in page] == [customer_id]
    exported = await api.get(f"/api/v1/segments/{segment['id']}/members.csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert [r[0] for r in rows[1:]] == [customer_id]

    async def value():
        return (await api.get("/api/v1/metrics")).json()["lifetime_value"]

    assert await eventually(value) == [{"currency": "EUR", "customers": 1, "total": "120.50", "average": "120.50"}]
