"""Segment membership (services/segments/members.py): a filter compiled to one SQL query over the real
read models, built from real events by the projector. Every field and op against known customers,
membership that follows the data (an event moves a customer in or out, the segment untouched), the
customers that never are members (merged away, erased), and keyset paging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest

from events.interactions import Identity, Interaction
from projections.runner import ProjectionRunner
from services.domain.case import Case
from services.domain.customer import Customer
from services.domain.filters import SEGMENT_FIELDS, parse
from services.segments.members import segment_member_ids, segment_member_ids_sync

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=40)

# The read models of consent and business activities (branch h-data), as that branch defines them;
# created here when the projections of this checkout do not.
H_DATA_TABLES = """
CREATE TABLE IF NOT EXISTS proj_consent (customer_id uuid NOT NULL, purpose text NOT NULL, channel text NOT NULL,
    granted boolean NOT NULL, source text, changed_at timestamptz NOT NULL, PRIMARY KEY (customer_id, purpose, channel));
CREATE TABLE IF NOT EXISTS proj_activity_totals (customer_id uuid NOT NULL, type text NOT NULL, count bigint NOT NULL,
    amount_sum numeric, last_at timestamptz, PRIMARY KEY (customer_id, type));
"""


def _message(channel: str, at: datetime, name: str | None = None) -> Interaction:
    return Interaction(
        id=uuid.uuid4(),
        channel=channel,
        direction="inbound",
        occurred_at=at,
        identities=[Identity("email", f"{uuid.uuid4().hex[:10]}@example.org")],
        text="hello",
        profile={"name": name} if name else {},
    )


class World:
    """Customers written as events and projected; `ids` by a short label."""

    def __init__(self, store, database_url: str):
        self.store = store
        self.database_url = database_url
        self.runner = ProjectionRunner(store)
        self.ids: dict[str, uuid.UUID] = {}
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(H_DATA_TABLES)

    def customer(
        self, label: str, name: str | None, channels: list[str], first: datetime, sent: tuple[str, ...] = (), **attrs
    ) -> Customer:
        customer = Customer.register(uuid.uuid4(), first)
        if name:
            customer.update_profile({"name": name}, True, first)
        for i, channel in enumerate(channels):
            customer.record(_message(channel, first + timedelta(days=i)), None)
        for channel in sent:  # we wrote to them there; they did not write to us
            customer.record(msgspec.structs.replace(_message(channel, first), direction="outbound"), None)
        if attrs:
            customer.set_attributes(attrs, "agent@example.com", first)
        self.ids[label] = customer.id
        self.append(customer.collect())
        return customer

    def case(self, label: str, tags: list[str] = (), csat: int | None = None, resolved: bool = False) -> Case:
        case = Case.open(uuid.uuid4(), self.ids[label], "email", None, T0)
        if tags:
            case.tag(list(tags), "agent", T0)
        if resolved:
            case.resolve("agent", T0)
        if csat is not None:
            case.record_csat(csat, T0)
        self.append(case.collect())
        return case

    def append(self, events) -> None:
        with self.store.transaction() as tx:
            tx.append(events)
        self.runner.catch_up()

    def sql(self, query: str, params=()) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(query, params)

    async def members(self, raw: dict, *, after=None, limit: int = 100, policy="implied") -> set[str]:
        tree = parse(raw, SEGMENT_FIELDS)
        async with await psycopg.AsyncConnection.connect(self.database_url) as conn:
            found = await segment_member_ids(conn, tree, after=after, limit=limit, now=NOW, consent_policy=policy)
        labels = {v: k for k, v in self.ids.items()}
        return {labels.get(i, str(i)) for i in found}


@pytest.fixture
def world(store, settings):
    w = World(store, settings.database_url)
    ana = w.customer("ana", "Ana Torres", ["sms", "email"], T0, plan="gold", tier="3", score=7)
    w.customer("bob", "=Bob", ["email"], T0 + timedelta(days=10), sent=("sms",), plan="silver", tier="12")
    w.customer("cy", None, ["chat"], T0 + timedelta(days=30))
    w.case("ana", tags=["vip", "billing"], csat=5)
    w.case("ana", csat=4, resolved=True)
    w.case("bob", tags=["billing"], csat=2, resolved=True)
    # A customer merged into Ana and one erased: never members.
    dup = w.customer("dup", "Ana T", ["whatsapp"], T0)
    ana.absorb(dup, T0 + timedelta(days=1), decided_by="supervisor")
    w.append(ana.collect() + dup.collect())
    gone = w.customer("gone", "Gone", ["email"], T0)
    gone.erase("gdpr", T0)
    w.append(gone.collect())
    # Consent and activities as branch h-data's read models hold them.
    w.sql("INSERT INTO proj_consent VALUES (%s, 'marketing', 'sms', false, 'keyword:STOP', %s)", (w.ids["ana"], T0))
    w.sql("INSERT INTO proj_consent VALUES (%s, 'marketing', 'whatsapp', true, 'api', %s)", (w.ids["cy"], T0))
    w.sql(
        "INSERT INTO proj_activity_totals VALUES (%s, 'order.placed', 3, 120.50, %s), (%s, 'invoice.paid', 1, 30, %s)",
        (w.ids["ana"], T0, w.ids["ana"], T0),
    )
    w.sql("INSERT INTO proj_activity_totals VALUES (%s, 'order.placed', 1, 9.99, %s)", (w.ids["bob"], T0))
    return w


def cond(field: str, op: str, value) -> dict:
    return {"all": [{"field": field, "op": op, "value": value}]}


CASES = [
    # name (text), a missing name is no match except ne
    (cond("name", "eq", "Ana Torres"), {"ana"}),
    (cond("name", "ne", "Ana Torres"), {"bob", "cy"}),
    (cond("name", "in", ["=Bob", "Nobody"]), {"bob"}),
    (cond("name", "contains", "torr"), {"ana"}),
    (cond("name", "matches", "^[A-Z][a-z]+ T"), {"ana"}),
    (cond("name", "contains", "%"), set()),  # a LIKE wildcard is a plain character here
    # attributes.KEY (text; compared as numbers when both read as numbers)
    (cond("attributes.plan", "eq", "gold"), {"ana"}),
    (cond("attributes.plan", "ne", "gold"), {"bob", "cy"}),
    (cond("attributes.tier", "eq", "3.0"), {"ana"}),
    (cond("attributes.score", "eq", 7), {"ana"}),
    (cond("attributes.tier", "in", ["12", "99"]), {"bob"}),
    (cond("attributes.plan", "contains", "IL"), {"bob"}),
    (cond("attributes.plan", "matches", "^(gold|silver)$"), {"ana", "bob"}),
    # channels (list)
    (cond("channels", "contains", "email"), {"ana", "bob"}),
    (cond("channels", "contains", "sms"), {"ana", "bob"}),  # Bob only received one
    (cond("channels", "eq", "whatsapp"), {"ana"}),  # Ana absorbed the WhatsApp customer
    (cond("channels", "ne", "email"), {"cy"}),
    # first_seen / last_seen (datetime: dates, timestamps, durations ago)
    (cond("first_seen", "before", "2026-05-10"), {"ana"}),
    (cond("first_seen", "after", "2026-05-10T00:00:00+00:00"), {"bob", "cy"}),
    (cond("last_seen", "gte", "P15D"), {"cy"}),  # NOW - 15 days = T0 + 25 days
    (cond("last_seen", "lt", "P30D"), {"ana"}),
    (cond("first_seen", "eq", T0.isoformat()), {"ana"}),
    (cond("first_seen", "lte", T0.isoformat()), {"ana"}),
    (cond("first_seen", "gt", T0.isoformat()), {"bob", "cy"}),
    # numbers
    (cond("interaction_count", "eq", 3), {"ana"}),  # two of hers and the absorbed customer's one
    (cond("interaction_count", "in", [1, 2]), {"bob", "cy"}),  # Bob: his email and our SMS
    (cond("open_cases", "gte", 1), {"ana"}),
    (cond("open_cases", "eq", 0), {"bob", "cy"}),
    (cond("csat_avg", "gt", "4.4"), {"ana"}),
    (cond("csat_avg", "lte", 2), {"bob"}),
    (cond("csat_avg", "ne", 2), {"ana", "cy"}),  # no score at all: only ne holds
    # tags of any of the customer's cases (list)
    (cond("tags", "contains", "billing"), {"ana", "bob"}),
    (cond("tags", "ne", "vip"), {"bob", "cy"}),
    # consent.PURPOSE.CHANNEL (bool): explicit, else implied by having been in touch there
    (cond("consent.marketing.sms", "eq", True), set()),  # Ana said STOP; Bob never wrote by SMS
    (cond("consent.marketing.email", "eq", True), {"ana", "bob"}),
    (cond("consent.marketing.whatsapp", "eq", True), {"ana", "cy"}),
    (cond("consent.marketing.sms", "ne", True), {"ana", "bob", "cy"}),
    (cond("consent.marketing.email", "eq", False), {"cy"}),
    # activities
    (cond("activities.order.placed.count", "gte", 1), {"ana", "bob"}),
    (cond("activities.order.placed.count", "lt", 1), {"cy"}),
    (cond("activities.invoice.paid.count", "eq", 1), {"ana"}),
    (cond("activities.amount.sum", "gt", 100), {"ana"}),
    (cond("activities.amount.sum", "eq", "9.99"), {"bob"}),
    # groups
    (
        {
            "any": [
                {"field": "name", "op": "eq", "value": "=Bob"},
                {
                    "all": [
                        {"field": "channels", "op": "contains", "value": "chat"},
                        {"field": "first_seen", "op": "after", "value": "2026-06-01"},
                    ]
                },
            ]
        },
        {"bob", "cy"},
    ),
    (
        {
            "all": [
                {"field": "tags", "op": "contains", "value": "billing"},
                {"any": [{"field": "csat_avg", "op": "gte", "value": 4}, {"field": "name", "op": "eq", "value": "x"}]},
            ]
        },
        {"ana"},
    ),
]


async def test_every_field_and_op_selects_the_right_customers(world):
    # One world for all cases (building it is the slow part); every mismatch reported together.
    wrong = [(raw, found, expected) for raw, expected in CASES if (found := await world.members(raw)) != expected]
    assert wrong == []


async def test_explicit_consent_policy_needs_a_recorded_grant(world):
    raw = cond("consent.marketing.whatsapp", "eq", True)
    assert await world.members(raw, policy="explicit") == {"cy"}


async def test_membership_follows_the_events_without_touching_the_segment(world):
    raw = cond("tags", "contains", "vip")
    assert await world.members(raw) == {"ana"}
    bob_case = world.case("bob")
    bob_case.tag(["vip"], "agent", T0)
    world.append(bob_case.collect())
    assert await world.members(raw) == {"ana", "bob"}

    gold = cond("attributes.plan", "eq", "gold")
    cy = Customer.replay(world.ids["cy"], world.store.load(world.ids["cy"]))
    cy.set_attributes({"plan": "gold"}, "agent", NOW)
    world.append(cy.collect())
    assert await world.members(gold) == {"ana", "cy"}
    cy.erase("gdpr", NOW)
    world.append(cy.collect())
    assert await world.members(gold) == {"ana"}


async def test_pages_by_id_with_a_stable_cursor(world):
    raw = cond("interaction_count", "gte", 0)
    everyone = sorted(world.ids[label] for label in ("ana", "bob", "cy"))
    tree = parse(raw, SEGMENT_FIELDS)
    async with await psycopg.AsyncConnection.connect(world.database_url) as conn:
        first = await segment_member_ids(conn, tree, after=None, limit=2, now=NOW)
        rest = await segment_member_ids(conn, tree, after=first[-1], limit=2, now=NOW)
    assert first + rest == everyone
    with psycopg.connect(world.database_url) as conn, conn.cursor() as curs:
        assert segment_member_ids_sync(curs, tree, after=everyone[0], limit=10, now=NOW) == everyone[1:]


async def test_values_are_bound_never_spliced(world):
    hostile = "x' OR 1=1; DROP TABLE proj_customers; --"
    assert await world.members(cond("name", "eq", hostile)) == set()
    assert await world.members(cond("attributes.plan", "ne", hostile)) == {"ana", "bob", "cy"}
