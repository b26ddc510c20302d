"""A segment's filter compiled to SQL (services/segments/members.py), without a database: every field
and op gives a fragment whose values are all bound parameters (none spliced into the text), in the
order of their placeholders; and the Segment record's rules (services/domain/config.py). What the
queries select is proven on real read models in tests/integration/test_segment_members.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from events.config import SegmentDefined
from services.domain.aggregate import DomainError
from services.domain.config import Segment
from services.domain.filters import SEGMENT_FIELDS, FilterError, parse
from services.segments.members import compile_filter, member_ids_query, members_query

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MARK = "zq'x; --"  # a value no SQL fragment contains


def compiled(field: str, op: str, value, policy="implied"):
    tree = parse({"all": [{"field": field, "op": op, "value": value}]}, SEGMENT_FIELDS)
    result = compile_filter(tree, NOW, consent_policy=policy)
    assert result.where.count("%s") == len(result.params), (result.where, result.params)
    return result.where, result.params


@pytest.mark.parametrize(
    ("field", "op", "value", "fragment", "params"),
    [
        ("name", "eq", MARK, "c.name = ANY(%s::text[])", [[MARK]]),
        ("name", "ne", MARK, "NOT COALESCE((c.name = ANY(%s::text[])), false)", [[MARK]]),
        ("name", "in", [MARK, "b"], "c.name = ANY(%s::text[])", [[MARK, "b"]]),
        ("name", "contains", MARK, "strpos(lower(c.name), lower(%s)) > 0", [MARK]),
        ("name", "matches", "^a.*" + "b$", "c.name ~ %s", ["^a.*b$"]),
        ("attributes.plan", "eq", MARK, "(c.custom_attributes ->> %s) = ANY(%s::text[])", ["plan", [MARK]]),
        ("attributes.tier", "eq", "3", "v::numeric END = ANY(%s::numeric[])", [["3"], [Decimal(3)], "tier"]),
        (
            "attributes.tier",
            "in",
            ["3", "x"],
            "FROM (SELECT (c.custom_attributes ->> %s) AS v)",
            [["3", "x"], [Decimal(3)], "tier"],
        ),
        ("attributes.plan", "contains", MARK, "strpos(lower((c.custom_attributes ->> %s)), lower(%s))", ["plan", MARK]),
        ("channels", "contains", MARK, "%s = ANY(c.channels)", [MARK]),
        ("channels", "eq", "sms", "%s = ANY(c.channels)", ["sms"]),
        ("channels", "ne", "sms", "NOT COALESCE((%s = ANY(c.channels)), false)", ["sms"]),
        ("tags", "contains", MARK, "k.customer_id = c.id AND %s = ANY(k.tags)", [MARK]),
        ("first_seen", "before", "2026-01-31", "c.first_seen < %s::timestamptz", [datetime(2026, 1, 31, tzinfo=UTC)]),
        ("first_seen", "after", "2026-01-31", "c.first_seen > %s::timestamptz", [datetime(2026, 1, 31, tzinfo=UTC)]),
        ("last_seen", "gte", "P30D", "c.last_seen >= %s::timestamptz", [NOW - timedelta(days=30)]),
        ("last_seen", "lte", "PT1H", "c.last_seen <= %s::timestamptz", [NOW - timedelta(hours=1)]),
        (
            "last_seen",
            "eq",
            "2026-01-31T10:00:00Z",
            "c.last_seen = %s::timestamptz",
            [datetime(2026, 1, 31, 10, tzinfo=UTC)],
        ),
        ("interaction_count", "gt", 5, "c.interaction_count > %s::numeric", [Decimal(5)]),
        ("interaction_count", "lt", "2.5", "c.interaction_count < %s::numeric", [Decimal("2.5")]),
        ("interaction_count", "in", [1, 2], "c.interaction_count = ANY(%s::numeric[])", [[Decimal(1), Decimal(2)]]),
        ("open_cases", "gte", 1, "k.status <> 'resolved') >= %s::numeric", [Decimal(1)]),
        ("csat_avg", "eq", 4, "avg(k.csat)", [Decimal(4)]),
        ("activities.order.placed.count", "gte", 1, "a.type = %s), 0) >= %s::numeric", ["order.placed", Decimal(1)]),
        ("activities.amount.sum", "gt", 100, "sum(a.amount_sum)", [Decimal(100)]),
        (
            "consent.marketing.sms",
            "eq",
            True,
            "g.purpose = %s AND g.channel = %s), EXISTS (SELECT 1 FROM proj_customer_inbound_channels w",
            ["marketing", "sms", "sms", True],
        ),
    ],
)
def test_each_field_and_op_binds_its_values(field, op, value, fragment, params):
    where, bound = compiled(field, op, value)
    assert fragment in where
    assert bound == params
    assert MARK not in where


def test_explicit_consent_needs_a_recorded_grant():
    where, params = compiled("consent.marketing.email", "eq", False, policy="explicit")
    assert "COALESCE((SELECT g.granted" in where and "inbound" not in where
    assert params == ["marketing", "email", False]


def test_groups_nest_with_and_or_and_the_page_comes_first():
    tree = parse(
        {
            "any": [
                {"field": "name", "op": "eq", "value": "a"},
                {
                    "all": [
                        {"field": "tags", "op": "contains", "value": "t"},
                        {"field": "csat_avg", "op": "lt", "value": 3},
                    ]
                },
            ]
        },
        SEGMENT_FIELDS,
    )
    after = uuid4()
    query, params = member_ids_query(tree, after=after, limit=50, now=NOW)
    assert " OR (EXISTS" in query and " AND (" in query
    assert query.startswith(
        "SELECT c.id FROM proj_customers c WHERE c.merged_into IS NULL AND NOT c.erased AND c.id > %s"
    )
    assert query.endswith("ORDER BY c.id LIMIT %s")
    assert params == [after, ["a"], "t", Decimal(3), 50]
    page, page_params = members_query(tree, after=None, limit=10, now=NOW)
    assert page.count("%s") == len(page_params) and page_params[-1] == 10


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"all": [{"field": "attributes.a.b", "op": "eq", "value": "x"}]}, "filter.all[0].field"),
        ({"all": [{"field": "consent.marketing", "op": "eq", "value": True}]}, "filter.all[0].field"),
        ({"all": [{"field": "tags", "op": "gt", "value": "x"}]}, "filter.all[0].op"),
        ({"all": [{"field": "consent.marketing.sms", "op": "eq", "value": "yes"}]}, "filter.all[0].value"),
        ({"any": [{"field": "name", "op": "eq", "value": "a"}, {"all": []}]}, "filter.any[1].all"),
    ],
)
def test_a_segment_with_a_bad_filter_is_refused_naming_the_path(raw, path):
    with pytest.raises(FilterError) as caught:
        Segment(Segment.stream_id("s")).define("s", raw, "sup", NOW)
    assert caught.value.path == path and str(caught.value).startswith(path + ": ")


def test_a_segment_is_recorded_once_per_definition_under_its_name():
    raw = {"all": [{"field": "tags", "op": "contains", "value": "vip"}]}
    segment = Segment(Segment.stream_id("VIP "))
    assert Segment.stream_id("VIP ") == Segment.stream_id("vip")
    segment.define(" VIP ", raw, "sup", NOW)
    segment.define("VIP", raw, "sup", NOW)  # the same again: nothing new
    [event] = segment.collect()
    assert isinstance(event, SegmentDefined) and (event.name, event.filter, event.by) == ("VIP", raw, "sup")
    segment.define("VIP", {"any": raw["all"]}, "sup2", NOW)
    assert [e.filter for e in segment.collect()] == [{"any": raw["all"]}]
    with pytest.raises(DomainError):
        segment.define("  ", raw, "sup", NOW)
