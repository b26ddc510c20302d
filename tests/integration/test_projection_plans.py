"""A projector batch finds the rows it changes through the read model's index, however big the read
model (issue 13).

A batch of 64 rows or more is staged in a temporary table (`projections.base.bulk`) and joined to
the read model by key. A staging table has no statistics, so PostgreSQL guessed 1,250 rows and
planned a hash join over a scan of the whole read model: every batch read every case, a cost that
grew with the read model. And a merge looked for the customers merged into the absorbed one by a
column without an index: every merge read every customer. Here the real core writes the events,
the real projections apply them, and PostgreSQL's own counters for the batch's transaction say how
the read model was read.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from events.interactions import Identity
from projections.base import STAGE_FROM_ROWS, Item, bulk
from projections.cases import CasesProjection
from projections.profile import ProfileProjection
from projections.runner import ProjectionRunner
from services.core.processor import CoreProcessor
from tests.fixtures.interactions import email, inbound, sms

pytestmark = pytest.mark.integration


class _ScanCounter:
    """Applied after a projection in the same transaction: how that transaction has read `table` so
    far (`pg_stat_xact_user_tables`: the current transaction's own, not yet reported, counts)."""

    name = "scan_counter"
    schema = "SELECT 1"
    tables: tuple[str, ...] = ()

    def __init__(self, table: str) -> None:
        self.table = table
        self.batches: list[tuple[int, int]] = []

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        row = curs.execute(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = %s::regclass", (self.table,)
        ).fetchone()
        self.batches.append((row["seq_scan"], row["idx_scan"]))
        return []

    def erase(self, curs, customer_ids) -> None:
        """Nothing kept, nothing to erase."""


def test_a_staged_batch_of_case_messages_updates_the_cases_by_index_not_by_scanning_them(store) -> None:
    phones = [f"+44770092{n:04d}" for n in range(300)]
    processor = CoreProcessor(store)
    assert len(processor.process([(sms(phone, 0), None) for phone in phones]).recorded) == len(phones)
    counter = _ScanCounter("proj_cases")
    runner = ProjectionRunner(store, [CasesProjection(), counter])
    runner.catch_up()  # 300 open cases

    # One more message in 100 of those conversations: one batch, 100 case rows to update, staged.
    assert len(processor.process([(sms(phone, 1), None) for phone in phones[:100]]).recorded) == 100
    counter.batches.clear()
    assert runner.run_once() > 0

    (seq_scans, index_scans), *_ = counter.batches
    assert seq_scans == 0, "proj_cases was read whole to update 100 of its rows"
    assert index_scans >= 1
    with store.datastore.transaction() as curs:
        counts = curs.execute(
            "SELECT message_count, count(*) AS cases FROM proj_cases WHERE customer_id IS NOT NULL "
            "GROUP BY message_count ORDER BY message_count"
        ).fetchall()
    assert [(r["message_count"], r["cases"]) for r in counts] == [(1, 200), (2, 100)]


def test_a_merge_finds_the_customers_merged_into_the_absorbed_one_by_index(store) -> None:
    processor = CoreProcessor(store)
    others = [sms(f"+44770093{n:04d}", 0) for n in range(1000)]
    ada = Identity("email", "ada@example.org")
    session = Identity("chat", "session-plans")
    first = [*others, email("ada@example.org", 1), inbound("chat", session, 2, "chat-1", thread_key="chat:plans")]
    assert len(processor.process([(i, None) for i in first]).recorded) == len(first)
    counter = _ScanCounter("proj_customers")
    runner = ProjectionRunner(store, [ProfileProjection(), counter])
    runner.catch_up()

    # The visitor logs in: the chat now carries Ada's address, and the two customers are one.
    logged_in = inbound("chat", session, 3, "chat-2", thread_key="chat:plans")
    logged_in = msgspec.structs.replace(logged_in, identities=[session, Identity("external", "user-ada"), ada])
    assert len(processor.process([(logged_in, None)]).recorded) == 1
    counter.batches.clear()
    assert runner.run_once() > 0

    with store.datastore.transaction() as curs:
        merged = curs.execute("SELECT count(*) AS n FROM proj_customers WHERE merged_into IS NOT NULL").fetchone()
    assert merged["n"] == 1
    (seq_scans, index_scans), *_ = counter.batches
    assert seq_scans == 0, "every customer was read to merge one"
    assert index_scans >= 1


def test_a_staging_table_is_emptied_between_uses_without_a_new_file(store) -> None:
    """`bulk` empties its staging table by DELETE: a TRUNCATE gave it a new file and catalog row after
    every staged statement (4–6 ms each on a busy machine, 18 % of PostgreSQL's time at 2,100
    interactions/s), while the commit empties it anyway."""
    columns = (("id", "int4"), ("n", "int4"))
    first = [(i, 1) for i in range(STAGE_FROM_ROWS)]
    second = [(i, 2) for i in range(STAGE_FROM_ROWS, 2 * STAGE_FROM_ROWS)]
    with store.datastore.get_connection() as conn:
        files = []
        for _batch in range(2):
            with conn.transaction(), conn.cursor() as curs:
                seen = []
                for rows in (first, second):  # twice in one transaction, as a batch's rounds are
                    with bulk(curs, "stage_plans_test", columns, rows) as (source, params):
                        seen.append(
                            curs.execute(f"SELECT min(u.n), max(u.n), count(*) FROM {source}", params).fetchone()
                        )
                assert [tuple(r.values()) for r in seen] == [(1, 1, STAGE_FROM_ROWS), (2, 2, STAGE_FROM_ROWS)]
                files.append(curs.execute("SELECT pg_relation_filenode('stage_plans_test') AS f").fetchone()["f"])
        assert files[0] == files[1]
        assert conn.execute("SELECT count(*) AS n FROM stage_plans_test").fetchone()["n"] == 0  # emptied at commit
