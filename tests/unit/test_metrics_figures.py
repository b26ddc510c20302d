"""The metrics' rules (services/domain/metrics.py) on in-memory cases, the CSV shape, and the search's
pure helpers (query terms, snippets)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from events.config import BusinessHours
from services.api.metrics import CSV_COLUMNS, MetricsReport, to_csv
from services.api.search import fold, snippet, tsquery
from services.domain.business_hours import Calendar
from services.domain.metrics import (
    CaseFacts,
    bucket_count,
    elapsed_seconds,
    grouped,
    percentile,
    series,
    summarise,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 27, 10, 0, tzinfo=UTC)
MADRID = ZoneInfo("Europe/Madrid")


def a_case(
    opened: datetime = T0,
    first: float | None = None,
    resolved: float | None = None,
    csat: int | None = None,
    sla: tuple = (),
    **kw,
) -> CaseFacts:
    return CaseFacts(
        channel=kw.get("channel", "email"),
        queue=kw.get("queue", "email"),
        assignee=kw.get("assignee"),
        teams=kw.get("teams", ()),
        sla_policy=None,
        opened_at=opened,
        first_response_at=opened + timedelta(seconds=first) if first is not None else None,
        resolved_at=opened + timedelta(seconds=resolved) if resolved is not None else None,
        csat=csat,
        sla=sla,
        calendar=kw.get("calendar"),
    )


def test_percentiles_interpolate_between_the_nearest_values():
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0], 0.9) == pytest.approx(91.0)


def test_a_summary_counts_only_what_happened():
    cases = [
        a_case(first=60, resolved=3600, csat=4, sla=(("first_response", True), ("resolution", True))),
        a_case(first=180, sla=(("first_response", False), ("next_response", True))),
        a_case(),  # no reply yet, no clock ended
    ]
    s = summarise(cases)
    assert s.volume == 3
    assert (s.first_response.count, s.first_response.avg_s, s.first_response.median_s) == (2, 120.0, 120.0)
    assert s.first_response.p90_s == pytest.approx(168.0)
    assert (s.resolution.count, s.resolution.avg_s) == (1, 3600.0)
    assert (s.sla.first_response.met, s.sla.first_response.breached, s.sla.first_response.attainment) == (1, 1, 0.5)
    assert s.sla.next_response.attainment == 1.0 and s.sla.resolution.attainment == 1.0
    assert (s.sla.overall.met, s.sla.overall.breached, s.sla.overall.attainment) == (3, 1, 0.75)
    assert (s.csat.avg, s.csat.count) == (4.0, 1)
    empty = summarise([])
    assert empty.volume == 0 and empty.first_response.avg_s is None and empty.sla.overall.attainment is None


def test_waits_count_business_hours_where_the_policy_has_them():
    assert elapsed_seconds(T0, T0 + timedelta(hours=30), None) == 30 * 3600
    madrid = Calendar.of(
        BusinessHours(timezone="Europe/Madrid", week={d: ["09:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")})
    )
    friday = datetime(2026, 3, 6, 17, 50, tzinfo=ZoneInfo("Europe/Madrid"))  # answered Monday 09:05
    monday = datetime(2026, 3, 9, 9, 5, tzinfo=ZoneInfo("Europe/Madrid"))
    assert elapsed_seconds(friday, monday, madrid) == 15 * 60
    waited = (monday - friday).total_seconds()
    weekend = summarise([a_case(friday, first=waited, calendar=madrid), a_case(friday, first=waited)])
    assert weekend.first_response.count == 2
    assert weekend.first_response.avg_s == (15 * 60 + waited) / 2  # in business hours, and not


def test_a_case_counts_in_each_team_of_its_assignee_and_unassigned_ones_in_none():
    cases = [
        a_case(assignee="a1", teams=("billing", "tech")),
        a_case(assignee="a2", teams=("billing",)),
        a_case(),
    ]
    teams = grouped(cases, "team")
    assert [(g.key, g.volume) for g in teams] == [("billing", 2), ("tech", 1), (None, 1)]
    assert [(g.key, g.volume) for g in grouped(cases, "agent")] == [("a1", 1), ("a2", 1), (None, 1)]


def test_daily_buckets_follow_local_midnights_across_a_dst_change():
    start = datetime(2026, 3, 28, 0, 0, tzinfo=MADRID)
    end = datetime(2026, 3, 31, 0, 0, tzinfo=MADRID)
    # 23:30 UTC on the 28th is already the 29th in Madrid (UTC+1 until 02:00 that night).
    cases = [a_case(datetime(2026, 3, 28, 23, 30, tzinfo=UTC)), a_case(datetime(2026, 3, 28, 12, tzinfo=UTC))]
    buckets = series(cases, start, end, "day", MADRID)
    assert [b.start.isoformat() for b in buckets] == [
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    ]
    assert [b.end.astimezone(UTC) - b.start.astimezone(UTC) for b in buckets] == [
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=24),
    ]
    assert [b.volume for b in buckets] == [1, 1, 0]
    utc = series(cases, start.astimezone(UTC), end.astimezone(UTC), "day", ZoneInfo("UTC"))
    assert [b.volume for b in utc] == [0, 2, 0, 0], "27th 23:00 UTC to 30th 22:00 UTC: four UTC days"


def test_weekly_buckets_start_on_monday():
    start, end = datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 17, tzinfo=UTC)
    assert bucket_count(start, end, "week", ZoneInfo("UTC")) == 3
    buckets = series([a_case(datetime(2026, 3, 9, 0, 0, tzinfo=UTC))], start, end, "week", ZoneInfo("UTC"), "channel")
    assert [b.start.date().isoformat() for b in buckets] == ["2026-03-02", "2026-03-09", "2026-03-16"]
    assert [b.volume for b in buckets] == [0, 1, 0]
    assert [(g.key, g.volume) for g in buckets[1].groups] == [("email", 1)] and buckets[0].groups == []


def _report(**kw) -> MetricsReport:
    return MetricsReport(
        from_=T0,
        to=T0 + timedelta(days=1),
        cases_opened=0,
        first_response_time_s=None,
        resolution_time_s=None,
        sla_attainment=None,
        csat=None,
        csat_responses=0,
        volume_per_channel={},
        **kw,
    )


def test_csv_rows_and_cells_a_spreadsheet_will_not_run():
    cases = [a_case(queue="=HYPERLINK(1)", first=60), a_case(queue="sales")]
    rows = list(csv.reader(io.StringIO(to_csv(_report(by="queue", groups=grouped(cases, "queue"))))))
    assert rows[0] == list(CSV_COLUMNS)
    assert [(r[2], r[3], r[5]) for r in rows[1:]] == [("'=HYPERLINK(1)", "1", "60.0"), ("sales", "1", "")]
    whole = list(csv.DictReader(io.StringIO(to_csv(_report(overall=summarise(cases))))))
    assert len(whole) == 1 and whole[0]["volume"] == "2" and whole[0]["group"] == ""


def test_search_terms_are_quoted_prefixes_and_snippets_mark_the_matches():
    assert tsquery(["jose", "o'neil"]) == "'jose':* & 'o''neil':*"
    assert tsquery(["a", "b"], "|") == "'a':* | 'b':*"
    assert fold("MUÑOZ Ἀθῆναι") == "munoz αθηναι"
    text = "Hola, ¿dónde está mi PEDIDO? " + " ".join(f"w{i}" for i in range(60))
    assert snippet(text, ["donde", "pedido"]).startswith("Hola, ¿«dónde» está mi «PEDIDO»? w0")
    assert snippet(text, ["donde"]).endswith(" …")
    late = snippet(" ".join(f"w{i}" for i in range(60)) + " Muñoz", ["munoz"])
    assert late.startswith("… w") and late.endswith("«Muñoz»")
    assert snippet("", ["x"]) == ""
