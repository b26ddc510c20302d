"""Automation end to end.

(a) Through a whole Switchboard: rules are saved over the API (bad ones refused with 400s naming
    what is wrong, nothing recorded; agents may not), and a rule moves an angry Spanish SMS
    complaint, classified by the classifier role, into the `complaints` queue with high priority.
(b) `switchboard serve automation` killed mid-stream and started again: every event's webhook
    reaches a loopback receiver signed, under one delivery id per event, and every rule fired once
    per event.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from services.api.auth import create_token
from services.core.commands import append_new, run_command
from services.domain.automation import Automation, parse_rule
from services.domain.case import Case, Classifications
from services.domain.config import CannedResponse
from tests.e2e.test_channel_sms import PUBLIC_URL, _post_signed, _sms
from tests.fixtures.providers import FakeHTTPProvider, eventually
from tests.fixtures.recorded import customer, running_server
from tests.fixtures.roles import RoleProcesses

pytestmark = pytest.mark.e2e

COMPLAINT = (
    "Es la tercera vez que escribo y nadie me responde. Un servicio pésimo, estoy harta de vuestras "
    "excusas y quiero poner una reclamación formal"
)
ANGRY = {
    "name": "angry-complaints",
    "on": "case.Classified",
    "if": {
        "all": [
            {"field": "sentiment", "op": "eq", "value": "negative"},
            {"field": "intent", "op": "eq", "value": "complaint"},
        ]
    },
    "then": [{"set_queue": "complaints"}, {"set_priority": "high"}],
}


def _bad_rules(canned_id: str) -> list[tuple[dict, str, str]]:
    """(body, error code, start of the detail)."""
    return [
        ({**ANGRY, "on": "case.Exploded"}, "invalid_rule", "on: unknown event type 'case.Exploded'"),
        (
            {**ANGRY, "if": {"all": [{"field": "sentiment", "op": "gt", "value": 3}]}},
            "invalid_filter",
            "if.all[0].op: 'gt' does not apply to text field 'sentiment'",
        ),
        (
            {**ANGRY, "if": {"all": [{"field": "mood", "op": "eq", "value": "x"}]}},
            "invalid_filter",
            "if.all[0].field: unknown field 'mood'",
        ),
        ({**ANGRY, "then": [{"launch": "rockets"}]}, "invalid_rule", "then[0]: unknown action 'launch'"),
        ({**ANGRY, "then": [{"set_queue": "nowhere"}]}, "invalid_rule", "then[0].set_queue: no queue named 'nowhere'"),
        ({**ANGRY, "then": [{"assign_team": "ghosts"}]}, "invalid_rule", "then[0].assign_team: no team named 'ghosts'"),
        (
            {**ANGRY, "then": [{"reply": {"canned": str(uuid.uuid4())}}]},
            "invalid_rule",
            "then[0].reply.canned: no canned response",
        ),
        (
            {**ANGRY, "then": [{"webhook": {"url": "file:///etc/passwd"}}]},
            "invalid_rule",
            "then[0].webhook.url: an http:// or https:// URL",
        ),
        ({**ANGRY, "name": ""}, "invalid_rule", "name: "),
        ({k: v for k, v in ANGRY.items() if k != "then"}, "malformed", ""),
    ]


@pytest.mark.timeout(240)
async def test_a_rule_moves_an_angry_spanish_complaint_into_the_complaints_queue(
    settings, names, admin_headers
) -> None:
    async with running_server(settings.with_(public_url=PUBLIC_URL), names) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url, headers=admin_headers) as api:
            store = srv.sb.open_store()
            canned = CannedResponse.create(uuid.uuid4(), "sorry", "Lo sentimos", "test", datetime.now(UTC))
            await asyncio.to_thread(append_new, store, canned)
            # Bad rules: a 400 naming what is wrong, and nothing recorded.
            for body, code, detail in _bad_rules(str(canned.id)):
                answer = await api.post("/api/v1/automations", json=body)
                assert answer.status_code == 400, (body, answer.text)
                assert answer.json()["error"] == code, answer.text
                assert answer.json()["detail"].startswith(detail), answer.text
            assert (await api.put("/api/v1/queues/complaints", json={"strategy": "manual"})).status_code == 200
            # Agents may not write rules.
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                _, agent_token = create_token(conn, "agent")
            denied = await api.post(
                "/api/v1/automations", json=ANGRY, headers={"authorization": f"Bearer {agent_token}"}
            )
            assert denied.status_code == 403
            assert (await api.get("/api/v1/automations")).json()["items"] == []

            saved = await api.post("/api/v1/automations", json=ANGRY)
            assert saved.status_code == 201, saved.text
            body = saved.json()
            assert (body["name"], body["on"], body["if"], body["then"], body["enabled"], body["version"]) == (
                "angry-complaints",
                "case.Classified",
                ANGRY["if"],
                ANGRY["then"],
                True,
                1,
            )
            minimum = {"Sb-Min-Position": str(body["position"])}
            listed = (await api.get("/api/v1/automations", headers=minimum)).json()["items"]
            assert [r["name"] for r in listed] == ["angry-complaints"]
            one = (await api.get("/api/v1/automations/angry-complaints", headers=minimum)).json()
            assert (one["if"], one["then"], one["fired"]) == (ANGRY["if"], ANGRY["then"], 0)
            assert (await api.get("/api/v1/automations/nothing-here")).status_code == 404
            assert (await api.get("/api/v1/automations/dead-letters")).json() == {"items": []}
            assert (await api.post("/api/v1/automations/dead-letters/retry", json={})).json() == {"retried": 0}
            empty = await api.post("/api/v1/automations/dead-letters/retry", json={"delivery_ids": []})
            assert empty.status_code == 400 and empty.json()["error"] == "malformed"

            # The angry customer writes; the classifier classifies; the rule moves the case.
            assert (await _post_signed(srv, _sms("+34612345679", COMPLAINT))).status_code == 200
            found = await customer(api, "phone", "+34612345679")

            async def the_case() -> dict | None:
                cases = (await api.get("/api/v1/cases", params={"customer_id": found["id"]})).json()["items"]
                return cases[0] if cases else None

            # the classifier works at the lowest CPU priority: on a busy machine it takes its time
            case = await eventually(the_case, lambda c: c is not None and c["queue"] == "complaints", timeout=150)
            assert case["priority"] == "high"
            events = await asyncio.to_thread(store.load, uuid.UUID(case["id"]))
            by_rule = [
                (e.NAME, getattr(e, "by", None)) for e in events if getattr(e, "by", "").startswith("automation:")
            ]
            assert by_rule == [
                ("case.Transferred", "automation:angry-complaints"),
                ("case.Prioritized", "automation:angry-complaints"),
            ]
            fired = await eventually(
                lambda: api.get("/api/v1/automations/angry-complaints"), lambda r: r.json()["fired"] == 1
            )
            assert fired.json()["last_fired_at"] is not None

            # Disabled by a save: a second complaint stays in its channel's queue.
            off = await api.post("/api/v1/automations", json={**ANGRY, "enabled": False})
            assert off.status_code == 201 and off.json()["version"] == 2 and off.json()["enabled"] is False

            # The OpenAPI document declares the bodies.
            schemas = (await api.get("/schema/openapi.json")).json()["components"]["schemas"]
            assert {"name", "on", "if", "then"} <= set(schemas["AutomationBody"]["properties"])
            assert {"fired", "if", "then"} <= set(schemas["AutomationView"]["properties"])


# -- (b) the automation process killed mid-stream ----------------------------------------------------


class SlowReceiver(FakeHTTPProvider):
    """Takes a moment over each call, so that the sender is mid-stream when it is killed. `calls`
    leaves out a request whose connection died before its body came (the kill)."""

    def calls(self) -> list:
        return [r for r in self.requests if r.body]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(0.05)
        await super().__call__(scope, receive, send)


def _receiver() -> SlowReceiver:
    return SlowReceiver(default=lambda request: (200, {"ok": True}))


def _classified_cases(store, n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        interaction = uuid.uuid4()
        case = Case.open(uuid.uuid4(), uuid.uuid4(), "sms", None, datetime.now(UTC), interaction_id=interaction)
        classifications = Classifications(Classifications.stream_of(case.id))
        classifications.classify(
            case.id, case.owner_id, interaction, "es", "negative", "complaint", 0.9, datetime.now(UTC)
        )
        with store.transaction() as tx:
            tx.append([*case.collect(), *classifications.collect()])
        ids.append(case.id)
    return ids


def _count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.mark.timeout(180)
async def test_webhooks_once_per_event_across_a_killed_automation_process(
    store, settings, database_url, tmp_path
) -> None:
    receiver = await _receiver().start()
    secret = "webhook-secret-for-the-test"
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_MASTER_KEY": settings.master_key,
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHBOARD_WEBHOOK_SECRET": secret,
        "SWITCHBOARD_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "SWITCHBOARD_WEBHOOK_TIMEOUT_SECONDS": "1",  # the lease a killed sender leaves behind: 6 s
        "SWITCHBOARD_LOG_FORMAT": "json",
    }
    env.pop("SWITCHBOARD_NATS_URL", None)
    processes = RoleProcesses(env, tmp_path)

    def start() -> subprocess.Popen:
        return processes.start("automation")

    try:
        rule = parse_rule(
            "hook-angry",
            "case.Classified",
            {"all": [{"field": "sentiment", "op": "eq", "value": "negative"}]},
            [{"add_tags": ["angry"]}, {"webhook": {"url": f"{receiver.url}/switchboard"}}],
        )
        run_command(
            store,
            Automation,
            Automation.stream_id(rule.name),
            lambda a: a.configure(rule, "t", datetime.now(UTC)),
            create=True,
        )
        first = await asyncio.to_thread(_classified_cases, store, 30)
        proc = start()
        await eventually(lambda: _async(len(receiver.calls())), lambda n: n >= 5, timeout=60)
        proc.send_signal(signal.SIGKILL)  # mid-stream: no goodbye, no commit of what was in hand
        proc.wait(10)
        assert len({r.body for r in receiver.calls()}) < 30  # it was killed with calls still to make
        second = await asyncio.to_thread(_classified_cases, store, 10)  # while it is down
        start()
        expected = {str(e) for e in first + second}

        def delivered_events() -> set[str]:
            return {json.loads(r.body)["event"]["case_id"] for r in receiver.calls()}

        await eventually(lambda: _async(delivered_events()), lambda got: got == expected, timeout=60)
        # Every call is signed over its exact body; each event has one delivery id (a repeat after the
        # kill, if the receiver's 2xx was not recorded in time, carries the same id: dedupe by it).
        per_event: dict[str, set[str]] = {}
        for r in receiver.calls():
            assert r.headers["x-switchboard-signature"] == (
                "sha256=" + hmac.new(secret.encode(), r.body, hashlib.sha256).hexdigest()
            )
            body = json.loads(r.body)
            assert body["delivery_id"] == r.headers["x-switchboard-delivery"]
            per_event.setdefault(body["event"]["case_id"], set()).add(body["delivery_id"])
        assert all(len(ids) == 1 for ids in per_event.values())
        assert len(per_event) == 40
        # The rule fired once per event: one firing row, one tag event, one automation.Fired each.
        url = database_url
        assert _count(url, "SELECT count(*) FROM sb_automation_firings") == 40
        assert _count(url, "SELECT count(*) FROM sb_webhook_outbox") == 40
        await eventually(
            lambda: _async(_count(url, "SELECT count(*) FROM sb_webhook_outbox WHERE state = 'delivered'")),
            lambda n: n == 40,
        )
        tagged = [sum(1 for e in store.load(c) if e.NAME == "case.Tagged") for c in first + second]
        assert tagged == [1] * 40
    finally:
        processes.stop_all()
        await receiver.stop()


async def _async(value):
    return value
