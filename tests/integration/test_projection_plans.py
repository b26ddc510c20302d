"""A projector batch finds the rows it changes through the read model's index, however big the read
model (issue 13).

A batch of 64 rows or more is staged in a temporary table (`projections.base.bulk`) and joined to
the read model by key. A staging table has no statistics, so PostgreSQL guessed 1,250 rows and
planned a hash join over a scan of the whole read model: every batch read every case, a cost that
grew with the read model. Here the real core writes the events, the real cases projection applies
them, and PostgreSQL's own counters for the batch's transaction say how `proj_cases` was read.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from projections.base import Item
from projections.cases import CasesProjection
from projections.runner import ProjectionRunner
from services.core.processor import CoreProcessor
from tests.fixtures.interactions import sms

pytestmark = pytest.mark.integration


class _ScanCounter:
    """Applied after the cases in the same transaction: how that transaction has read `proj_cases`
    so far (`pg_stat_xact_user_tables`: the current transaction's own, not yet reported, counts)."""

    name = "scan_counter"
    schema = "SELECT 1"
    tables: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        row = curs.execute(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = 'proj_cases'::regclass"
        ).fetchone()
        self.batches.append((row["seq_scan"], row["idx_scan"]))
        return []

    def erase(self, curs, customer_ids) -> None:
        pass


def test_a_staged_batch_of_case_messages_updates_the_cases_by_index_not_by_scanning_them(store) -> None:
    phones = [f"+44770092{n:04d}" for n in range(300)]
    processor = CoreProcessor(store)
    assert len(processor.process([(sms(phone, 0), None) for phone in phones]).recorded) == len(phones)
    counter = _ScanCounter()
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
