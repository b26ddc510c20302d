"""The sentiment trend of the metrics: counts per sentiment in total and per local day or week."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from services.domain.metrics import SentimentBucket, SentimentCounts, sentiment_counts, sentiment_series

MADRID = ZoneInfo("Europe/Madrid")


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


MESSAGES = [
    (at(2, 9), "negative"),
    (at(2, 10), "negative"),
    (at(2, 23), "positive"),  # 00:00 on the 3rd in Madrid
    (at(3, 12), "neutral"),
    (at(9, 8), "positive"),  # the next ISO week
    (at(3, 13), "confused"),  # not a sentiment: not counted
]


def test_totals_count_each_sentiment() -> None:
    assert sentiment_counts(MESSAGES) == SentimentCounts(negative=2, neutral=1, positive=2)
    assert sentiment_counts([]) == SentimentCounts()


def test_daily_buckets_follow_local_midnights_and_include_empty_days() -> None:
    days = sentiment_series(MESSAGES, at(1, 23), at(5, 23), "day", MADRID)  # Madrid: the 2nd to the 5th
    assert [(b.start.day, b.negative, b.neutral, b.positive) for b in days] == [
        (2, 2, 0, 0),
        (3, 0, 1, 1),
        (4, 0, 0, 0),
        (5, 0, 0, 0),
    ]
    assert days[0] == SentimentBucket(
        start=datetime(2026, 3, 2, tzinfo=MADRID), end=datetime(2026, 3, 3, tzinfo=MADRID), negative=2
    )


def test_weekly_buckets_start_on_mondays() -> None:
    weeks = sentiment_series(MESSAGES, at(2, 0), at(15, 0), "week", ZoneInfo("UTC"))
    assert [(b.start.day, b.negative, b.neutral, b.positive) for b in weeks] == [(2, 2, 1, 1), (9, 0, 0, 1)]
