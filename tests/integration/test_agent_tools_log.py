"""Agent tools over the real event store: the CSAT survey follower (once per resolution, only for
queues with csat on, never for stale resolutions) and the read models of canned responses, attribute
definitions, custom attributes and CSAT, which a rebuild reproduces exactly (erasure included)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from events.case import CsatRequested, ReplyRequested
from events.interactions import Identity, Interaction
from projections.runner import ProjectionRunner
from services.core.commands import append_new, erase_customer, run_case, run_command
from services.domain.case import Case
from services.domain.config import AttributeDefinition, CannedResponse, Queue
from services.domain.csat import SURVEY_QUESTION, csat_key, verify_token
from services.domain.customer import Customer
from services.domain.routing import case_for, thread_key_of
from services.platform.follower import Follower
from services.timer.csat import csat_follower, survey_handler

pytestmark = pytest.mark.integration

PUBLIC = "https://sb.example.com"


def _now() -> datetime:
    return datetime.now(UTC)


def _queue(store, name: str, csat: bool) -> None:
    run_command(
        store, Queue, Queue.stream_id(name), lambda q: q.configure(name, "test", _now(), csat=csat), create=True
    )


def _conversation(store, channel: str = "email", text: str = "hello") -> tuple[Customer, Case]:
    """A customer whose message opened a case on `channel` (queue named after it), stored."""
    at = _now()
    customer = Customer.register(uuid.uuid4(), at)
    message = Interaction(
        id=uuid.uuid4(),
        channel=channel,
        direction="inbound",
        occurred_at=at,
        identities=[Identity("email", f"{uuid.uuid4().hex[:8]}@example.org")],
        text=text,
    )
    key = thread_key_of(customer, message)
    case = case_for(customer, message, key, None).opened
    assert case is not None
    customer.record(message, case.id, key)
    with store.transaction() as tx:
        tx.append(customer.collect() + case.collect())
    return customer, case


def _surveys(store, case_id) -> list:
    return [e for e in store.load(case_id) if isinstance(e, ReplyRequested | CsatRequested)]


def test_a_resolved_case_of_a_csat_queue_gets_one_survey_per_resolution(store, settings):
    _queue(store, "email", csat=True)
    _queue(store, "sms", csat=False)
    _, surveyed = _conversation(store, "email")
    _, unsurveyed = _conversation(store, "sms")
    _, reopened = _conversation(store, "email")
    for case in (surveyed, unsurveyed, reopened):
        run_case(store, case.id, lambda c: c.resolve("agent", _now()))
    run_case(store, reopened.id, lambda c: c.reopen("agent", _now()))  # open again before the timer saw it

    follower = csat_follower(store, settings.master_key_bytes, PUBLIC)
    follower.catch_up()
    reply, requested = _surveys(store, surveyed.id)
    assert isinstance(reply, ReplyRequested) and isinstance(requested, CsatRequested)
    assert reply.by == "csat" and reply.channel == "email" and reply.text.startswith(SURVEY_QUESTION)
    assert requested.reply_id == reply.reply_id
    resolved_at = next(e.occurred_at for e in store.load(surveyed.id) if e.NAME == "case.Resolved")
    assert requested.until == resolved_at + timedelta(days=7)
    # The links carry a token for this case, valid until the survey closes.
    link = next(line for line in reply.text.splitlines() if line.startswith("4 - "))[4:]
    assert link.startswith(f"{PUBLIC}/csat/") and link.endswith("?score=4")
    token = link.removeprefix(f"{PUBLIC}/csat/").split("?")[0]
    assert verify_token(csat_key(settings.master_key_bytes), token, _now()) == surveyed.id
    assert _surveys(store, unsurveyed.id) == [] and _surveys(store, reopened.id) == []

    # Run again from the start (a second timer, a lost position): nothing is sent twice.
    again = Follower(store, "csat-survey-again", survey_handler(settings.master_key_bytes, PUBLIC, _now))
    again.catch_up()
    assert len(_surveys(store, surveyed.id)) == 2

    # Resolved again after a reopening: a new survey goes out.
    run_case(store, reopened.id, lambda c: c.resolve("agent", _now()))
    follower.catch_up()
    assert [type(e) for e in _surveys(store, reopened.id)] == [ReplyRequested, CsatRequested]


def test_resolved_twice_in_one_batch_and_stale_resolutions(store, settings):
    _queue(store, "sms", csat=True)
    _, case = _conversation(store, "sms")
    for step in ("resolve", "reopen", "resolve"):
        run_case(store, case.id, lambda c, step=step: getattr(c, step)("agent", _now()))
    # Without a public URL, and on SMS: the question alone.
    csat_follower(store, settings.master_key_bytes, None).catch_up()
    reply, _requested = _surveys(store, case.id)
    assert reply.text == SURVEY_QUESTION

    _, old = _conversation(store, "sms")
    run_case(store, old.id, lambda c: c.resolve("agent", _now()))
    later = _now() + timedelta(days=2)  # the follower reads it two days late: stale, nothing sent
    Follower(store, "csat-late", survey_handler(settings.master_key_bytes, None, lambda: later)).catch_up()
    assert _surveys(store, old.id) == []


TABLES = {
    "proj_cases": "id",
    "proj_customers": "id",
    "proj_canned_responses": "id",
    "proj_attribute_definitions": "key",
}


def _dump(database_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        # Cases with their attributes last, whatever columns other read-model work added after them.
        return {
            t: conn.execute(
                f"SELECT *, attributes FROM {t} ORDER BY {k}"
                if t == "proj_cases"
                else f"SELECT * FROM {t} ORDER BY {k}"
            ).fetchall()
            for t, k in TABLES.items()
        }


def test_rebuild_reproduces_canned_definitions_attributes_and_csat(store, database_url):
    live = ProjectionRunner(store, batch_size=3)
    for key, type_, applies_to, options in (
        ("plan", "list", "customer", ["free", "pro"]),
        ("seats", "number", "customer", []),
        ("order", "text", "case", []),
    ):
        run_command(
            store,
            AttributeDefinition,
            AttributeDefinition.stream_id(key),
            lambda d, k=key, t=type_, a=applies_to, o=options: d.define(k, t, a, o, "boss", _now()),
            create=True,
        )
    kept = CannedResponse.create(uuid.uuid4(), "hi", "Hi {{customer.name}}", "boss", _now())
    gone = CannedResponse.create(uuid.uuid4(), "bye", "Bye", "boss", _now())
    append_new(store, kept)
    append_new(store, gone)
    run_command(store, CannedResponse, gone.id, lambda c: c.delete("boss", _now()))

    people = [_conversation(store) for _ in range(3)]
    for n, (customer, case) in enumerate(people):
        run_command(store, Customer, customer.id, lambda c: c.set_attributes({"plan": "pro", "seats": 3}, "a", _now()))
        run_command(store, Customer, customer.id, lambda c: c.set_attributes({"seats": None}, "a", _now()))
        run_case(store, case.id, lambda c, n=n: c.set_attributes({"order": f"A-{n}"}, "a", _now()))
        run_case(store, case.id, lambda c, n=n: c.record_csat(n + 3, _now(), "thanks", "api"))
        live.catch_up()
    erase_customer(store, people[0][0].id, "test", _now())
    live.catch_up()

    before = _dump(database_url)
    customers = {row[0]: row for row in before["proj_customers"]}
    cases = {row[0]: row for row in before["proj_cases"]}
    assert customers[people[1][0].id][-1] == {"plan": "pro"}
    assert customers[people[0][0].id][-1] == {}  # erased: personal, gone
    assert cases[people[2][1].id][-1] == {"order": "A-2"} and cases[people[2][1].id][16] == 5
    assert cases[people[0][1].id][-1] == {}
    assert [row[1] for row in before["proj_canned_responses"]] == ["hi"]
    assert {row[0]: row[3] for row in before["proj_attribute_definitions"]} == {
        "order": [],
        "plan": ["free", "pro"],
        "seats": [],
    }

    ProjectionRunner(store).rebuild()
    assert _dump(database_url) == before
