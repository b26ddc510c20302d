"""The SLA clock end to end: a policy PUT over HTTP with business hours, an SMS from the connector on
a Friday evening, the whole Switchboard running with its time read from a clock file (the timer's
and the API commands'), breaches recorded on time and once, replies fulfilling, snoozed cases
woken at their time, pending cases' clocks paused.

No sleeps: every "nothing happened (yet)" is read after a probe case due earlier was breached, which
proves the timer ticked past that time.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import msgspec
import nats
import pytest

from events.interactions import ENCODER, Identity, Interaction, interaction_id
from services.core.commands import run_command
from services.domain.config import Queue, SlaPolicy
from services.domain.routing import new_case_id
from services.platform.clock import Clock
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import case_event_until, case_events

pytestmark = pytest.mark.e2e

MADRID = ZoneInfo("Europe/Madrid")


def friday(hour: int, minute: int) -> datetime:
    return datetime(2026, 11, 20, hour, minute, tzinfo=MADRID)


def monday(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 23, hour, minute, second, tzinfo=MADRID)


@pytest.fixture
def clock_file(tmp_path):
    path = tmp_path / "clock"
    Clock.write(path, friday(17, 52))
    return path


@pytest.fixture
def settings(settings, clock_file):
    return msgspec.structs.replace(settings, clock_file=str(clock_file))


def sms(phone: str, at: datetime) -> Interaction:
    provider_id = uuid.uuid4().hex
    return Interaction(
        id=interaction_id("sms", provider_id),
        channel="sms",
        direction="inbound",
        occurred_at=at,
        identities=[Identity("phone", phone)],
        provider_message_id=provider_id,
        text="my order has not arrived",
    )


async def sla_events(server, case_id: uuid.UUID) -> list[tuple]:
    return [
        (e.NAME.removeprefix("case."), getattr(e, "target", None), getattr(e, "due_at", None), e.occurred_at)
        for e in await case_events(server, str(case_id))
        if e.NAME.startswith("case.Sla") or e.NAME == "case.Woken"
    ]


async def breaches(server, case_id: uuid.UUID) -> list[tuple]:
    return [e for e in await sla_events(server, case_id) if e[0] == "SlaBreached"]


async def test_business_hours_breach_once_reply_fulfils_snooze_wakes_pending_pauses(
    server, settings, names, nats_url, admin_headers, store, clock_file
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, headers=admin_headers) as api:
        policy = {
            "first_response": {"normal": "PT15M", "urgent": "PT5M"},
            "next_response": {"normal": "PT30M"},
            "resolution": {"normal": "PT8H"},
            "business_hours": {
                "timezone": "Europe/Madrid",
                "week": {d: ["09:00-14:00", "15:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                "holidays": ["2026-12-25"],
            },
        }
        r = await api.put("/api/v1/sla-policies/gold", json=policy)
        assert r.status_code == 200, r.text
        assert r.json()["first_response"] == {"normal": "PT15M", "urgent": "PT5M"} and r.json()["position"] > 0
        r = await api.put(
            "/api/v1/sla-policies/bad", json={**policy, "business_hours": {"timezone": "Mars/Base", "week": {}}}
        )
        assert r.status_code == 400 and r.json()["error"] == "malformed"
        listed = await eventually(lambda: api.get("/api/v1/sla-policies"), lambda r: r.json())
        assert [p["name"] for p in listed.json()] == ["gold"]
        assert listed.json()[0]["business_hours"]["timezone"] == "Europe/Madrid"

        # The SMS queue uses it (as the routing's PUT /api/v1/queues would record it).
        run_command(
            store,
            Queue,
            Queue.stream_id("sms"),
            lambda q: q.configure("sms", "admin", friday(17, 0), sla_policy="gold"),
            create=True,
        )

        # Customers write on Friday evening, through the connector (the interactions subject).
        messages = {
            "main": sms("+447700900101", friday(17, 50)),  # first response due Monday 09:05
            "probe_0902": sms("+447700900102", friday(17, 47)),  # due Monday 09:02
            "probe_0906": sms("+447700900103", friday(17, 51)),  # due Monday 09:06
            "replied": sms("+447700900104", friday(17, 50)),
            "snoozed": sms("+447700900105", friday(17, 50)),
        }
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for message in messages.values():
                await js.publish(
                    names.interaction_subject("sms", "inbound"),
                    ENCODER.encode(message),
                    headers={"Nats-Msg-Id": str(message.id)},
                )
        finally:
            await nc.close()
        case = {name: new_case_id(message.id) for name, message in messages.items()}
        for name in case:
            await eventually(lambda name=name: sla_events(server, case[name]), lambda e: len(e) == 2)
        assert (await sla_events(server, case["main"]))[0][:3] == ("SlaStarted", "first_response", monday(9, 5))

        view = await eventually(
            lambda: api.get(f"/api/v1/cases/{case['main']}"), lambda r: r.status_code == 200 and r.json()["sla_state"]
        )
        assert view.json()["queue"] == "sms" and view.json()["sla_state"] == "running"
        assert datetime.fromisoformat(view.json()["sla_due_at"]) == monday(9, 5)

        # Monday 09:01: an agent replies to one case and snoozes another until 09:10.
        Clock.write(clock_file, monday(9, 1))
        r = await api.post(f"/api/v1/cases/{case['replied']}/reply", json={"text": "On its way"})
        assert r.status_code == 200, r.text
        r = await api.post(f"/api/v1/cases/{case['snoozed']}/snooze", json={"until": monday(9, 10).isoformat()})
        assert r.status_code == 200, r.text
        fulfilled = await case_event_until(server, str(case["replied"]), "case.SlaFulfilled")
        assert (fulfilled.target, fulfilled.occurred_at) == ("first_response", monday(9, 1))
        paused = await case_event_until(server, str(case["replied"]), "case.SlaPaused")
        assert paused.reason == "pending"
        assert (await case_event_until(server, str(case["snoozed"]), "case.SlaPaused")).reason == "snoozed"
        pending = await eventually(
            lambda: api.get(f"/api/v1/cases/{case['replied']}"), lambda r: r.json()["sla_state"] == "paused"
        )
        assert pending.json()["status"] == "pending" and pending.json()["sla_due_at"] is None

        # 09:04: the 09:02 probe is breached, the 09:05 case is not.
        Clock.write(clock_file, monday(9, 4))
        await eventually(lambda: breaches(server, case["probe_0902"]))
        assert await breaches(server, case["main"]) == []

        # 09:05:30: breached, once, due at 09:05; then the timer ticks past 09:06 (the other probe).
        Clock.write(clock_file, monday(9, 5, 30))
        [breach] = await eventually(lambda: breaches(server, case["main"]))
        assert breach[1:3] == ("first_response", monday(9, 5))
        Clock.write(clock_file, monday(9, 6, 30))
        await eventually(lambda: breaches(server, case["probe_0906"]))
        assert len(await breaches(server, case["main"])) == 1
        assert await breaches(server, case["replied"]) == []  # answered in time
        assert await breaches(server, case["snoozed"]) == []  # its clock stopped while snoozed
        breached = await eventually(
            lambda: api.get(f"/api/v1/cases/{case['main']}"), lambda r: r.json()["sla_breached"]
        )
        assert breached.json()["sla_state"] == "breached"

        # 09:10: the snoozed case wakes at its time and its clocks run again with what was left
        # (first response: 10 minutes used on Friday and 1 on Monday before the snooze at 09:01; 4 left).
        Clock.write(clock_file, monday(9, 10))
        woken = await case_event_until(server, str(case["snoozed"]), "case.Woken")
        assert woken.occurred_at == monday(9, 10)
        resumed = await eventually(
            lambda: sla_events(server, case["snoozed"]),
            lambda e: any(x[0] == "SlaResumed" and x[1] == "first_response" for x in e),
        )
        assert [x[2] for x in resumed if x[0] == "SlaResumed" and x[1] == "first_response"] == [monday(9, 14)]

        # SLA attainment counts the first-response clocks that ended: 1 met (replied), 3 breached.
        window = {"from": friday(0, 0).isoformat(), "to": monday(0, 0).isoformat()}
        r = await api.get("/api/v1/metrics", params=window)
        assert r.status_code == 200, r.text
        assert r.json()["sla_attainment"] == 0.25


async def test_policies_are_checked_and_only_supervisors_configure_them(server, settings, admin_headers) -> None:
    import psycopg  # noqa: PLC0415

    from services.api.auth import create_token  # noqa: PLC0415

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        _, agent = create_token(conn, "agent", "agent-sla")
        _, supervisor = create_token(conn, "supervisor", "supervisor-sla")
    good = {"first_response": {"high": "PT1H"}, "resolution": {"high": "P2DT4H"}}
    bad_bodies = [
        {"first_response": {"highest": "PT1H"}},  # not a priority
        {"first_response": {"high": "one hour"}},  # not ISO 8601
        {"first_response": {"high": "P1M"}},  # months have no fixed length
        {"first_response": {"high": "PT0S"}},  # zero
        {"first_response": {"high": "-PT5M"}},
        {"first_response": {"high": "P400D"}},  # more than a year
        {},  # no target at all
        {**good, "business_hours": {"timezone": "Europe/Nowhere", "week": {"mon": ["09:00-18:00"]}}},
        {**good, "business_hours": {"timezone": "Europe/Madrid", "week": {"monday": ["09:00-18:00"]}}},
        {**good, "business_hours": {"timezone": "Europe/Madrid", "week": {"mon": ["9:00-18:00"]}}},
        {**good, "business_hours": {"timezone": "Europe/Madrid", "week": {"mon": ["18:00-09:00"]}}},
        {**good, "business_hours": {"timezone": "Europe/Madrid", "week": {"mon": ["09:00-14:00", "13:00-18:00"]}}},
        {**good, "business_hours": {"timezone": "Europe/Madrid", "week": {}}},
        {
            **good,
            "business_hours": {"timezone": "Europe/Madrid", "week": {"mon": ["09:00-18:00"]}, "holidays": ["25/12"]},
        },
        {**good, "surprise": True},
    ]
    async with httpx.AsyncClient(base_url=server.http_url) as api:
        for body in bad_bodies:
            r = await api.put("/api/v1/sla-policies/silver", json=body, headers=admin_headers)
            assert r.status_code == 400, (body, r.text)
            assert set(r.json()) == {"error", "detail"}
        r = await api.put("/api/v1/sla-policies/silver", json=good, headers={"Authorization": f"Bearer {agent}"})
        assert r.status_code == 403
        r = await api.put("/api/v1/sla-policies/silver", json=good, headers={"Authorization": f"Bearer {supervisor}"})
        assert r.status_code == 200, r.text
        assert (r.json()["first_response"], r.json()["resolution"]) == ({"high": "PT1H"}, {"high": "P2DT4H"})
        listed = await eventually(
            lambda: api.get("/api/v1/sla-policies", headers={"Authorization": f"Bearer {agent}"}),
            lambda r: r.status_code == 200 and r.json(),
        )
        assert [(p["name"], p["position"]) for p in listed.json()] == [("silver", r.json()["position"])]
        # The refused attempts recorded nothing: the policy's stream holds the one configuration.
        stored = server.sb.open_store().load(SlaPolicy.stream_id("silver"))
        assert [(e.NAME, e.by) for e in stored] == [("sla.PolicyConfigured", "supervisor-sla")]
        schema = (await api.get("/schema/openapi.json")).json()
        operation = schema["paths"]["/api/v1/sla-policies/{name}"]["put"]
        assert "requestBody" in operation and "200" in operation["responses"]
