"""The agent API's read queries in their fast shapes (services/api/queries.py) answer what the plain
statements they replaced answer, on a generated log with merges (some chained): case lists page by
page for every filter, customer search through the trigram indexes, and the one-statement profile
and timeline, for a customer never absorbed and for an absorbed id (its survivor's)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from projections.runner import ProjectionRunner
from services.api import queries, search
from services.platform.eventstore.codec import REDACTED
from tests.benchmarks import _eventlog

pytestmark = pytest.mark.integration


@pytest.fixture
def projected(store, database_url):
    _eventlog.write(
        store,
        _eventlog.events(customers=60, target=4000, heavy=2, heavy_events=800, merge_rate=0.3, seed=11),
        batch=700,
    )
    ProjectionRunner(store, batch_size=1000).catch_up()
    return database_url


def _expected_cases(conn, statuses, assignee) -> list:
    clauses, params = [], []
    if statuses:
        clauses.append("status = ANY(%s)")
        params.append(statuses)
    if assignee == "none":
        clauses.append("assignee IS NULL")
    elif assignee:
        clauses.append("assignee = %s")
        params.append(assignee)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = conn.execute(f"SELECT id FROM proj_cases {where} ORDER BY updated_at DESC, id DESC", params)
    return [str(r[0]) for r in rows]


async def test_case_lists_page_through_every_filter_in_order(projected):
    async with await psycopg.AsyncConnection.connect(projected, autocommit=True) as conn:
        with psycopg.connect(projected) as sync:
            combos = [
                (None, None),
                (["open"], None),
                (["open", "pending"], None),
                (["pending", "open", "pending"], None),  # a status named twice counts once
                (["open", "snoozed", "pending", "resolved"], None),
                (["open"], "none"),
                (["resolved"], "agent-7"),
                (None, "agent-9"),
            ]
            for statuses, assignee in combos:
                expected = _expected_cases(sync, list(dict.fromkeys(statuses)) if statuses else None, assignee)
                got, cursor = [], None
                for _ in range(1000):
                    page = await queries.list_cases(conn, None, statuses, assignee, 7, cursor)
                    assert len(page["items"]) <= 7
                    got += [item["id"] for item in page["items"]]
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                assert got == expected, (statuses, assignee)
            assert len(_expected_cases(sync, ["open", "pending"], None)) > 14  # more than two pages


async def test_a_case_row_carries_the_last_message_and_the_customer(projected):
    async with await psycopg.AsyncConnection.connect(projected, autocommit=True) as conn:
        page = await queries.list_cases(conn, None, ["open"], None, 5, None)
        cur = conn.cursor(row_factory=dict_row)
        for item in page["items"]:
            await cur.execute(
                "SELECT t.text, t.direction, p.name FROM proj_cases c JOIN proj_customers p ON p.id = c.customer_id "
                "JOIN proj_timeline t ON t.case_id = c.id WHERE c.id = %s ORDER BY t.occurred_at DESC LIMIT 1",
                (item["id"],),
            )
            row = await cur.fetchone()
            assert item["customer_name"] == row["name"]
            assert item["last_message"]["direction"] == row["direction"]
            assert row["text"].startswith(item["last_message"]["text"].rstrip("…"))


async def test_customer_search_finds_parts_of_names_and_addresses(projected):
    async with await psycopg.AsyncConnection.connect(projected, autocommit=True) as conn:
        with psycopg.connect(projected) as sync:
            assert (
                sync.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'proj_identities_fold_idx'").fetchone()[
                    0
                ]
                == 1
            )
            live = "merged_into IS NULL AND NOT erased"
            email = sync.execute(
                f"SELECT i.value FROM proj_identities i JOIN proj_customers c ON c.id = i.customer_id "
                f"WHERE i.kind = 'email' AND c.{live} ORDER BY i.value LIMIT 1"
            ).fetchone()[0]
            for q in (email.split("@")[0].upper(), "CUSTOMER 1", "xample.o", "nobody-here"):
                pattern = "%" + q.lower() + "%"
                expected = [
                    str(r[0])
                    for r in sync.execute(
                        f"SELECT c.id FROM proj_customers c WHERE {live} AND (lower(c.name) LIKE %s OR EXISTS "
                        "(SELECT 1 FROM proj_identities i WHERE i.customer_id = c.id AND lower(i.value) LIKE %s)) "
                        "ORDER BY c.last_seen DESC, c.id DESC",
                        (pattern, pattern),
                    )
                ]
                got, cursor = [], None
                while True:
                    page = await queries.search_customers(conn, q, 10, cursor)
                    got += [item["id"] for item in page["items"]]
                    if (cursor := page["next_cursor"]) is None:
                        break
                assert got == expected, q
                if q != "nobody-here":
                    assert got


async def test_profile_and_timeline_of_a_customer_and_of_an_absorbed_id(projected):
    async with await psycopg.AsyncConnection.connect(projected, autocommit=True) as conn:
        with psycopg.connect(projected) as sync:
            absorbed, survivor = sync.execute(
                "SELECT absorbed_id, survivor_id FROM proj_customer_alias ORDER BY absorbed_id LIMIT 1"
            ).fetchone()
            busiest = sync.execute(
                "SELECT id FROM proj_customers WHERE merged_into IS NULL ORDER BY interaction_count DESC LIMIT 1"
            ).fetchone()[0]
            open_cases = sync.execute(
                "SELECT count(*) FROM proj_cases WHERE customer_id = %s AND status <> 'resolved'", (busiest,)
            ).fetchone()[0]
            identities = sync.execute(
                "SELECT kind, value, verified FROM proj_identities WHERE customer_id = %s ORDER BY kind, value",
                (busiest,),
            ).fetchall()
        profile = await queries.customer_profile(conn, busiest)
        assert profile["id"] == str(busiest) and profile["open_cases"] == open_cases
        assert profile["identities"] == [{"kind": k, "value": v} for k, v, verified in identities if verified]
        assert profile["claims"] == [{"kind": k, "value": v} for k, v, verified in identities if not verified]
        assert await queries.customer_profile(conn, absorbed) == await queries.customer_profile(conn, survivor)

        # The busiest customer's whole timeline, page by page, equals the plain query's.
        got, cursor = [], None
        while True:
            page = await queries.timeline_of(conn, busiest, 50, cursor, None)
            got += [item["id"] for item in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        with psycopg.connect(projected) as sync:
            expected = [
                str(r[0])
                for r in sync.execute(
                    "SELECT interaction_id FROM proj_timeline WHERE customer_id = %s "
                    "ORDER BY occurred_at DESC, interaction_id DESC",
                    (busiest,),
                )
            ]
        assert got == expected and len(got) > 50
        for channel in ("email", "sms"):
            assert await queries.timeline_of(conn, busiest, 20, None, channel) == await queries.timeline(
                conn, busiest, 20, None, channel
            )
        assert await queries.timeline_of(conn, absorbed, 20, None, None) == await queries.timeline(
            conn, survivor, 20, None, None
        )
        assert await queries.timeline_of(conn, uuid.uuid4(), 20, None, None) is None
        assert await queries.customer_profile(conn, uuid.uuid4()) is None


async def test_full_text_search_finds_customers_by_words_of_name_and_addresses_together(projected):
    """The candidates come per word (name or an identity), intersected: the customers found are
    exactly those whose name and identities together hold every word."""
    async with await psycopg.AsyncConnection.connect(projected, autocommit=True) as conn:
        with psycopg.connect(projected) as sync:
            name, email = sync.execute(
                "SELECT c.name, i.value FROM proj_customers c JOIN proj_identities i ON i.customer_id = c.id "
                "WHERE c.merged_into IS NULL AND NOT c.erased AND i.kind = 'email' AND c.name ~ ' [0-9]+$' "
                "ORDER BY c.id LIMIT 1"
            ).fetchone()
            number, local = name.split()[-1], email.split("@")[0]
            for q in (f"{number} {local}", f"customer {number}", f"{local} example", "customer", "nobody-here"):
                words = await search.query_words(conn, q)
                expected = {
                    str(r[0])
                    for r in sync.execute(
                        "SELECT c.id FROM proj_customers c WHERE c.merged_into IS NULL AND NOT c.erased AND "
                        "(coalesce(sb_search_vector(c.name), '') || coalesce(sb_search_vector((SELECT string_agg("
                        "i.value, ' ') FROM proj_identities i WHERE i.customer_id = c.id)), '')) @@ %s::tsquery",
                        (search.tsquery(words),),
                    )
                }
                hits = await search.search(conn, q, search.MAX_LIMIT)
                found = {h.customer_id for h in hits if h.kind == "customer"}
                if len(expected) < search.MAX_LIMIT:
                    assert found == expected, q
                else:
                    assert found <= expected and len(found) == search.MAX_LIMIT, q
                if q != "nobody-here":
                    assert found, q


async def test_full_text_items_are_the_best_of_the_newest_matches_by_either_path(projected, monkeypatch):
    """Items are ranked among the newest ITEM_CANDIDATES that hold every word: found among the newest
    RECENT_WINDOW items when the words are common there, else through the GIN index; both paths
    answer what one plain statement over every item answers (made small here, so that the 4,000
    events exercise both)."""
    monkeypatch.setattr(search, "ITEM_CANDIDATES", 30)
    monkeypatch.setattr(search, "RECENT_WINDOW", 200)
    paths = set()
    async with await psycopg.AsyncConnection.connect(projected, autocommit=True) as conn:
        with psycopg.connect(projected) as sync:
            for q in ("refund", "order tracking", "urgent broken again still", "café naïve help please when"):
                words = await search.query_words(conn, q)
                query = search.tsquery(words)
                newest = (
                    "SELECT * FROM proj_timeline WHERE sb_search_vector(text) @@ %(q)s::tsquery AND text <> %(r)s "
                    "ORDER BY occurred_at DESC, interaction_id DESC"
                )
                in_window = sync.execute(
                    "SELECT count(*) FROM (SELECT * FROM proj_timeline ORDER BY occurred_at DESC, interaction_id DESC "
                    "LIMIT 200) w WHERE sb_search_vector(text) @@ %(q)s::tsquery AND text <> %(r)s",
                    {"q": query, "r": REDACTED},
                ).fetchone()[0]
                paths.add("window" if in_window >= 30 else "index")
                expected = [
                    str(r[0])
                    for r in sync.execute(
                        f"SELECT interaction_id FROM ({newest} LIMIT 30) t ORDER BY "
                        "ts_rank(setweight(sb_search_vector(text), 'D'), %(q)s::tsquery) DESC, occurred_at DESC, "
                        "interaction_id",
                        {"q": query, "r": REDACTED},
                    )
                ]
                assert expected, q
                hits = await search.search(conn, q, search.MAX_LIMIT)
                assert [h.id for h in hits if h.kind == "timeline_item"] == expected, q
    assert paths == {"window", "index"}, paths
