"""Agent API, metrics: first response time, resolution time, SLA attainment, CSAT and volume per
channel over a period (the operators' Prometheus counters are `services/api/health.py`).

`by=agent|team|queue|channel` adds a group per value, `interval=day|week` a series of time buckets
(local midnights of `tz`, an IANA zone, UTC by default), and `Accept: text/csv` answers the same as
CSV, a row per group and bucket. The figures come from the metrics read model (projections/metrics.py)
through services/domain/metrics.py, over the cases opened in [from, to).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.params import FromQuery, QueryParameter

from events.config import BusinessHours
from services.api import queries
from services.api.auth import READ
from services.api.context import now, require, svc
from services.domain.business_hours import Calendar
from services.domain.metrics import (
    GROUP_BYS,
    INTERVALS,
    SLA_TARGETS,
    Bucket,
    CaseFacts,
    Group,
    GroupBy,
    Interval,
    LifetimeValue,
    RetentionPeriod,
    Summary,
    bucket_count,
    grouped,
    lifetime_value,
    next_period,
    period_start,
    retention,
    series,
    summarise,
)

MAX_BUCKETS = 400  # a daily series of a bit more than a year
CSV_MEDIA_TYPE = "text/csv"


class MetricsReport(msgspec.Struct, kw_only=True):
    from_: datetime = msgspec.field(name="from")
    to: datetime
    cases_opened: int
    first_response_time_s: float | None
    resolution_time_s: float | None
    sla_attainment: float | None
    csat: float | None
    csat_responses: int
    volume_per_channel: dict[str, dict[str, int]]
    # Since `by`, `interval`: the same figures in full, as a whole, per group and per bucket.
    tz: str = "UTC"
    by: GroupBy | None = None
    interval: Interval | None = None
    overall: Summary | None = None
    groups: list[Group] = []
    series: list[Bucket] = []
    # With `interval`: per period (UTC days, ISO weeks, months) the customers active in it (who
    # reached us) and of those, the ones active in the next period too (retained) and not (churned).
    retention: list[RetentionPeriod] = []
    # Over all time, per currency: the total of the customers' business activities, and per customer.
    lifetime_value: list[LifetimeValue] = []


@get("/api/v1/metrics", summary="Contact-centre metrics over a period, by group and over time (JSON or CSV)")
async def cc_metrics(
    request: Request,
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    by: FromQuery[GroupBy | None] = None,
    interval: FromQuery[Interval | None] = None,
    tz: FromQuery[str] = "UTC",
    format: FromQuery[Literal["json", "csv"] | None] = None,
) -> Response[MetricsReport]:
    await require(request, READ)
    end = _parse_time(to) or now()
    start = _parse_time(from_) or end - timedelta(days=7)
    if start >= end:
        raise HTTPException(status_code=400, detail="from must be before to")
    if by is not None and by not in GROUP_BYS:
        raise HTTPException(status_code=400, detail=f"by must be one of {', '.join(GROUP_BYS)}")
    if interval is not None and interval not in INTERVALS:
        raise HTTPException(status_code=400, detail=f"interval must be one of {', '.join(INTERVALS)}")
    zone = _zone(tz)
    if interval is not None and bucket_count(start, end, interval, zone) > MAX_BUCKETS:
        raise HTTPException(status_code=400, detail=f"more than {MAX_BUCKETS} {interval}s: ask for a shorter period")
    if format not in (None, "json", "csv"):
        raise HTTPException(status_code=400, detail="format must be json or csv")
    wants_csv = format == "csv" or (
        format is None and request.accept.best_match(["application/json", CSV_MEDIA_TYPE]) == CSV_MEDIA_TYPE
    )
    async with svc(request).pool.connection() as conn:
        legacy = await queries.metrics(conn, start, end)
        cases = await case_facts(conn, start, end)
        kept = await retention_periods(conn, start, end, interval, now(request)) if interval else []
        value = await lifetime_values(conn)
    report = MetricsReport(
        from_=start,
        to=end,
        cases_opened=legacy["cases_opened"],
        first_response_time_s=legacy["first_response_time_s"],
        resolution_time_s=legacy["resolution_time_s"],
        sla_attainment=legacy["sla_attainment"],
        csat=legacy["csat"],
        csat_responses=legacy["csat_responses"],
        volume_per_channel=legacy["volume_per_channel"],
        tz=tz,
        by=by,
        interval=interval,
        overall=summarise(cases),
        groups=grouped(cases, by) if by and not interval else [],
        series=series(cases, start, end, interval, zone, by) if interval else [],
        retention=kept,
        lifetime_value=value,
    )
    if wants_csv:
        return Response(
            to_csv(report),
            media_type=CSV_MEDIA_TYPE,
            headers={"Content-Disposition": 'attachment; filename="metrics.csv"'},
        )
    return Response(report)


async def case_facts(conn, start: datetime, end: datetime) -> list[CaseFacts]:
    """The facts of every case opened in [start, end), with the outcomes of their SLA clocks."""
    cur = await conn.execute(
        "SELECT s.case_id, s.target, s.met FROM proj_metrics_sla s JOIN proj_case_metrics m ON m.case_id = s.case_id "
        "WHERE m.opened_at >= %s AND m.opened_at < %s ORDER BY s.at, s.event_id",
        (start, end),
    )
    outcomes: dict[UUID, list[tuple[str, bool]]] = defaultdict(list)
    for case_id, target, met in await cur.fetchall():
        outcomes[case_id].append((target, met))
    cur = await conn.execute("SELECT name, business_hours FROM proj_sla_policies WHERE business_hours IS NOT NULL")
    calendars = {name: Calendar.of(msgspec.convert(hours, BusinessHours)) for name, hours in await cur.fetchall()}
    cur = await conn.execute(
        "SELECT case_id, channel, queue, assignee, teams, sla_policy, opened_at, first_response_at, resolved_at, csat "
        "FROM proj_case_metrics WHERE opened_at >= %s AND opened_at < %s ORDER BY opened_at, case_id",
        (start, end),
    )
    return [
        CaseFacts(
            channel=r[1],
            queue=r[2],
            assignee=r[3],
            teams=tuple(r[4]),
            sla_policy=r[5],
            opened_at=r[6],
            first_response_at=r[7],
            resolved_at=r[8],
            csat=r[9],
            sla=tuple(outcomes.get(r[0], ())),
            calendar=calendars.get(r[5]) if r[5] else None,
        )
        for r in await cur.fetchall()
    ]


async def retention_periods(
    conn, start: datetime, end: datetime, interval: Interval, today: datetime
) -> list[RetentionPeriod]:
    """Retention and churn of every period (UTC) from the one holding `start` to the one holding the
    last instant before `end`, from the days each customer was active (projections/customer_activity.py)."""
    first = start.astimezone(UTC).date()
    last = period_start((end - timedelta(microseconds=1)).astimezone(UTC).date(), interval)
    beyond = next_period(next_period(last, interval), interval)
    cur = await conn.execute(
        "WITH a AS (SELECT DISTINCT customer_id, date_trunc(%s, day::timestamp)::date AS p "
        "FROM proj_customer_activity WHERE day >= %s AND day < %s) "
        "SELECT a.p, count(*), count(n.customer_id) FROM a "
        "LEFT JOIN a n ON n.customer_id = a.customer_id AND n.p = (a.p + %s::interval)::date "
        "WHERE a.p <= %s GROUP BY a.p",
        (interval, period_start(first, interval), beyond, f"1 {interval}", last),
    )
    counts = {p: (active, kept) for p, active, kept in await cur.fetchall()}
    return retention(counts, first, last, interval, today.astimezone(UTC).date())


async def lifetime_values(conn) -> list[LifetimeValue]:
    """Lifetime value per currency from projections/customer_activity.py (merged customers' values
    are their survivors')."""
    cur = await conn.execute(
        "SELECT currency, count(*), sum(amount_sum) FROM proj_customer_value GROUP BY currency ORDER BY currency"
    )
    return lifetime_value(await cur.fetchall())


CSV_COLUMNS = (
    "bucket_start",
    "bucket_end",
    "group",
    "volume",
    "first_response_count",
    "first_response_avg_s",
    "first_response_median_s",
    "first_response_p90_s",
    "resolution_count",
    "resolution_avg_s",
    "resolution_median_s",
    "resolution_p90_s",
    *(f"sla_{t}_{part}" for t in (*SLA_TARGETS, "overall") for part in ("met", "breached", "attainment")),
    "csat_avg",
    "csat_count",
)


def to_csv(report: MetricsReport) -> str:
    """A row per bucket and group: per group without `interval`, per bucket without `by`, per bucket
    and group with both, one row for the whole period with neither."""
    rows: list[tuple[Bucket | None, Group | None, Summary]] = []
    if report.series:
        for bucket in report.series:
            if report.by:
                rows += [(bucket, group, group) for group in bucket.groups]
            else:
                rows.append((bucket, None, bucket))
    elif report.by:
        rows += [(None, group, group) for group in report.groups]
    elif report.overall is not None:
        rows.append((None, None, report.overall))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for bucket, group, s in rows:
        sla = [s.sla.first_response, s.sla.next_response, s.sla.resolution, s.sla.overall]
        writer.writerow(
            [
                bucket.start.isoformat() if bucket else "",
                bucket.end.isoformat() if bucket else "",
                _csv_text(group.key) if group and group.key is not None else "",
                s.volume,
                s.first_response.count,
                *_blank(s.first_response.avg_s, s.first_response.median_s, s.first_response.p90_s),
                s.resolution.count,
                *_blank(s.resolution.avg_s, s.resolution.median_s, s.resolution.p90_s),
                *(x for a in sla for x in (a.met, a.breached, *_blank(a.attainment))),
                *_blank(s.csat.avg),
                s.csat.count,
            ]
        )
    return out.getvalue()


def _blank(*values: float | None) -> list[str | float]:
    return ["" if v is None else v for v in values]


def _csv_text(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (a queue or team named "=HYPERLINK(...)")."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise HTTPException(status_code=400, detail="tz must be an IANA time zone, e.g. Europe/Madrid") from None


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(status_code=400, detail="times are ISO 8601") from None
    if not 1900 <= value.year <= 9000:  # room for the default period and time zones around it
        raise HTTPException(status_code=400, detail="times must fall between the years 1900 and 9000")
    return value if value.tzinfo else value.replace(tzinfo=UTC)
