"""Suggested merges waiting for a supervisor: two customers the evidence says are one person, kept
apart because a rule (two different company-side ids) forbids merging them automatically.

A suggestion is one per pair of customers, whichever of them it was recorded on (the core records it
on both): its id is derived from the pair (`merge_suggestion_id`). It is pending until a supervisor
accepts or rejects it (`customer.MergeSuggestionResolved`), or the two are merged some other way
(`customer.Merged` of the pair). The table holds ids, a reason and times: no personal data.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from uuid import UUID

from events.customer import CustomerMerged, MergeSuggested, MergeSuggestionResolved
from projections.base import Item

_NAMESPACE = uuid.UUID("8b4f3c1e-7d2a-4e59-9c61-2f0d8a7b5e43")


def merge_suggestion_id(one: UUID, other: UUID) -> UUID:
    """The id of the suggestion to merge these two customers: the same whichever way round."""
    low, high = sorted((str(one), str(other)))
    return uuid.uuid5(_NAMESPACE, f"{low}|{high}")


class MergeSuggestionsProjection:
    name = "merge_suggestions"
    tables = ("proj_merge_suggestions",)
    events = frozenset({MergeSuggested.NAME, MergeSuggestionResolved.NAME, CustomerMerged.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_merge_suggestions (
        id uuid PRIMARY KEY,
        customer_a uuid NOT NULL,
        customer_b uuid NOT NULL,
        reason text NOT NULL,
        suggested_at timestamptz NOT NULL,
        status text NOT NULL,
        resolved_by text,
        resolved_at timestamptz,
        position bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS proj_merge_suggestions_pending_idx ON proj_merge_suggestions (suggested_at DESC, id DESC)
        WHERE status = 'pending';
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        live: list[dict] = []
        for position, event, _redacted in items:
            kind = type(event)
            if kind is MergeSuggested:
                a, b = sorted((event.stream_id, event.other_id), key=str)
                curs.execute(
                    "INSERT INTO proj_merge_suggestions VALUES (%s, %s, %s, %s, %s, 'pending', NULL, NULL, %s) "
                    "ON CONFLICT (id) DO NOTHING",
                    (merge_suggestion_id(a, b), a, b, event.reason, event.occurred_at, position),
                )
            elif kind is MergeSuggestionResolved:
                curs.execute(
                    "UPDATE proj_merge_suggestions SET status = %s, resolved_by = %s, resolved_at = %s "
                    "WHERE id = %s AND status = 'pending'",
                    (
                        "accepted" if event.accepted else "rejected",
                        event.by,
                        event.occurred_at,
                        merge_suggestion_id(event.stream_id, event.other_id),
                    ),
                )
            elif kind is CustomerMerged:
                curs.execute(
                    "UPDATE proj_merge_suggestions SET status = 'merged', resolved_at = %s "
                    "WHERE id = %s AND status = 'pending'",
                    (event.occurred_at, merge_suggestion_id(event.stream_id, event.absorbed_id)),
                )
            else:
                continue
            live.append({"type": "merge_suggestion"})
        return live[:1]

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing personal is kept here (ids, a reason, times)."""
