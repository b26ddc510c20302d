"""Automation rules as the domain checks them: the shape of `on`, `if` and `then`, errors naming the
path, the fields an event type offers, the loop guard, and the rule as a record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from events.automation import AutomationConfigured, AutomationFired, firing_stream_id
from events.case import CaseClassified
from events.customer import ConsentChanged, InteractionRecorded
from services.domain.automation import (
    MAX_CHAIN,
    Automation,
    Firing,
    RuleError,
    check_url,
    event_case_id,
    event_fields,
    may_fire,
    parse_rule,
    rule_of,
)
from services.domain.filters import FilterError, evaluate

T0 = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
ANGRY = {
    "all": [
        {"field": "sentiment", "op": "eq", "value": "negative"},
        {"field": "intent", "op": "eq", "value": "complaint"},
    ]
}


def test_a_rule_parses_with_its_filter_and_actions() -> None:
    rule = parse_rule(
        "angry",
        "case.Classified",
        ANGRY,
        [{"set_queue": "complaints"}, {"set_priority": "high"}, {"add_tags": ["angry", "es", "angry"]}],
    )
    assert rule.on == "case.Classified"
    assert [(a.kind, a.value) for a in rule.actions] == [
        ("set_queue", "complaints"),
        ("set_priority", "high"),
        ("add_tags", ("angry", "es")),
    ]
    assert rule.condition is not None
    fields = {"sentiment": "negative", "intent": "complaint"}
    assert evaluate(rule.condition, fields.get, T0)
    assert not evaluate(rule.condition, {"sentiment": "positive", "intent": "complaint"}.get, T0)


@pytest.mark.parametrize(
    ("on", "then", "path"),
    [
        ("case.Nonsense", [{"set_queue": "q"}], "on"),
        ("automation.Fired", [{"set_queue": "q"}], "on"),  # never on its own firings
        ("queue.Configured", [{"webhook": {"url": "http://x"}}], "on"),  # nor on configuration
        ("case.Classified", [], "then"),
        ("case.Classified", [{"launch_rocket": 1}], "then[0]"),
        ("case.Classified", [{"set_queue": "q", "set_priority": "high"}], "then[0]"),
        ("case.Classified", [{"set_priority": "whenever"}], "then[0].set_priority"),
        ("case.Classified", [{"add_tags": []}], "then[0].add_tags"),
        ("case.Classified", [{"reply": {"canned": "not-an-id"}}], "then[0].reply.canned"),
        ("case.Classified", [{"reply": {"text": "hi"}}], "then[0].reply"),
        ("case.Classified", [{"webhook": {"url": "ftp://example.com/x"}}], "then[0].webhook.url"),
        ("case.Classified", [{"webhook": {"url": "https://user:pw@example.com/x"}}], "then[0].webhook.url"),
        ("case.Classified", [{"webhook": {"url": "https://exa mple.com/x"}}], "then[0].webhook.url"),
        ("customer.ConsentChanged", [{"set_queue": "q"}], "then[0]"),  # no case to move
    ],
)
def test_a_bad_rule_names_the_path_of_the_error(on: str, then: list, path: str) -> None:
    with pytest.raises(RuleError) as err:
        parse_rule("r", on, None, then)
    assert err.value.path == path
    assert str(err.value).startswith(f"{path}: ")


def test_a_bad_filter_is_a_filter_error_under_if() -> None:
    with pytest.raises(FilterError) as err:
        parse_rule(
            "r", "case.Classified", {"all": [{"field": "mood", "op": "eq", "value": "x"}]}, [{"add_tags": ["a"]}]
        )
    assert err.value.path == "if.all[0].field"
    with pytest.raises(FilterError) as err:
        parse_rule(
            "r", "case.Classified", {"all": [{"field": "sentiment", "op": "gt", "value": 1}]}, [{"add_tags": ["a"]}]
        )
    assert err.value.path == "if.all[0].op"


def test_case_and_customer_fields_resolve_in_a_rule() -> None:
    rule = parse_rule(
        "r",
        "customer.InteractionRecorded",
        {
            "any": [
                {"field": "text", "op": "contains", "value": "refund"},
                {"field": "case.priority", "op": "in", "value": ["high", "urgent"]},
                {"field": "customer.interaction_count", "op": "gt", "value": 10},
            ]
        },
        [{"add_tags": ["refund"]}],
    )
    assert [c.kind for c in rule.condition.conditions()] == ["text", "text", "number"]


def test_names_are_checked() -> None:
    for bad in ("", " ", "x" * 101, "a/b", "dead-letters"):
        with pytest.raises(RuleError) as err:
            parse_rule(bad, "case.Classified", None, [{"add_tags": ["a"]}])
        assert err.value.path == "name"


def test_the_fields_of_an_event_type() -> None:
    assert event_fields(CaseClassified) == {
        "occurred_at": "datetime",
        "case_id": "text",
        "interaction_id": "text",
        "language": "text",
        "sentiment": "text",
        "intent": "text",
        "confidence": "number",
    }
    fields = event_fields(InteractionRecorded)
    assert fields["text"] == "text" and fields["channel"] == "text"
    assert "attachments" not in fields and "meta" not in fields and "customer_id" not in fields
    assert event_fields(ConsentChanged)["granted"] == "bool"


def test_the_case_of_an_event() -> None:
    case_id, customer_id = uuid.uuid4(), uuid.uuid4()
    classified = CaseClassified(
        id=uuid.uuid4(),
        stream_id=case_id,
        version=3,
        occurred_at=T0,
        customer_id=customer_id,
        interaction_id=uuid.uuid4(),
        language="es",
        sentiment="negative",
        intent="complaint",
        confidence=0.9,
    )
    assert event_case_id(classified) == case_id, "recorded on the case's own stream by an earlier release"
    on_its_stream = msgspec.structs.replace(classified, stream_id=uuid.uuid4(), version=1, case_id=case_id)
    assert event_case_id(on_its_stream) == case_id, "recorded on the case's classification stream"
    message = InteractionRecorded(
        id=uuid.uuid4(),
        stream_id=customer_id,
        version=2,
        occurred_at=T0,
        customer_id=customer_id,
        interaction_id=uuid.uuid4(),
        channel="sms",
        direction="inbound",
        kind="message",
        case_id=case_id,
        text="hola",
    )
    assert event_case_id(message) == case_id


def test_the_loop_guard() -> None:
    assert may_fire("a", [])
    assert not may_fire("a", ["a"])  # what a rule did never fires it again
    assert not may_fire("a", ["b", "a"])  # nor what it led to
    assert may_fire("c", ["a", "b"])
    assert not may_fire("z", [f"r{i}" for i in range(MAX_CHAIN)])  # a chain stops at MAX_CHAIN


def test_webhook_urls() -> None:
    assert check_url("http://127.0.0.1:8080/hook", "u") == "http://127.0.0.1:8080/hook"
    assert check_url("https://hooks.example.com/a?b=c", "u")
    for bad in ("", "example.com/x", "javascript:alert(1)", "http://", "https://h:99999/x", 5):
        with pytest.raises(RuleError):
            check_url(bad, "u")


def test_a_rule_is_saved_once_per_change_and_disabled_by_a_save() -> None:
    rule = parse_rule("angry", "case.Classified", ANGRY, [{"set_queue": "complaints"}])
    automation = Automation(Automation.stream_id("angry"))
    automation.configure(rule, "supervisor-1", T0)
    automation.configure(rule, "supervisor-1", T0)  # the same again: nothing
    events = automation.collect()
    assert len(events) == 1 and isinstance(events[0], AutomationConfigured)
    saved = events[0]
    assert (saved.name, saved.on, saved.condition, saved.actions, saved.enabled) == (
        "angry",
        "case.Classified",
        ANGRY,
        [{"set_queue": "complaints"}],
        True,
    )
    assert rule_of(saved).actions == rule.actions
    automation.set_enabled(False, "supervisor-1", T0)
    automation.set_enabled(False, "supervisor-1", T0)
    (disabled,) = automation.collect()
    assert disabled.version == 2 and not disabled.enabled and disabled.actions == saved.actions


def test_a_firing_is_an_event_of_its_own_stream() -> None:
    rule = parse_rule("angry", "case.Classified", None, [{"set_queue": "complaints"}], version=1)
    event_id, case_id, customer_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    event = CaseClassified(
        id=event_id,
        stream_id=case_id,
        version=2,
        occurred_at=T0,
        customer_id=customer_id,
        interaction_id=uuid.uuid4(),
        language="es",
        sentiment="negative",
        intent="complaint",
        confidence=0.9,
    )
    (fired,) = Firing.record(rule, event, case_id, ["set_queue"], 0, T0).collect()
    assert isinstance(fired, AutomationFired)
    assert fired.stream_id == firing_stream_id("angry", event_id) and fired.version == 1
    assert (fired.rule, fired.event_id, fired.case_id, fired.customer_id) == ("angry", event_id, case_id, customer_id)
