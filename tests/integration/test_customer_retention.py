"""Retention and churn from the log: the customer-activity read model (projections/customer_activity.py)
built live from inbound messages (outbound ones and statuses are not the customer being active),
merges carried over, the periods counted by GET /api/v1/metrics's query; and the new read models
(customer activity, segment definitions) rebuild to exactly what live projection built."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from events.interactions import Interaction
from projections.customer_activity import CustomerActivityProjection
from projections.runner import ProjectionRunner
from projections.segments import SegmentsProjection
from services.api.metrics import retention_periods
from services.domain.config import Segment
from services.domain.customer import Customer

pytestmark = pytest.mark.integration

WEEK1 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)
MIDNIGHT = WEEK1.replace(hour=0)


def _touch(customer: Customer, at: datetime, direction: str = "inbound", kind: str = "message") -> None:
    customer.record(
        Interaction(id=uuid.uuid4(), channel="sms", direction=direction, kind=kind, occurred_at=at, text="x"), None
    )


def _write(store, runner, *aggregates) -> None:
    with store.transaction() as tx:
        tx.append([e for a in aggregates for e in a.collect()])
    runner.catch_up()


def _log(store, runner) -> dict[str, Customer]:
    people = {label: Customer.register(uuid.uuid4(), WEEK1) for label in "abcde"}
    a, b, c, d, e = people.values()
    for week in (0, 1, 2):
        _touch(a, WEEK1 + week * WEEK + timedelta(hours=week))
    _touch(a, WEEK1 + timedelta(hours=5))  # twice in a week: once
    _touch(b, WEEK1)
    _touch(c, WEEK1, direction="outbound")  # we wrote to them: not them being active
    _touch(c, WEEK1 + timedelta(days=1), kind="status")
    _touch(c, WEEK1 + WEEK)
    _touch(c, WEEK1 + 2 * WEEK + timedelta(days=6))
    _touch(d, WEEK1 + WEEK + timedelta(days=2))
    _touch(e, WEEK1 + timedelta(days=3))
    _write(store, runner, *people.values())
    b.absorb(d, WEEK1 + 3 * WEEK, decided_by="supervisor")  # d's week 2 is b's now
    _write(store, runner, b, d)
    for name in ("vip", "late payers"):
        segment = Segment(Segment.stream_id(name))
        segment.define(name, {"all": [{"field": "tags", "op": "contains", "value": name}]}, "sup", WEEK1)
        _write(store, runner, segment)
    segment = Segment.replay(Segment.stream_id("vip"), store.load(Segment.stream_id("vip")))
    segment.define("vip", {"any": [{"field": "csat_avg", "op": "gte", "value": 4}]}, "sup2", WEEK1 + WEEK)
    _write(store, runner, segment)
    return people


async def test_retention_and_churn_per_week_and_month(store, settings):
    runner = ProjectionRunner(store)
    _log(store, runner)
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        weeks = await retention_periods(conn, MIDNIGHT, MIDNIGHT + 3 * WEEK, "week", WEEK1 + 10 * WEEK)
        months = await retention_periods(conn, MIDNIGHT, MIDNIGHT + 3 * WEEK, "month", WEEK1 + 10 * WEEK)
        days = await retention_periods(conn, MIDNIGHT, MIDNIGHT + timedelta(days=2), "day", WEEK1 + WEEK)
    # Week 1: a, b, e (c only received); week 2: a, b (by d, merged in), c; week 3: a, c; week 4: nobody.
    assert [(p.start, p.active, p.retained, p.churned) for p in weeks] == [
        (date(2026, 5, 4), 3, 2, 1),
        (date(2026, 5, 11), 3, 2, 1),
        (date(2026, 5, 18), 2, 0, 2),
    ]
    assert [p.complete for p in weeks] == [True, True, True]
    assert [(p.start, p.active, p.retained) for p in months] == [(date(2026, 5, 1), 4, 0)]
    assert [(p.start, p.active, p.retained) for p in days] == [(date(2026, 5, 4), 2, 0), (date(2026, 5, 5), 0, 0)]


TABLES = {
    "proj_customer_activity": "customer_id, day",
    "proj_customer_inbound_channels": "customer_id, channel",
    "proj_segments": "id",
}


def _dump(database_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall() for t, key in TABLES.items()}


def test_the_new_read_models_rebuild_to_what_live_projection_built(store, settings):
    runner = ProjectionRunner(store, batch_size=3)
    people = _log(store, runner)
    before = _dump(settings.database_url)
    assert len(before["proj_customer_activity"]) == 8
    assert not any(row[0] == people["d"].id for row in before["proj_customer_activity"])
    # Who wrote to us on which channel: c only received on SMS before writing (inbound, later): there.
    assert sorted(row[0] for row in before["proj_customer_inbound_channels"]) == sorted(people[x].id for x in "abce")
    assert [(row[1], row[3], row[5]) for row in before["proj_segments"] if row[1] == "vip"] == [("vip", "sup", "sup2")]

    ProjectionRunner(store, [CustomerActivityProjection(), SegmentsProjection()]).rebuild()

    assert _dump(settings.database_url) == before
