"""Automation rules read a customer's activities and consent as segments do, end to end: rules saved
over the API, orders posted to POST /api/v1/activities as a shop would, SMS through the Twilio
webhook. `customer.activities.order.placed.count gte 2` fires for the customer's second order and
for nobody with one; `customer.consent.marketing.sms eq false` fires only for the customer who sent
STOP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from tests.e2e.test_channel_sms import PUBLIC_URL, _post_signed, _sms
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import customer, running_server, timeline_until

pytestmark = pytest.mark.e2e

ROLES = ("gateway", "core", "projector", "api", "automation")
SECOND_ORDER = {
    "name": "second-order",
    "on": "customer.ActivityRecorded",
    "if": {"all": [{"field": "customer.activities.order.placed.count", "op": "gte", "value": 2}]},
    "then": [{"webhook": {"url": "http://127.0.0.1:9/hooks"}}],  # no case: a webhook is what applies
}
OPTED_OUT = {
    "name": "opted-out",
    "on": "customer.InteractionRecorded",
    "if": {"all": [{"field": "customer.consent.marketing.sms", "op": "eq", "value": False}]},
    "then": [{"add_tags": ["opted-out"]}],
}


def _order(email: str, reference: str) -> dict:
    return {
        "customer": {"kind": "email", "value": email},
        "type": "order.placed",
        "occurred_at": datetime.now(UTC).isoformat(),
        "reference": reference,
        "amount": "10.00",
        "currency": "EUR",
    }


def _firings(store) -> list[tuple[str, str]]:
    """(rule, customer id of the event that fired it) of every firing in the log."""
    events, position = {}, 0
    while items := store.read(position, 1000):
        events.update({e.id: e for _, e, _ in items})
        position = items[-1][0]
    return [(e.rule, str(events[e.event_id].customer_id)) for e in events.values() if e.NAME == "automation.Fired"]


@pytest.mark.timeout(240)
async def test_rules_on_activities_and_consent_fire_only_for_their_customers(settings, names, admin_headers) -> None:
    async with running_server(settings.with_(public_url=PUBLIC_URL), names, ROLES) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api:
            store = srv.sb.open_store()
            for rule in (SECOND_ORDER, OPTED_OUT):
                saved = await api.post("/api/v1/automations", json=rule)
                assert saved.status_code == 201, saved.text

            for body in (_order("ana@example.com", "SO-1"), _order("bo@example.com", "SO-2")):
                assert (await api.post("/api/v1/activities", json=body)).status_code == 202
            assert (await _post_signed(srv, _sms("+34612000001", "hola"))).status_code == 200
            assert (await _post_signed(srv, _sms("+34612000002", "hola"))).status_code == 200
            assert (await _post_signed(srv, _sms("+34612000002", "STOP"))).status_code == 200
            ana = (await customer(api, "email", "ana@example.com"))["id"]
            bo = (await customer(api, "email", "bo@example.com"))["id"]
            writer = (await customer(api, "phone", "+34612000001"))["id"]
            stopped = (await customer(api, "phone", "+34612000002"))["id"]

            async def consent_of(customer_id: str) -> dict:
                return (await api.get(f"/api/v1/customers/{customer_id}")).json().get("consent", {})

            await eventually(lambda: consent_of(stopped), lambda c: c.get("marketing", {}).get("sms") is False)
            # ana's second order; both writers write again, one of them after STOP.
            assert (await api.post("/api/v1/activities", json=_order("ana@example.com", "SO-3"))).status_code == 202
            assert (await _post_signed(srv, _sms("+34612000001", "otra pregunta"))).status_code == 200
            assert (await _post_signed(srv, _sms("+34612000002", "una pregunta"))).status_code == 200

            # Everything recorded, then the automation role past all of it.
            await timeline_until(api, writer, 2)
            await timeline_until(api, stopped, 3)
            await eventually(lambda: _orders(api, ana), lambda n: n == 2)
            end = await asyncio.to_thread(store.max_position)

            async def automation_position() -> int:
                return await asyncio.to_thread(store.recorder.max_tracking_id, "follower:automation") or 0

            await eventually(automation_position, lambda p: p >= end, timeout=120)
            got = await asyncio.to_thread(_firings, store)
            assert [c for r, c in got if r == "second-order"] == [ana]  # her second order, nobody's first
            stops = [c for r, c in got if r == "opted-out"]
            assert stops and set(stops) == {stopped}  # only the customer who sent STOP
            assert bo not in {c for _, c in got} and writer not in {c for _, c in got}
            rule = (await api.get("/api/v1/automations/second-order")).json()
            assert rule["fired"] == 1


async def _orders(api: httpx.AsyncClient, customer_id: str) -> int:
    profile = (await api.get(f"/api/v1/customers/{customer_id}")).json()
    return profile.get("activities", {}).get("orders", 0)
