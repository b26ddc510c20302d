"""The core's per-batch reads stay index lookups however long the log and its customers' pasts grow.

Each batch brings its cached customers and cases up to the log (`stored_events_after`). Written as a
plain join, on a log that had grown since PostgreSQL last sampled it, that read was planned as a
merge join over the whole primary key: every event of the log read for every batch (30–85 ms at
60–90k events), which made small batches slow and latency at half rate several hundred ms. And it
read every case a customer ever had, where the batch needs the one its message's thread points to.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from events.interactions import Identity
from services.core import batch_sql
from services.core.processor import CoreProcessor
from tests.fixtures.interactions import email, sms

pytestmark = pytest.mark.integration


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_events_after_a_version_are_read_by_index_ranges_on_a_log_without_statistics(store, database_url):
    phones = [f"+447700{n:06d}" for n in range(300)]
    processor = CoreProcessor(store)
    messages = [sms(phone, n) for n in range(8) for phone in phones]
    for start in range(0, len(messages), 600):
        outcome = processor.process([(m, None) for m in messages[start : start + 600]])
        assert not outcome.poison and not outcome.failed

    with psycopg.connect(database_url, autocommit=True) as conn:
        heads = dict(conn.execute("SELECT originator_id, max(originator_version) FROM sb_events GROUP BY 1").fetchall())
        total = conn.execute("SELECT count(*) FROM sb_events").fetchone()[0]
    assert len(heads) >= 600 and total >= 4_800  # customers and their cases
    # A stream at its head reads nothing; one two versions back reads its last two events.
    chosen = list(heads)[:200]
    after = {i: heads[i] - (2 if n % 2 else 0) for n, i in enumerate(chosen)}

    with store.transaction() as tx:
        stored = batch_sql.stored_events_after(tx, after)
        params = (batch_sql.uuid_array(after), list(after.values()))
        plans = {}
        for mode in ("force_custom_plan", "force_generic_plan"):
            tx.curs.execute(f"SET LOCAL plan_cache_mode = {mode}")
            tx.curs.execute("EXPLAIN (FORMAT JSON) " + batch_sql.EVENTS_AFTER, params)
            plans[mode] = next(iter(tx.curs.fetchone().values()))
    assert [(s.originator_id, s.originator_version) for s in stored] == sorted(
        (i, v) for i in chosen for v in range(after[i] + 1, heads[i] + 1)
    )
    assert len(stored) == sum(1 for n in range(len(chosen)) if n % 2) * 2

    for mode, plan in plans.items():
        plan = plan[0]["Plan"] if isinstance(plan, list) else json.loads(plan)[0]["Plan"]
        nodes = list(plan_nodes(plan))
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "sb_events"], mode
        ranges = [n for n in nodes if n.get("Index Name") == "sb_events_pkey"]
        assert ranges and all("originator_id = s.id" in n.get("Index Cond", "") for n in ranges), (mode, ranges)
        assert not any(node["Node Type"] in ("Merge Join", "Hash Join") for node in plan_nodes(plan)), mode


def test_a_batch_brings_up_to_date_the_cases_its_messages_join_not_every_case_of_a_long_history(store, monkeypatch):
    """A customer with 400 conversations writes in one of them: the batch reads that case (and the
    customer) back from the log, not the 400 (their number grows with the customer's past)."""
    address = f"long-{uuid.uuid4().hex[:8]}@example.com"
    processor = CoreProcessor(store)
    history = [email(address, n, thread_key=f"<thread-{n}@mail.example>") for n in range(400)]
    for start in range(0, len(history), 200):
        assert len(processor.process([(m, None) for m in history[start : start + 200]]).recorded) == 200
    refreshed: list[int] = []
    read = batch_sql.stored_events_after

    def counted(tx, after):
        refreshed.append(len(after))
        return read(tx, after)

    monkeypatch.setattr(batch_sql, "stored_events_after", counted)
    later = [email(address, 1000 + n, thread_key="<thread-7@mail.example>") for n in range(3)]
    outcome = processor.process([(m, None) for m in later])

    assert len(outcome.recorded) == 3 and not outcome.conflicts
    assert refreshed and max(refreshed) <= 2, refreshed  # the customer and the thread's case
    # ... and the messages joined that conversation's case, as a core just started reads it.
    fresh = CoreProcessor(store)
    with store.transaction() as tx:
        [(_, customer_id)] = batch_sql.identity_owners(tx, {fresh._blind(Identity("email", address))}).items()
        [customer] = fresh._preload(tx, [customer_id])
        [case] = fresh._preload(tx, [customer.threads["<thread-7@mail.example>"]])
    assert {m.id for m in later} <= case.messages
