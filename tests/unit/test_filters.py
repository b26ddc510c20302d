"""The filter language of segments and automations: what parses, what is refused and why, and what
a parsed filter says of a record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.domain.filters import (
    SEGMENT_FIELDS,
    Ago,
    Condition,
    FilterError,
    Group,
    automation_fields,
    evaluate,
    parse,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EVENT = automation_fields({"sentiment": "text", "channel": "text", "text": "text", "confidence": "number"})


def holds(raw: dict, record: dict, fields=SEGMENT_FIELDS) -> bool:
    return evaluate(parse(raw, fields), record.get, NOW)


def refused(raw: object, fields=SEGMENT_FIELDS) -> FilterError:
    with pytest.raises(FilterError) as caught:
        parse(raw, fields)
    return caught.value


def test_a_filter_parses_to_a_typed_tree_with_normalised_values():
    tree = parse(
        {
            "all": [
                {"field": "activities.order.placed.count", "op": "gte", "value": 1},
                {
                    "any": [
                        {"field": "last_seen", "op": "after", "value": "P30D"},
                        {"field": "tags", "op": "contains", "value": "vip"},
                    ]
                },
                {"field": "consent.marketing.sms", "op": "eq", "value": True},
                {"field": "first_seen", "op": "before", "value": "2026-01-31"},
            ]
        },
        SEGMENT_FIELDS,
    )
    assert tree.mode == "all"
    assert tree.items[0] == Condition("activities.order.placed.count", "gte", Decimal(1), "number")
    nested = tree.items[1]
    assert isinstance(nested, Group) and nested.mode == "any"
    assert nested.items[0] == Condition("last_seen", "after", Ago(timedelta(days=30)), "datetime")
    assert tree.items[3] == Condition("first_seen", "before", datetime(2026, 1, 31, tzinfo=UTC), "datetime")
    assert [c.field for c in tree.conditions()] == [
        "activities.order.placed.count",
        "last_seen",
        "tags",
        "consent.marketing.sms",
        "first_seen",
    ]


@pytest.mark.parametrize(
    ("raw", "path", "says"),
    [
        ([], "filter", '"all" or "any"'),
        ({"all": [], "any": []}, "filter", '"all" or "any"'),
        ({"all": []}, "filter.all", "non-empty"),
        ({"all": [{"field": "shoe_size", "op": "eq", "value": 1}]}, "filter.all[0].field", "unknown field 'shoe_size'"),
        ({"all": [{"field": "name", "op": "like", "value": "a"}]}, "filter.all[0].op", "unknown op 'like'"),
        (
            {"all": [{"field": "name", "op": "gt", "value": "a"}]},
            "filter.all[0].op",
            "'gt' does not apply to text field 'name'",
        ),
        ({"all": [{"field": "open_cases", "op": "eq", "value": "many"}]}, "filter.all[0].value", "finite number"),
        ({"all": [{"field": "open_cases", "op": "eq", "value": True}]}, "filter.all[0].value", "expected a number"),
        ({"all": [{"field": "open_cases", "op": "eq"}]}, "filter.all[0].value", "missing"),
        ({"all": [{"field": "name", "op": "eq", "value": "a", "extra": 1}]}, "filter.all[0]", "unknown key 'extra'"),
        (
            {"all": [{"field": "last_seen", "op": "after", "value": "yesterday"}]},
            "filter.all[0].value",
            "ISO 8601 duration",
        ),
        ({"all": [{"field": "name", "op": "matches", "value": "(a"}]}, "filter.all[0].value", "not a valid pattern"),
        (
            {"all": [{"field": "name", "op": "matches", "value": r"(a)\1"}]},
            "filter.all[0].value",
            "not a valid pattern",
        ),
        ({"all": [{"field": "name", "op": "in", "value": []}]}, "filter.all[0].value", "'in' takes a list"),
        ({"all": [{"field": "name", "op": "eq", "value": "a\x00b"}]}, "filter.all[0].value", "no NUL"),
        (
            {"all": [{"field": "consent.marketing.sms", "op": "eq", "value": "yes"}]},
            "filter.all[0].value",
            "true or false",
        ),
        (
            {"any": [{"all": [{"any": [{"all": [{"any": [{"field": "name", "op": "eq", "value": "a"}]}]}]}]}]},
            "filter.any[0].all[0].any[0].all[0]",
            "nest at most",
        ),
    ],
)
def test_a_bad_filter_is_refused_naming_the_place(raw, path, says):
    error = refused(raw)
    assert error.path == path
    assert says in error.message
    assert str(error).startswith(f"{path}: ")


def test_too_many_conditions_are_refused():
    error = refused({"all": [{"field": "name", "op": "eq", "value": str(i)} for i in range(51)]})
    assert error.path == "filter.all[50]"


def test_segment_fields_cover_the_contract_and_nothing_else():
    assert SEGMENT_FIELDS("attributes.plan") == "text"
    assert SEGMENT_FIELDS("consent.marketing.whatsapp") == "bool"
    assert SEGMENT_FIELDS("activities.invoice.paid.count") == "number"
    assert SEGMENT_FIELDS("activities.amount.sum") == "number"
    assert SEGMENT_FIELDS("csat_avg") == "number"
    for unknown in (
        "attributes.",
        "attributes.a.b",
        "consent.marketing",
        "activities.count",
        "activities.x y.count",
        "id",
    ):
        assert SEGMENT_FIELDS(unknown) is None, unknown


def test_automation_fields_are_the_event_its_case_and_its_customer():
    assert EVENT("sentiment") == "text"
    assert EVENT("case.priority") == "text"
    assert EVENT("case.tags") == "list"
    assert EVENT("customer.interaction_count") == "number"
    assert EVENT("customer.consent.marketing.sms") == "bool"
    assert EVENT("priority") is None
    assert EVENT("case.unknown") is None


def test_text_ops():
    record = {"name": "Ana García"}
    assert holds({"all": [{"field": "name", "op": "eq", "value": "Ana García"}]}, record)
    assert holds({"all": [{"field": "name", "op": "ne", "value": "Ana"}]}, record)
    assert holds({"all": [{"field": "name", "op": "contains", "value": "garcía"}]}, record)
    assert holds({"all": [{"field": "name", "op": "in", "value": ["Bo", "Ana García"]}]}, record)
    assert holds({"all": [{"field": "name", "op": "matches", "value": "^Ana\\s+G"}]}, record)
    assert not holds({"all": [{"field": "name", "op": "matches", "value": "^García"}]}, record)


def test_numbers_compare_as_numbers_including_attribute_strings():
    record = {"open_cases": 3, "csat_avg": 4.5, "attributes.plan_seats": "12"}
    assert holds({"all": [{"field": "open_cases", "op": "gte", "value": 3}]}, record)
    assert not holds({"all": [{"field": "open_cases", "op": "gt", "value": 3}]}, record)
    assert holds({"all": [{"field": "csat_avg", "op": "lt", "value": "4.6"}]}, record)
    assert holds({"all": [{"field": "open_cases", "op": "in", "value": [1, 3]}]}, record)


def test_moments_and_durations_ago():
    record = {"last_seen": NOW - timedelta(days=3), "first_seen": "2025-06-01T10:00:00+00:00"}
    assert holds({"all": [{"field": "last_seen", "op": "after", "value": "P7D"}]}, record)
    assert not holds({"all": [{"field": "last_seen", "op": "after", "value": "P1D"}]}, record)
    assert holds({"all": [{"field": "first_seen", "op": "before", "value": "2026-01-01"}]}, record)
    assert holds({"all": [{"field": "first_seen", "op": "gte", "value": "2025-06-01T09:00:00Z"}]}, record)


def test_lists_and_booleans():
    record = {"tags": ["vip", "es"], "channels": ["sms"], "consent.marketing.sms": False}
    assert holds({"all": [{"field": "tags", "op": "contains", "value": "vip"}]}, record)
    assert holds({"all": [{"field": "channels", "op": "ne", "value": "email"}]}, record)
    assert holds({"all": [{"field": "consent.marketing.sms", "op": "eq", "value": False}]}, record)
    assert not holds({"all": [{"field": "consent.marketing.sms", "op": "ne", "value": False}]}, record)


def test_a_missing_value_satisfies_only_ne_and_groups_combine():
    assert not holds({"all": [{"field": "name", "op": "eq", "value": "x"}]}, {})
    assert holds({"all": [{"field": "name", "op": "ne", "value": "x"}]}, {})
    raw = {
        "any": [{"field": "name", "op": "eq", "value": "x"}, {"all": [{"field": "open_cases", "op": "gt", "value": 0}]}]
    }
    assert holds(raw, {"name": "y", "open_cases": 1})
    assert not holds(raw, {"name": "y", "open_cases": 0})


def test_automation_conditions_read_the_event_case_and_customer():
    raw = {
        "all": [
            {"field": "sentiment", "op": "eq", "value": "negative"},
            {"field": "case.priority", "op": "ne", "value": "urgent"},
            {"field": "customer.interaction_count", "op": "gte", "value": 2},
        ]
    }
    record = {"sentiment": "negative", "case.priority": "normal", "customer.interaction_count": 5}
    assert holds(raw, record, EVENT)
    assert not holds(raw, {**record, "case.priority": "urgent"}, EVENT)


def test_a_hostile_pattern_matches_in_linear_time():
    # catastrophic for a backtracking engine; RE2 answers at once (no timing asserted: it simply returns)
    raw = {"all": [{"field": "text", "op": "matches", "value": "^(a+)+$"}]}
    assert not holds(raw, {"text": "a" * 5000 + "!"}, EVENT)
