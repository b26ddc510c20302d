"""Segment membership over 20,000 customers: the time of a page of members (the first, and one deep
in the id order) and of every member (what a CSV export or a campaign reads), for filters of each
kind of field. The read models are filled with SQL (customers, cases with tags and scores, custom
attributes, consent, activity totals), as the projectors would leave them."""

from __future__ import annotations

import asyncio
import base64
import secrets
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg

from services.domain.filters import SEGMENT_FIELDS, parse
from services.platform.settings import Settings
from services.segments.members import members_query, segment_member_ids
from tests.benchmarks._servers import servers

CUSTOMERS = 20_000
NOW = datetime(2026, 6, 1, tzinfo=UTC)
H_DATA_TABLES = """
CREATE TABLE IF NOT EXISTS proj_consent (customer_id uuid NOT NULL, purpose text NOT NULL, channel text NOT NULL,
    granted boolean NOT NULL, source text, changed_at timestamptz NOT NULL, PRIMARY KEY (customer_id, purpose, channel));
CREATE TABLE IF NOT EXISTS proj_activity_totals (customer_id uuid NOT NULL, type text NOT NULL, count bigint NOT NULL,
    amount_sum numeric, last_at timestamptz, PRIMARY KEY (customer_id, type));
"""
FILL = """
INSERT INTO proj_customers (id, name, first_seen, last_seen, interaction_count, channels, custom_attributes)
SELECT gen_random_uuid(), 'Customer ' || i, now() - (i % 400) * interval '1 day', now() - (i % 60) * interval '1 day',
       i % 50, string_to_array((ARRAY['sms', 'email', 'sms,whatsapp', 'chat'])[1 + i % 4], ','),
       jsonb_build_object('plan', (ARRAY['gold','silver','free'])[1 + i % 3], 'tier', (i % 10)::text)
FROM generate_series(1, %(n)s) i;
INSERT INTO proj_cases (id, customer_id, origin_customer_id, channel, status, priority, queue, tags, opened_at,
                        updated_at, csat, position)
SELECT gen_random_uuid(), c.id, c.id, 'email', (ARRAY['open','resolved','resolved'])[1 + (k + c.interaction_count) % 3], 'normal', 'email',
       string_to_array((ARRAY['vip', 'billing', '', 'billing,late'])[1 + (k + c.interaction_count) % 4], ','),
       now(), now(), CASE WHEN k % 2 = 0 THEN 1 + (c.interaction_count % 5) END, k
FROM proj_customers c, generate_series(1, 2) k;
INSERT INTO proj_consent SELECT id, 'marketing', 'sms', interaction_count % 3 <> 0, 'api', now()
FROM proj_customers WHERE 'sms' = ANY(channels) AND interaction_count % 2 = 0;
INSERT INTO proj_activity_totals SELECT id, 'order.placed', 1 + interaction_count % 4, interaction_count * 10.5, now()
FROM proj_customers WHERE interaction_count % 2 = 1;
INSERT INTO proj_customer_inbound_channels SELECT id, unnest(channels) FROM proj_customers;
ANALYZE;
"""

FILTERS = {
    "attribute eq": {"all": [{"field": "attributes.plan", "op": "eq", "value": "gold"}]},
    "tags contains": {"all": [{"field": "tags", "op": "contains", "value": "vip"}]},
    "csat_avg gte + open_cases": {
        "all": [{"field": "csat_avg", "op": "gte", "value": 4}, {"field": "open_cases", "op": "gte", "value": 1}]
    },
    "consent sms (implied)": {"all": [{"field": "consent.marketing.sms", "op": "eq", "value": True}]},
    "orders >= 2 or sum > 300": {
        "any": [
            {"field": "activities.order.placed.count", "op": "gte", "value": 2},
            {"field": "activities.amount.sum", "op": "gt", "value": 300},
        ]
    },
    "rare: name matches": {"all": [{"field": "name", "op": "matches", "value": "^Customer 1999[0-9]$"}]},
    "last_seen P7D + channel": {
        "all": [
            {"field": "last_seen", "op": "after", "value": "P7D"},
            {"field": "channels", "op": "contains", "value": "sms"},
        ]
    },
}


async def _measure(url: str) -> list[tuple[str, float, float, float, int]]:
    out = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for label, raw in FILTERS.items():
            tree = parse(raw, SEGMENT_FIELDS)
            firsts, deeps = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                query, params = members_query(tree, after=None, limit=100, now=NOW)
                await (await conn.execute(query, params)).fetchall()
                firsts.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                mid = (
                    await (
                        await conn.execute("SELECT id FROM proj_customers ORDER BY id OFFSET 15000 LIMIT 1")
                    ).fetchone()
                )[0]
                deeps.append(time.perf_counter() - t0)
                query, params = members_query(tree, after=mid, limit=100, now=NOW)
                t0 = time.perf_counter()
                await (await conn.execute(query, params)).fetchall()
                deeps[-1] = time.perf_counter() - t0
            t0 = time.perf_counter()
            total, after = 0, None
            while page := await segment_member_ids(conn, tree, after=after, limit=1000, now=NOW):
                total += len(page)
                after = page[-1]
            everything = time.perf_counter() - t0
            out.append((label, statistics.median(firsts), statistics.median(deeps), everything, total))
    return out


def main() -> str:
    from services.bootstrap import Switchboard  # noqa: PLC0415

    with servers() as (nats_url, url), TemporaryDirectory(prefix="sb-bench-segments-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            nats_url=nats_url,
            database_url=url,
            master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        )
        sb = Switchboard(settings)
        sb.create_schema()
        sb.open_store().datastore.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(H_DATA_TABLES)
            conn.execute(FILL.replace("%(n)s", str(CUSTOMERS)))  # a script: several statements, no parameters
        results = asyncio.run(_measure(url))
    worst = 0.0
    for label, first, deep, everything, total in results:
        print(
            f"   {label:28} page: {first * 1000:6.1f} ms, deep page: {deep * 1000:6.1f} ms, "
            f"all {total:5} members: {everything * 1000:7.1f} ms"
        )
        worst = max(worst, first, deep)
    return f"segments: {CUSTOMERS} customers, slowest page of 100 members {worst * 1000:.0f} ms"


if __name__ == "__main__":
    print(main())
