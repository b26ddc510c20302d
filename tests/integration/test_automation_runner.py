"""The automation role's rule runner on a real event store: rules fire once per event (also when a
batch is handled twice, as a stale second process would), what they do is in the log by
"automation:NAME", a rule never retriggers itself, a chain of rules stops at its depth, rules apply
from their save on, and webhooks leave through the outbox signed, retried and dead-lettered."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime

import pytest

from events.automation import AutomationFired
from events.case import CaseAssigned, CasePrioritized, CaseTagged, CaseTransferred, ReplyRequested
from services.automation.runner import Runner, automation_follower
from services.automation.webhooks import WebhookSender, dead_letters, retry_dead
from services.core.commands import append_new, load_case, run_case, run_command
from services.domain.automation import Automation, parse_rule
from services.domain.case import Case, Classifications
from services.domain.config import CannedResponse
from services.routing.router import router_follower
from tests.fixtures.providers import FakeHTTPProvider, eventually
from tests.fixtures.routing import configure_queue, create_agent

pytestmark = pytest.mark.integration

ANGRY = {
    "all": [
        {"field": "sentiment", "op": "eq", "value": "negative"},
        {"field": "intent", "op": "eq", "value": "complaint"},
    ]
}


def now() -> datetime:
    return datetime.now(UTC)


def save_rule(store, name: str, on: str, condition, then, enabled: bool = True) -> int:
    rule = parse_rule(name, on, condition, then, enabled=enabled)
    return run_command(
        store, Automation, Automation.stream_id(name), lambda a: a.configure(rule, "supervisor", now()), create=True
    ).position


def open_case(store, channel: str = "whatsapp") -> tuple[uuid.UUID, uuid.UUID]:
    interaction = uuid.uuid4()
    case = Case.open(uuid.uuid4(), uuid.uuid4(), channel, None, now(), interaction_id=interaction)
    append_new(store, case)
    return case.id, interaction


def classify(store, case_id, interaction, sentiment: str, intent: str, language: str = "es") -> int:
    """What the classifier role records: a classification on the case's classification stream."""
    case = load_case(store, case_id)
    return run_command(
        store,
        Classifications,
        Classifications.stream_of(case_id),
        lambda c: c.classify(case_id, case.owner_id, interaction, language, sentiment, intent, 0.9, now()),
        create=True,
    ).position


def run(store) -> int:
    return automation_follower(store, now).catch_up()


def events_of(store, case_id, cls=None):
    return [e for e in store.load(case_id) if cls is None or type(e) is cls]


def firings(store) -> list[AutomationFired]:
    out, position = [], 0
    while items := store.read(position, 1000):
        out += [event for _, event, _ in items if type(event) is AutomationFired]
        position = items[-1][0]
    return out


def test_a_rule_moves_an_angry_complaint_once(store) -> None:
    save_rule(store, "angry", "case.Classified", ANGRY, [{"set_queue": "complaints"}, {"set_priority": "high"}])
    angry, i1 = open_case(store)
    calm, i2 = open_case(store)
    classify(store, angry, i1, "negative", "complaint")
    classify(store, calm, i2, "positive", "complaint")
    run(store)
    case = Case.replay(angry, events_of(store, angry))
    assert (case.queue, case.priority) == ("complaints", "high")
    assert [e.by for e in events_of(store, angry, CaseTransferred)] == ["automation:angry"]
    assert [e.by for e in events_of(store, angry, CasePrioritized)] == ["automation:angry"]
    assert Case.replay(calm, events_of(store, calm)).queue == "whatsapp"
    (fired,) = firings(store)
    assert (fired.rule, fired.case_id, fired.actions, fired.depth) == ("angry", angry, ["set_queue", "set_priority"], 0)
    # Another process of the role, later: from the stored position, nothing again.
    assert automation_follower(store, now).catch_up() >= 0
    assert len(firings(store)) == 1
    assert len(events_of(store, angry, CaseTransferred)) == 1


def test_a_batch_handled_twice_fires_each_rule_once(store) -> None:
    """Two processes handling the same events (a stale one that lost its lock, or a crash between
    its work and its position): the firings table lets one of them fire."""
    save_rule(store, "angry", "case.Classified", ANGRY, [{"add_tags": ["angry"]}])
    case_id, interaction = open_case(store)
    classify(store, case_id, interaction, "negative", "complaint")
    items = store.read(0, 1000)
    for _ in range(2):
        with store.transaction() as tx:
            Runner(now).handle(tx, items)
    assert [e.tags for e in events_of(store, case_id, CaseTagged)] == [["angry"]]
    assert len(firings(store)) == 1


def test_a_crash_before_commit_leaves_nothing_and_the_rerun_fires_once(store) -> None:
    save_rule(store, "angry", "case.Classified", ANGRY, [{"add_tags": ["angry"]}, {"webhook": {"url": "http://x/y"}}])
    case_id, interaction = open_case(store)
    classify(store, case_id, interaction, "negative", "complaint")

    class Crash(Exception):
        pass

    with pytest.raises(Crash), store.transaction() as tx:
        Runner(now).handle(tx, store.read(0, 1000))
        raise Crash  # the process dies before the transaction commits
    assert events_of(store, case_id, CaseTagged) == [] and firings(store) == []
    with store.datastore.transaction() as curs:
        assert curs.execute("SELECT count(*) AS n FROM sb_webhook_outbox").fetchone()["n"] == 0
    run(store)
    assert len(events_of(store, case_id, CaseTagged)) == 1 and len(firings(store)) == 1
    with store.datastore.transaction() as curs:
        assert curs.execute("SELECT count(*) AS n FROM sb_webhook_outbox").fetchone()["n"] == 1


def test_what_a_rule_did_does_not_fire_it_again(store) -> None:
    # Without the guard this rule would tag forever: its own tagging is a case.Tagged.
    save_rule(store, "seen", "case.Tagged", None, [{"add_tags": ["seen"]}, {"set_priority": "high"}])
    case_id, _ = open_case(store)
    run_case(store, case_id, lambda c: c.tag(["vip"], "agent-1", now()))
    run(store)
    tagged = events_of(store, case_id, CaseTagged)
    assert [(e.tags, e.by) for e in tagged] == [(["vip"], "agent-1"), (["seen"], "automation:seen")]
    assert len(firings(store)) == 1


def test_a_chain_of_rules_stops_at_its_depth(store) -> None:
    from services.domain.automation import MAX_CHAIN  # noqa: PLC0415

    assert MAX_CHAIN == 3
    configure_queue(store, "second", "manual")
    # classified → r1 tags → r2 transfers → r3 prioritizes → r4 would tag again: one too deep.
    save_rule(store, "r1", "case.Classified", None, [{"add_tags": ["r1"]}])
    save_rule(store, "r2", "case.Tagged", None, [{"set_queue": "second"}])
    save_rule(store, "r3", "case.Transferred", None, [{"set_priority": "urgent"}])
    save_rule(store, "r4", "case.Prioritized", None, [{"add_tags": ["r4"]}])
    case_id, interaction = open_case(store)
    classify(store, case_id, interaction, "neutral", "question")
    run(store)
    case = Case.replay(case_id, events_of(store, case_id))
    assert (case.tags, case.queue, case.priority) == (["r1"], "second", "urgent")
    assert {(f.rule, f.depth) for f in firings(store)} == {("r1", 0), ("r2", 1), ("r3", 2)}
    # a person's change starts a fresh chain: r4 fires on it
    run_case(store, case_id, lambda c: c.prioritize("low", "agent-1", now()))
    run(store)
    assert Case.replay(case_id, events_of(store, case_id)).tags == ["r1", "r4"]


def test_a_rule_applies_from_its_save_and_not_while_disabled(store) -> None:
    before, i0 = open_case(store)
    classify(store, before, i0, "negative", "complaint")
    save_rule(store, "angry", "case.Classified", ANGRY, [{"add_tags": ["angry"]}])
    during, i1 = open_case(store)
    classify(store, during, i1, "negative", "complaint")
    save_rule(store, "angry", "case.Classified", ANGRY, [{"add_tags": ["angry"]}], enabled=False)
    after, i2 = open_case(store)
    classify(store, after, i2, "negative", "complaint")
    run(store)
    assert [len(events_of(store, c, CaseTagged)) for c in (before, during, after)] == [0, 1, 0]


def test_case_fields_in_the_condition(store) -> None:
    save_rule(
        store,
        "vip-email",
        "case.Classified",
        {
            "all": [
                {"field": "case.channel", "op": "eq", "value": "email"},
                {"field": "case.tags", "op": "contains", "value": "vip"},
                {"field": "case.sentiment", "op": "eq", "value": "negative"},
                {"field": "confidence", "op": "gte", "value": 0.5},
            ]
        },
        [{"set_priority": "urgent"}],
    )
    vip, i1 = open_case(store, "email")
    plain, i2 = open_case(store, "email")
    chat, i3 = open_case(store, "chat")
    for case_id in (vip, chat):
        run_case(store, case_id, lambda c: c.tag(["vip"], "agent-1", now()))
    for case_id, interaction in ((vip, i1), (plain, i2), (chat, i3)):
        classify(store, case_id, interaction, "negative", "complaint")
    run(store)
    assert [Case.replay(c, events_of(store, c)).priority for c in (vip, plain, chat)] == ["urgent", "normal", "normal"]


def test_assign_team_and_a_canned_reply(store) -> None:
    agent = create_agent(store, "ana@example.com", teams=["complaints-team"], capacity=3)
    create_agent(store, "bob@example.com", teams=["other"], capacity=3)
    canned = CannedResponse.create(uuid.uuid4(), "sorry", "Sentimos mucho las molestias (caso {{case.id}})", "s", now())
    append_new(store, canned)
    router_follower(store).catch_up()  # routing's view of the agents: who is online, in which team
    save_rule(
        store,
        "angry",
        "case.Classified",
        ANGRY,
        [{"assign_team": "complaints-team"}, {"reply": {"canned": str(canned.id)}}],
    )
    case_id, interaction = open_case(store)
    classify(store, case_id, interaction, "negative", "complaint")
    run(store)
    (assigned,) = events_of(store, case_id, CaseAssigned)
    assert (assigned.assignee, assigned.by) == (agent, "automation:angry")
    (reply,) = events_of(store, case_id, ReplyRequested)
    assert reply.text == f"Sentimos mucho las molestias (caso {case_id})" and reply.by == "automation:angry"


def _receiver(fail_first: int = 0, status: int = 500) -> FakeHTTPProvider:
    calls = {"n": 0}

    def answer(request):
        calls["n"] += 1
        return (status, {"no": True}) if calls["n"] <= fail_first else (200, {"ok": True})

    return FakeHTTPProvider(default=answer)


async def test_webhooks_are_signed_retried_and_dead_lettered(store) -> None:
    ok, flaky, down = await _receiver().start(), await _receiver(fail_first=2).start(), await _receiver(10**6).start()
    try:
        save_rule(
            store,
            "hooks",
            "case.Classified",
            ANGRY,
            [{"webhook": {"url": f"{r.url}/hook"}} for r in (ok, flaky, down)],
        )
        case_id, interaction = open_case(store)
        classify(store, case_id, interaction, "negative", "complaint")
        await asyncio.to_thread(run, store)
        secret = "s3cret"
        sender = WebhookSender(store, secret, retry_base=0.01, max_attempts=3, timeout=5)

        async def sent():
            await asyncio.to_thread(sender.run_once)
            with store.datastore.transaction() as curs:
                return {
                    r["url"]: (r["state"], r["attempts"])
                    for r in curs.execute("SELECT url, state, attempts FROM sb_webhook_outbox").fetchall()
                }

        states = await eventually(sent, lambda s: all(state != "pending" for state, _ in s.values()), timeout=30)
        assert states == {
            f"{ok.url}/hook": ("delivered", 1),
            f"{flaky.url}/hook": ("delivered", 3),
            f"{down.url}/hook": ("dead", 3),
        }
        (call,) = ok.requests
        assert call.headers["x-switchboard-signature"] == (
            "sha256=" + hmac.new(secret.encode(), call.body, hashlib.sha256).hexdigest()
        )
        body = json.loads(call.body)
        assert body["delivery_id"] == call.headers["x-switchboard-delivery"]
        assert call.headers["x-switchboard-event"] == "case.Classified"
        assert (body["rule"], body["event"]["type"], body["event"]["case_id"]) == (
            "hooks",
            "case.Classified",
            str(case_id),
        )
        assert body["event"]["fields"]["sentiment"] == "negative"
        assert body["case"]["id"] == str(case_id)
        # every attempt of one delivery carries the same id and the same signed body
        assert len({r.headers["x-switchboard-delivery"] for r in flaky.requests}) == 1
        assert len({r.body for r in flaky.requests}) == 1
        with store.datastore.transaction() as curs:
            (dead,) = dead_letters(curs)
        assert dead["url"] == f"{down.url}/hook" and dead["last_error"] == "HTTP 500"
        # fixed on the receiver's side, then retried from the dead-letter list
        down.default = lambda request: (204, None)
        with store.datastore.transaction(commit=True) as curs:
            assert retry_dead(curs, [dead["delivery_id"]]) == 1
        states = await eventually(sent, lambda s: s[f"{down.url}/hook"][0] == "delivered", timeout=30)
        with store.datastore.transaction() as curs:
            assert dead_letters(curs) == []
    finally:
        for r in (ok, flaky, down):
            await r.stop()


def test_customer_fields_in_the_condition_and_a_customer_event(store) -> None:
    """`customer.FIELD` reads the customer's profile (as segments do); a rule on the customer's own
    message (customer.InteractionRecorded) acts on the case the message joined."""
    from projections.runner import ProjectionRunner  # noqa: PLC0415
    from services.core.processor import CoreProcessor  # noqa: PLC0415

    def message(phone: str, text: str, n: int):
        return _core_message(phone, text)

    save_rule(
        store,
        "regulars",
        "customer.InteractionRecorded",
        {
            "all": [
                {"field": "text", "op": "matches", "value": "(?i)refund"},
                {"field": "customer.channels", "op": "contains", "value": "sms"},
                {"field": "customer.interaction_count", "op": "gte", "value": 2},
            ]
        },
        [{"add_tags": ["refund-regular"]}],
    )
    processor = CoreProcessor(store)
    processor.process([(message("+44 7700 900123", "hello", 0), 1)])
    ProjectionRunner(store).catch_up()  # the profile knows one interaction: the rule's count is not met
    processor.process([(message("+44 7700 900123", "I want a REFUND", 1), 2)])
    run(store)
    assert firings(store) == []
    ProjectionRunner(store).catch_up()
    processor.process([(message("+44 7700 900123", "refund, please", 2), 3)])
    run(store)
    (fired,) = firings(store)
    assert fired.event_type == "customer.InteractionRecorded" and fired.actions == ["add_tags"]
    assert [e.tags for e in events_of(store, fired.case_id, CaseTagged)] == [["refund-regular"]]


def test_the_rules_read_model_rebuilds_to_what_the_live_projector_built(store, database_url) -> None:
    import psycopg  # noqa: PLC0415

    from projections.automations import AutomationsProjection  # noqa: PLC0415
    from projections.rebuild import Rebuild  # noqa: PLC0415
    from projections.runner import ProjectionRunner  # noqa: PLC0415

    save_rule(store, "angry", "case.Classified", ANGRY, [{"add_tags": ["angry"]}])
    save_rule(store, "quiet", "case.Classified", None, [{"set_priority": "low"}], enabled=False)
    live = ProjectionRunner(store, projections=[AutomationsProjection()], batch_size=2)
    live.catch_up()
    for sentiment in ("negative", "negative", "positive"):
        case_id, interaction = open_case(store)
        classify(store, case_id, interaction, sentiment, "complaint")
    run(store)
    save_rule(store, "angry", "case.Classified", ANGRY, [{"add_tags": ["angry", "again"]}])
    live.catch_up()

    def dump() -> list[tuple]:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT * FROM proj_automations ORDER BY name").fetchall()

    before = dump()
    assert [(r[0], r[1], r[5], r[9]) for r in before] == [("angry", 2, True, 2), ("quiet", 1, False, 0)]
    Rebuild(ProjectionRunner(store, projections=[AutomationsProjection()]), folds={}).run()
    assert dump() == before


def test_a_rule_does_not_answer_its_own_reply(store) -> None:
    """A rule on every message of a customer that replies: its reply comes back through the relay
    and the core as an outbound message (and as sent, delivered), events no `by` names; the reply's
    id carries the chain, so the rule does not answer its own answer."""
    from events.interactions import Identity, Interaction, interaction_id  # noqa: PLC0415
    from services.core.processor import CoreProcessor  # noqa: PLC0415

    canned = CannedResponse.create(uuid.uuid4(), "ack", "We got your message", "s", now())
    append_new(store, canned)
    save_rule(store, "echo", "customer.InteractionRecorded", None, [{"reply": {"canned": str(canned.id)}}])
    processor = CoreProcessor(store)
    provider_id = uuid.uuid4().hex
    inbound = Interaction(
        id=interaction_id("sms", provider_id),
        channel="sms",
        direction="inbound",
        occurred_at=now(),
        identities=[Identity("phone", "+44 7700 900777")],
        text="hello?",
        provider_message_id=provider_id,
    )
    processor.process([(inbound, 1)])
    run(store)
    (fired,) = firings(store)
    (reply,) = events_of(store, fired.case_id, ReplyRequested)
    # what the relay's sending records: the outbound message of that reply, then it was sent
    outbound = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="outbound",
        occurred_at=now(),
        text=reply.text,
        case_id=fired.case_id,
        reply_id=reply.reply_id,
        provider_message_id="SM-echo-1",
    )
    processor.process([(outbound, 2)])
    run_case(store, fired.case_id, lambda c: c.reply_sent(reply.reply_id, "SM-echo-1", now()))
    run(store)
    assert len(firings(store)) == 1
    assert len(events_of(store, fired.case_id, ReplyRequested)) == 1


def _core_message(phone: str, text: str):
    from events.interactions import Identity, Interaction, interaction_id  # noqa: PLC0415

    provider_id = uuid.uuid4().hex
    return Interaction(
        id=interaction_id("sms", provider_id),
        channel="sms",
        direction="inbound",
        occurred_at=now(),
        identities=[Identity("phone", phone)],
        text=text,
        provider_message_id=provider_id,
    )


def _core_order(email: str, reference: str, amount: str):
    from decimal import Decimal  # noqa: PLC0415

    from events.interactions import Identity  # noqa: PLC0415
    from services.domain.activities import as_interaction  # noqa: PLC0415

    return as_interaction(Identity("email", email), "order.placed", reference, now(), "shop", Decimal(amount), "EUR")


def _fired_customers(store) -> list[tuple[uuid.UUID, str]]:
    """(customer of the triggering event, rule) of every firing, in log order."""
    by_id, position = {}, 0
    while items := store.read(position, 1000):
        by_id.update({event.id: event for _, event, _ in items})
        position = items[-1][0]
    return [(by_id[f.event_id].customer_id, f.rule) for f in firings(store)]


def test_customer_activities_and_consent_in_a_rule_read_the_log_up_to_the_event(store) -> None:
    """`customer.activities.*` and `customer.consent.*` as segments mean them, read from the log: the
    second order fires the rule although no projector has run (no read model holds it), the first
    does not, and a customer who sent STOP is the one whose consent is false."""
    from services.core.processor import CoreProcessor  # noqa: PLC0415

    save_rule(
        store,
        "second-order",
        "customer.ActivityRecorded",
        {
            "all": [
                {"field": "customer.activities.order.placed.count", "op": "gte", "value": 2},
                {"field": "customer.activities.amount.sum", "op": "gt", "value": 20},
            ]
        },
        [{"webhook": {"url": "http://x/y"}}],
    )
    save_rule(
        store,
        "opted-out",
        "customer.InteractionRecorded",
        {"all": [{"field": "customer.consent.marketing.sms", "op": "eq", "value": False}]},
        [{"add_tags": ["opted-out"]}],
    )
    processor = CoreProcessor(store)
    processor.process([(_core_order("ana@example.com", "SO-1", "15"), 1)])
    processor.process([(_core_order("bo@example.com", "SO-2", "99"), 2)])
    processor.process([(_core_order("ana@example.com", "SO-3", "10"), 3)])
    processor.process([(_core_message("+34600000001", "hola"), 4)])
    processor.process([(_core_message("+34600000002", "hola"), 5)])
    processor.process([(_core_message("+34600000002", "STOP"), 6)])
    processor.process([(_core_message("+34600000002", "una pregunta"), 7)])
    processor.process([(_core_message("+34600000001", "otra pregunta"), 8)])
    run(store)
    orders: dict[uuid.UUID, int] = {}
    opted_out: set[uuid.UUID] = set()
    for _, event, _ in store.read(0, 1000):
        if event.NAME == "customer.ActivityRecorded":
            orders[event.customer_id] = orders.get(event.customer_id, 0) + 1
        elif event.NAME == "customer.ConsentChanged" and not event.granted:
            opted_out.add(event.customer_id)
    (ana,) = [c for c, n in orders.items() if n == 2]
    assert len(orders) == 2 and len(opted_out) == 1
    fired = _fired_customers(store)
    assert [c for c, rule in fired if rule == "second-order"] == [ana]  # her second order, once
    stopped = [c for c, rule in fired if rule == "opted-out"]
    assert stopped and set(stopped) == opted_out  # the STOP customer's messages after it, no one else's
    # Nothing ran a projector: the values came from the log, not from a read model.
    with store.datastore.transaction() as curs:
        assert curs.execute(
            "SELECT to_regclass('proj_activity_totals') IS NULL OR "
            "NOT EXISTS (SELECT 1 FROM proj_activity_totals) AS empty"
        ).fetchone()["empty"]


def test_a_rule_an_older_release_saved_with_a_pattern_now_refused_is_left_out_not_fatal(store) -> None:
    """`\\b` ran on RE2 before patterns had to read alike in PostgreSQL; such a stored rule no longer
    parses: the runner leaves it out and the other rules go on firing."""
    import msgspec  # noqa: PLC0415

    save_rule(store, "angry", "case.Classified", ANGRY, [{"add_tags": ["angry"]}])
    run(store)
    stale = json.loads(msgspec.json.encode(events_of(store, Automation.stream_id("angry"))[-1]))
    stale.update(name="old", condition={"all": [{"field": "sentiment", "op": "matches", "value": r"\bx\b"}]})
    with store.datastore.transaction(commit=True) as curs:
        curs.execute(
            "INSERT INTO sb_automation_rules (name, version, rule) VALUES ('old', 1, %s)", (json.dumps(stale),)
        )
    case_id, interaction = open_case(store)
    classify(store, case_id, interaction, "negative", "complaint")
    run(store)
    assert [f.rule for f in firings(store)] == ["angry"]
