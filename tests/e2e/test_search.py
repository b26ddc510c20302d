"""`GET /api/v1/search`: customers and timeline items matching the words of a query, in any language,
accents and case ignored, best first; gone with an erased customer; readable by every role; 400 on a
query with nothing to search for. `GET /api/v1/customers?q=` ignores accents and case too.

Customers and their conversations are written through the real aggregates into the event store; the
server's projector builds the read models that search reads, as it does for the core's events.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from events.interactions import Interaction
from services.api.auth import create_token
from services.domain.case import Case
from services.domain.customer import Customer
from services.gdpr.erase import erase_customer
from tests.fixtures.providers import eventually

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def a_customer(store, name: str, identities: dict[str, str], messages: list[str], at: datetime = T0) -> dict:
    """A customer with a verified name and identities and one case with these inbound messages."""
    customer = Customer.register(uuid.uuid4(), at)
    for kind, value in identities.items():
        customer.link(kind, value, at)
    customer.update_profile({"name": name}, True, at)
    case = None
    items = []
    for i, text in enumerate(messages):
        message = Interaction(
            id=uuid.uuid4(), channel="email", direction="inbound", occurred_at=at + timedelta(minutes=i), text=text
        )
        if case is None:
            case = Case.open(uuid.uuid4(), customer.id, "email", None, message.occurred_at, interaction_id=message.id)
        else:
            case.add_message(message.id, "inbound", "email", message.occurred_at)
        customer.record(message, case.id, None)
        items.append(str(message.id))
    with store.transaction() as tx:
        tx.append(customer.collect() + (case.collect() if case else []))
    return {"id": str(customer.id), "items": items, "case_id": str(case.id) if case else None}


async def found(client: httpx.AsyncClient, q: str, **params) -> list[dict]:
    r = await client.get("/api/v1/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def settled(client: httpx.AsyncClient, q: str, ids: set[str]) -> list[dict]:
    """The hits for `q` once every id of `ids` is among them (the projector has caught up)."""
    return await eventually(lambda: found(client, q), lambda hits: ids <= {h["id"] for h in hits})


async def test_accents_and_case_are_ignored_in_spanish_and_english(server, store, admin_headers):
    jose = a_customer(
        store,
        "José Muñoz",
        {"email": "jose.munoz@example.com", "phone": "+34600111222"},
        ["¿Dónde está mi pedido? Llegó roto y nadie contesta."],
    )
    ada = a_customer(store, "Ada Lovelace", {"email": "ada@example.org"}, ["My parcel arrived broken, please help."])
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        await settled(client, "ada", {ada["id"]})
        for q in ("Jose", "MUNOZ", "josé muñoz", "muñ", "jose.munoz@example.com", "munoz@example", "+34600111222"):
            hits = await found(client, q)
            assert [h["id"] for h in hits if h["kind"] == "customer"] == [jose["id"]], q
        customer = next(h for h in await found(client, "Jose") if h["kind"] == "customer")
        assert customer["customer_id"] == jose["id"] and "«José»" in customer["snippet"]

        for q in ("donde esta", "DÓNDE ESTÁ", "pedido roto", "llego"):
            hits = await found(client, q)
            assert [(h["kind"], h["id"]) for h in hits] == [("timeline_item", jose["items"][0])], q
            assert hits[0]["customer_id"] == jose["id"] and hits[0]["case_id"] == jose["case_id"]
            assert hits[0]["channel"] == "email"
        assert "«Dónde»" in (await found(client, "donde"))[0]["snippet"]

        for q in ("PARCEL broken", "arrived", "Broken"):
            hits = await found(client, q)
            assert [(h["kind"], h["id"]) for h in hits] == [("timeline_item", ada["items"][0])], q
        assert await found(client, "parcel roto") == [], "every word must match"
        assert await found(client, "zzzunknown") == []

        # The customer list of the API (?q=) folds accents and case the same way.
        listed = (await client.get("/api/v1/customers", params={"q": "MUNOZ"})).json()["items"]
        assert [c["id"] for c in listed] == [jose["id"]]
        listed = (await client.get("/api/v1/customers", params={"q": "josé.muñoz@"})).json()["items"]
        assert [c["id"] for c in listed] == [jose["id"]]


async def test_a_customer_named_so_ranks_before_a_message_mentioning_it(server, store, admin_headers):
    other = a_customer(
        store, "Bob Stone", {"email": "bob@example.net"}, ["I spoke with Zephyrine at the shop about my refund."]
    )
    named = a_customer(store, "Zéphyrine Quill", {"email": "zq@example.net"}, ["hello"], at=T0 - timedelta(days=30))
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        hits = await settled(client, "zephyrine", {named["id"], other["items"][0]})
        assert [(h["kind"], h["id"]) for h in hits] == [
            ("customer", named["id"]),
            ("timeline_item", other["items"][0]),
        ]
        assert hits[0]["rank"] > hits[1]["rank"]
        assert len(await found(client, "zephyrine", limit=1)) == 1


async def test_an_erased_customer_is_found_no_more(server, store, admin_headers):
    gone = a_customer(
        store, "Íñigo Errazuriz", {"email": "inigo@example.es"}, ["Quiero darme de baja, gracias por todo."]
    )
    kept = a_customer(store, "Iñigo Other", {"email": "other@example.es"}, ["Baja también para mí."])
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        await settled(client, "inigo", {gone["id"], kept["id"]})
        await settled(client, "baja", {gone["items"][0], kept["items"][0]})

        await asyncio.to_thread(erase_customer, server.sb, uuid.UUID(gone["id"]), "test", datetime.now(UTC))

        for q in ("inigo", "errazuriz", "inigo@example.es", "baja", "gracias", "erased"):
            ids = {h["id"] for h in await found(client, q)} | {h["customer_id"] for h in await found(client, q)}
            assert gone["id"] not in ids and gone["items"][0] not in ids, q
        assert {h["id"] for h in await found(client, "baja")} == {kept["items"][0]}
        assert [h["id"] for h in await found(client, "inigo")] == [kept["id"]]


async def test_every_role_may_search_and_nobody_else(server, store, settings):
    a_customer(store, "Role Tester", {"email": "roles@example.com"}, ["nothing"])
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        tokens = {role: create_token(conn, role)[1] for role in ("agent", "supervisor", "auditor", "admin")}
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        for role, token in tokens.items():
            r = await client.get("/api/v1/search", params={"q": "tester"}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, (role, r.text)
        r = await client.get("/api/v1/search", params={"q": "tester"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = await client.get("/api/v1/search", params={"q": "tester"}, headers={"Authorization": "Bearer sb_nope"})
        assert r.status_code == 401


BAD = [
    {},
    {"q": ""},
    {"q": "   "},
    {"q": "!!! ¿? --"},
    {"q": "x" * 201},
    {"q": " ".join(f"w{i}" for i in range(17))},
    {"q": "ok", "limit": "0"},
    {"q": "ok", "limit": "101"},
    {"q": "ok", "limit": "many"},
]


async def test_bad_queries_get_a_400_with_the_contract_body(server, admin_headers):
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        for params in BAD:
            r = await client.get("/api/v1/search", params=params)
            assert r.status_code == 400, (params, r.text)
            assert set(r.json()) == {"error", "detail"} and r.json()["error"] == "malformed", params
