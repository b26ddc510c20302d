"""Retention and churn per period (services/domain/metrics.py): the rates, empty periods, whether the
next period is over, and monthly periods (for the case series too)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from services.domain.metrics import bucket_count, lifetime_value, next_period, period_start, retention, series

pytestmark = pytest.mark.unit


def test_retention_and_churn_of_each_period_empty_ones_included():
    counts = {date(2026, 5, 4): (4, 3), date(2026, 5, 18): (2, 0)}
    periods = retention(counts, date(2026, 5, 6), date(2026, 5, 18), "week", today=date(2026, 5, 26))
    assert [(p.start, p.end, p.active, p.retained, p.churned) for p in periods] == [
        (date(2026, 5, 4), date(2026, 5, 11), 4, 3, 1),
        (date(2026, 5, 11), date(2026, 5, 18), 0, 0, 0),
        (date(2026, 5, 18), date(2026, 5, 25), 2, 0, 2),
    ]
    assert [(p.retention_rate, p.churn_rate) for p in periods] == [(0.75, 0.25), (None, None), (0.0, 1.0)]
    # The week after 18 May ends on 1 June: on 26 May its churn may still turn into retention.
    assert [p.complete for p in periods] == [True, True, False]


def test_months_start_on_the_first_and_roll_over_the_year():
    assert period_start(date(2026, 12, 31), "month") == date(2026, 12, 1)
    assert next_period(date(2026, 12, 1), "month") == date(2027, 1, 1)
    assert next_period(date(2026, 1, 1), "month") == date(2026, 2, 1)
    assert period_start(date(2026, 5, 10), "week") == date(2026, 5, 4)
    assert next_period(date(2026, 5, 4), "day") == date(2026, 5, 5)
    start, end = datetime(2026, 11, 15, tzinfo=UTC), datetime(2027, 2, 2, tzinfo=UTC)
    assert bucket_count(start, end, "month", UTC) == 4
    buckets = series([], start, end, "month", UTC)
    assert [(b.start.date(), b.end.date()) for b in buckets] == [
        (date(2026, 11, 1), date(2026, 12, 1)),
        (date(2026, 12, 1), date(2027, 1, 1)),
        (date(2027, 1, 1), date(2027, 2, 1)),
        (date(2027, 2, 1), date(2027, 3, 1)),
    ]


def test_lifetime_value_per_currency_total_and_average_per_customer():
    values = lifetime_value([("EUR", 3, Decimal("100.00")), ("USD", 1, Decimal("250.5")), ("", 0, Decimal(0))])
    assert [(v.currency, v.customers, v.total, v.average) for v in values] == [
        ("USD", 1, Decimal("250.5"), Decimal("250.50")),
        ("EUR", 3, Decimal("100.00"), Decimal("33.33")),
    ]
