"""`GET /api/v1/metrics` with `by`, `interval`, `tz` and CSV, over a week of known cases: the figures
are the ones worked out by hand below, the old fields are still there, every role may read, and a
bad parameter gets a 400 with the contract's body.

The cases and agents are written through the real aggregates into the event store; the server's
projector builds the metrics read model from those events.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from services.api.auth import create_token
from services.domain.agent import Agent
from services.domain.case import Case
from tests.fixtures.providers import eventually

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
PERIOD = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-05T00:00:00Z"}
MIN = timedelta(minutes=1)


def seed(store) -> dict[str, str]:
    """Four cases in the period and one before it:

    1. email, Ana (billing), first reply after 10 min (SLA met), resolved after 2 h, CSAT 5
    2. sms, Bo (billing + tech), first reply after 30 min (SLA breached at 20), resolved after 5 h, CSAT 3
    3. email, Tuesday, Ana, transferred to queue vip, first reply after 20 min (SLA met), still open
    4. chat, Tuesday 23:30 UTC (Wednesday 00:30 in Madrid), unassigned, no reply
    """
    ana = Agent.create("ana@example.com", "Ana", "agent", T0, teams=["billing"])
    bo = Agent.create("bo@example.com", "Bo", "agent", T0, teams=["billing", "tech"])
    events = ana.collect() + bo.collect()

    def case(channel: str, at: datetime) -> Case:
        c = Case.open(uuid.uuid4(), uuid.uuid4(), channel, None, at, interaction_id=uuid.uuid4())
        c.start_sla("first_response", "standard", at + 15 * MIN, at)
        return c

    one = case("email", T0)
    one.assign(str(ana.id), "routing", T0 + MIN)
    one.request_reply(uuid.uuid4(), "hi", "ana", T0 + 10 * MIN)
    one.fulfil_sla("first_response", T0 + 10 * MIN)
    one.resolve("ana", T0 + 120 * MIN)
    one.record_csat(5, T0 + 130 * MIN)

    two = case("sms", T0 + 60 * MIN)
    two.assign(str(bo.id), "routing", T0 + 61 * MIN)
    two.breach_sla("first_response", T0 + 80 * MIN)
    two.request_reply(uuid.uuid4(), "sorry", "bo", T0 + 90 * MIN)
    two.resolve("bo", T0 + 360 * MIN)
    two.record_csat(3, T0 + 370 * MIN)

    three = case("email", T0 + timedelta(days=1))
    three.assign(str(ana.id), "routing", T0 + timedelta(days=1) + MIN)
    three.transfer("vip", "supervisor", T0 + timedelta(days=1) + 2 * MIN)
    three.request_reply(uuid.uuid4(), "hello", "ana", T0 + timedelta(days=1) + 20 * MIN)
    three.fulfil_sla("first_response", T0 + timedelta(days=1) + 20 * MIN)

    four = case("chat", datetime(2026, 3, 3, 23, 30, tzinfo=UTC))
    before = case("email", T0 - timedelta(days=2))
    before.request_reply(uuid.uuid4(), "old", "ana", T0 - timedelta(days=2) + MIN)
    for c in (one, two, three, four, before):
        events += c.collect()
    with store.transaction() as tx:
        tx.append(events)
    return {"ana": str(ana.id), "bo": str(bo.id)}


async def metrics(client: httpx.AsyncClient, **params) -> dict:
    r = await client.get("/api/v1/metrics", params={**PERIOD, **params})
    assert r.status_code == 200, r.text
    return r.json()


async def settled(client: httpx.AsyncClient) -> dict:
    return await eventually(
        lambda: metrics(client),
        lambda m: m["overall"]["volume"] == 4 and m["overall"]["csat"]["count"] == 2 and m["cases_opened"] == 4,
    )


async def test_figures_as_a_whole_by_group_and_over_time(server, store, admin_headers):
    agents = seed(store)
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        whole = await settled(client)
        # The fields the endpoint always had.
        assert whole["from"].startswith("2026-03-02T00:00:00") and whole["to"].startswith("2026-03-05T00:00:00")
        assert whole["first_response_time_s"] == 1200.0 and whole["resolution_time_s"] == 12600.0
        assert whole["csat"] == 4.0 and whole["csat_responses"] == 2
        assert set(whole["volume_per_channel"]) <= {"email", "sms", "chat"}
        overall = whole["overall"]
        assert overall["first_response"] == {"count": 3, "avg_s": 1200.0, "median_s": 1200.0, "p90_s": 1680.0}
        assert overall["resolution"] == {"count": 2, "avg_s": 12600.0, "median_s": 12600.0, "p90_s": 16920.0}
        assert overall["sla"]["first_response"] == {"met": 2, "breached": 1, "attainment": 0.667}
        assert overall["sla"]["resolution"] == {"met": 0, "breached": 0, "attainment": None}
        assert overall["sla"]["overall"] == {"met": 2, "breached": 1, "attainment": 0.667}
        assert overall["csat"] == {"avg": 4.0, "count": 2}
        assert whole["groups"] == [] and whole["series"] == []

        by_agent = (await metrics(client, by="agent"))["groups"]
        assert [(g["key"], g["volume"]) for g in by_agent] == [(agents["ana"], 2), (agents["bo"], 1), (None, 1)]
        ana = by_agent[0]
        assert ana["first_response"]["avg_s"] == 900.0 and ana["sla"]["first_response"]["attainment"] == 1.0
        assert by_agent[1]["sla"]["first_response"] == {"met": 0, "breached": 1, "attainment": 0.0}
        assert by_agent[1]["csat"] == {"avg": 3.0, "count": 1}

        by_team = (await metrics(client, by="team"))["groups"]
        assert [(g["key"], g["volume"]) for g in by_team] == [("billing", 3), ("tech", 1), (None, 1)]
        assert by_team[0]["csat"] == {"avg": 4.0, "count": 2}

        by_queue = (await metrics(client, by="queue"))["groups"]
        assert [(g["key"], g["volume"]) for g in by_queue] == [("chat", 1), ("email", 1), ("sms", 1), ("vip", 1)]
        by_channel = (await metrics(client, by="channel"))["groups"]
        assert [(g["key"], g["volume"]) for g in by_channel] == [("email", 2), ("chat", 1), ("sms", 1)]

        daily = (await metrics(client, interval="day"))["series"]
        assert [(b["start"], b["volume"]) for b in daily] == [
            ("2026-03-02T00:00:00Z", 2),
            ("2026-03-03T00:00:00Z", 2),
            ("2026-03-04T00:00:00Z", 0),
        ]
        assert daily[0]["end"] == "2026-03-03T00:00:00Z" and daily[2]["first_response"]["count"] == 0
        madrid = await metrics(client, interval="day", tz="Europe/Madrid", by="channel")
        assert madrid["tz"] == "Europe/Madrid"
        assert [(b["start"], b["volume"]) for b in madrid["series"]] == [
            ("2026-03-02T00:00:00+01:00", 2),
            ("2026-03-03T00:00:00+01:00", 1),
            ("2026-03-04T00:00:00+01:00", 1),
            ("2026-03-05T00:00:00+01:00", 0),
        ]
        assert [(g["key"], g["volume"]) for g in madrid["series"][2]["groups"]] == [("chat", 1)]
        weekly = (await metrics(client, interval="week"))["series"]
        assert [(b["start"], b["end"], b["volume"]) for b in weekly] == [
            ("2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z", 4)
        ]


async def test_csv_has_a_row_per_group_and_bucket(server, store, admin_headers):
    agents = seed(store)
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as client:
        await settled(client)
        r = await client.get("/api/v1/metrics", params={**PERIOD, "by": "team"}, headers={"Accept": "text/csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [(row["group"], row["volume"]) for row in rows] == [("billing", "3"), ("tech", "1"), ("", "1")]
        assert rows[0]["sla_first_response_attainment"] == "0.667" and rows[0]["csat_avg"] == "4.0"
        assert rows[2]["first_response_avg_s"] == "" and rows[0]["bucket_start"] == ""

        r = await client.get(
            "/api/v1/metrics", params={**PERIOD, "interval": "day", "by": "agent"}, headers={"Accept": "text/csv"}
        )
        rows = list(csv.DictReader(io.StringIO(r.text)))
        first, second = sorted((agents["ana"], agents["bo"]))  # equal volumes: by key
        assert [(row["bucket_start"][:10], row["group"], row["volume"]) for row in rows] == [
            ("2026-03-02", first, "1"),
            ("2026-03-02", second, "1"),
            ("2026-03-03", agents["ana"], "1"),
            ("2026-03-03", "", "1"),
        ]
        whole = await client.get("/api/v1/metrics", params={**PERIOD, "format": "csv"})
        rows = list(csv.DictReader(io.StringIO(whole.text)))
        assert len(rows) == 1 and rows[0]["volume"] == "4" and rows[0]["resolution_p90_s"] == "16920.0"


async def test_every_role_may_read_metrics_and_bad_parameters_get_a_400(server, settings, admin_headers):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        tokens = {role: create_token(conn, role)[1] for role in ("agent", "supervisor", "auditor")}
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        for role, token in tokens.items():
            r = await client.get("/api/v1/metrics", params={"by": "team"}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, (role, r.text)
        assert (await client.get("/api/v1/metrics")).status_code == 401
        for params in (
            {"by": "customer"},
            {"interval": "year"},
            {"tz": "Mars/Olympus"},
            {"tz": "../../etc/passwd"},
            {"from": "yesterday"},
            {"from": "2026-03-05T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
            {"from": "0001-01-01T00:00:00Z"},
            {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "interval": "day"},
            {"format": "xml"},
        ):
            r = await client.get("/api/v1/metrics", params=params, headers=admin_headers)
            assert r.status_code == 400, (params, r.text)
            assert set(r.json()) == {"error", "detail"} and r.json()["error"] == "malformed", params
