"""Contact-centre metrics: what a set of cases says about how the centre answered them.

Pure: the facts of each case come in (from the metrics read model, projections/metrics.py), the
figures go out. The rules written once here:

- volume is the number of cases opened; a case counts in the group of its channel, its queue (now),
  its assignee (now) or each team its assignee was in when the case was assigned to them;
- first response time runs from opening to the first reply, resolution time from opening to the
  last resolution, both counted by `elapsed_seconds` (the one place where business hours will
  come in, see there);
- SLA attainment of a target is met / (met + breached) over the clock runs that ended (a running
  clock counts for neither), and overall the same over every target;
- CSAT is the mean of the latest score of each rated case;
- retention of a period is the share of the customers active in it (who reached us) who are active
  in the next period too; churn the share who are not (`retention`);
- lifetime value is, per currency, the total amount of the customers' business activities, and
  its average over the customers who have any in that currency (`lifetime_value`).

Medians and 90th percentiles interpolate linearly between the two nearest values (PostgreSQL's
percentile_cont, numpy's default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from services.domain.business_hours import Calendar

GroupBy = Literal["agent", "team", "queue", "channel"]
Interval = Literal["day", "week", "month"]
SlaTarget = Literal["first_response", "next_response", "resolution"]

GROUP_BYS: tuple[GroupBy, ...] = get_args(GroupBy)
INTERVALS: tuple[Interval, ...] = get_args(Interval)
SLA_TARGETS: tuple[SlaTarget, ...] = get_args(SlaTarget)


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """One case as the metrics see it."""

    channel: str
    queue: str
    assignee: str | None
    teams: tuple[str, ...]  # the assignee's teams when the case was assigned to them
    sla_policy: str | None
    opened_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    csat: int | None
    sla: tuple[tuple[str, bool], ...] = ()  # (target, met) of each clock run that ended
    # The business hours of the case's SLA policy, when it has them: waits are counted in them.
    calendar: Calendar | None = None


def elapsed_seconds(start: datetime, end: datetime, calendar: Calendar | None) -> float:
    """How long the customer waited, from `start` to `end`: in the business hours of the case's SLA
    policy where it has them (a case opened Friday evening and answered first thing on Monday
    waited minutes, not a weekend), wall-clock time otherwise."""
    if calendar is None:
        return (end - start).total_seconds()
    return calendar.between(start, end).total_seconds()


@dataclass(frozen=True, kw_only=True, slots=True)
class Distribution:
    """Durations in seconds over the cases that have one."""

    count: int
    avg_s: float | None
    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Attainment:
    met: int
    breached: int
    attainment: float | None  # met / (met + breached); None when no clock run ended


@dataclass(frozen=True, kw_only=True, slots=True)
class SlaAttainment:
    first_response: Attainment
    next_response: Attainment
    resolution: Attainment
    overall: Attainment


@dataclass(frozen=True, kw_only=True, slots=True)
class Csat:
    avg: float | None
    count: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    volume: int  # cases opened
    first_response: Distribution
    resolution: Distribution
    sla: SlaAttainment
    csat: Csat


@dataclass(frozen=True, kw_only=True, slots=True)
class Group(Summary):
    key: str | None  # the channel, queue, agent id or team; None: no assignee / no team


@dataclass(frozen=True, kw_only=True, slots=True)
class Bucket(Summary):
    start: datetime  # in the report's time zone
    end: datetime
    groups: list[Group] = field(default_factory=list)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of values sorted ascending, linearly interpolated; None if empty."""
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Iterable[float]) -> Distribution:
    ordered = sorted(values)
    return Distribution(
        count=len(ordered),
        avg_s=_round(sum(ordered) / len(ordered)) if ordered else None,
        median_s=_round(percentile(ordered, 0.5)),
        p90_s=_round(percentile(ordered, 0.9)),
    )


def attainment(met: int, breached: int) -> Attainment:
    total = met + breached
    return Attainment(met=met, breached=breached, attainment=_round(met / total) if total else None)


def summarise(cases: Sequence[CaseFacts]) -> Summary:
    first = [
        elapsed_seconds(c.opened_at, c.first_response_at, c.calendar) for c in cases if c.first_response_at is not None
    ]
    resolution = [elapsed_seconds(c.opened_at, c.resolved_at, c.calendar) for c in cases if c.resolved_at is not None]
    counts = {target: [0, 0] for target in SLA_TARGETS}
    for c in cases:
        for target, met in c.sla:
            if target in counts:
                counts[target][0 if met else 1] += 1
    scores = [c.csat for c in cases if c.csat is not None]
    return Summary(
        volume=len(cases),
        first_response=distribution(first),
        resolution=distribution(resolution),
        sla=SlaAttainment(
            first_response=attainment(*counts["first_response"]),
            next_response=attainment(*counts["next_response"]),
            resolution=attainment(*counts["resolution"]),
            overall=attainment(sum(m for m, _ in counts.values()), sum(b for _, b in counts.values())),
        ),
        csat=Csat(avg=_round(sum(scores) / len(scores)) if scores else None, count=len(scores)),
    )


def keys_of(case: CaseFacts, by: GroupBy) -> tuple[str | None, ...]:
    """The groups a case counts in (a case of an agent in two teams counts in both)."""
    if by == "channel":
        return (case.channel,)
    if by == "queue":
        return (case.queue,)
    if by == "agent":
        return (case.assignee,)
    return case.teams or (None,)


def grouped(cases: Sequence[CaseFacts], by: GroupBy) -> list[Group]:
    """One group per key, largest volume first (then by key; the None group last among equals)."""
    members: dict[str | None, list[CaseFacts]] = {}
    for case in cases:
        for key in keys_of(case, by):
            members.setdefault(key, []).append(case)
    ordered = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0] is None, kv[0] or ""))
    return [_group(key, summarise(group)) for key, group in ordered]


def bucket_start(at: datetime, interval: Interval, tz: ZoneInfo) -> date:
    """The local date the bucket of `at` starts on: its day, the Monday of its ISO week, or the
    first of its month."""
    return period_start(at.astimezone(tz).date(), interval)


def period_start(day: date, interval: Interval) -> date:
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period(start: date, interval: Interval) -> date:
    """The start of the period after the one starting on `start`."""
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def bucket_count(start: datetime, end: datetime, interval: Interval, tz: ZoneInfo) -> int:
    first, last = bucket_start(start, interval, tz), bucket_start(end - timedelta(microseconds=1), interval, tz)
    if interval == "month":
        return (last.year - first.year) * 12 + last.month - first.month + 1
    return (last - first).days // (1 if interval == "day" else 7) + 1


def series(
    cases: Sequence[CaseFacts],
    start: datetime,
    end: datetime,
    interval: Interval,
    tz: ZoneInfo,
    by: GroupBy | None = None,
) -> list[Bucket]:
    """Every bucket from the one holding `start` to the one holding the last instant before `end`,
    empty ones included, each bounded by local midnights of `tz` (a day across a DST change is 23
    or 25 hours long); cases fall in the bucket of their opening."""
    members: dict[date, list[CaseFacts]] = {}
    for case in cases:
        members.setdefault(bucket_start(case.opened_at, interval, tz), []).append(case)
    day = bucket_start(start, interval, tz)
    out = []
    for _ in range(bucket_count(start, end, interval, tz)):
        inside = members.get(day, [])
        s = summarise(inside)
        out.append(
            Bucket(
                start=_midnight(day, tz),
                end=_midnight(next_period(day, interval), tz),
                groups=grouped(inside, by) if by else [],
                volume=s.volume,
                first_response=s.first_response,
                resolution=s.resolution,
                sla=s.sla,
                csat=s.csat,
            )
        )
        day = next_period(day, interval)
    return out


def _group(key: str | None, s: Summary) -> Group:
    return Group(
        key=key, volume=s.volume, first_response=s.first_response, resolution=s.resolution, sla=s.sla, csat=s.csat
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True, slots=True)
class RetentionPeriod:
    """Of the customers active in [start, end), how many were active in the next period too."""

    start: date
    end: date
    active: int
    retained: int
    churned: int
    retention_rate: float | None  # retained / active (None: nobody was active)
    churn_rate: float | None
    # Whether the next period is over (at `today`): until it is, churn can still turn into retention.
    complete: bool


def retention(
    counts: dict[date, tuple[int, int]], first: date, last: date, interval: Interval, today: date
) -> list[RetentionPeriod]:
    """Every period from the one holding `first` to the one holding `last`, empty ones included;
    `counts` maps a period's start to (customers active in it, of those active in the next)."""
    out = []
    start = period_start(first, interval)
    while start <= last:
        end = next_period(start, interval)
        active, retained = counts.get(start, (0, 0))
        out.append(
            RetentionPeriod(
                start=start,
                end=end,
                active=active,
                retained=retained,
                churned=active - retained,
                retention_rate=_round(retained / active) if active else None,
                churn_rate=_round((active - retained) / active) if active else None,
                complete=next_period(end, interval) <= today,
            )
        )
        start = end
    return out


@dataclass(frozen=True, slots=True)
class LifetimeValue:
    currency: str  # ISO 4217 as the activities gave it ("" for amounts without one)
    customers: int  # customers with any amount in this currency
    total: Decimal
    average: Decimal  # per customer, to the cent


def lifetime_value(rows: Iterable[tuple[str, int, Decimal]]) -> list[LifetimeValue]:
    """(currency, customers, total) per currency → the figures, largest total first."""
    out = [
        LifetimeValue(
            currency=currency,
            customers=customers,
            total=total,
            average=(total / customers).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN),
        )
        for currency, customers, total in rows
        if customers
    ]
    return sorted(out, key=lambda v: (-v.total, v.currency))
