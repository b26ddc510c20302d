"""What a customer said yes and no to, and what they did elsewhere: consent and business activities.

- `proj_consent`: the last word per (customer, purpose, channel): given or withdrawn, its source and
  time. No personal data: ids, channel names, a source such as "keyword:STOP".
- `proj_activity_totals`: per customer and activity type, how many, the sum of their amounts and the
  last one's time (segments read `activities.TYPE.count` and `activities.amount.sum` from it; the
  profile shows it). Amounts are summed as `numeric`, whatever the currency: one currency per
  deployment is the common case. The sums per currency (the profile's `amounts`, the metrics'
  lifetime value) are `proj_customer_value`'s (projections/customer_activity.py), kept once.

Both follow merges (the absorbed customer's rows move to the survivor: its own consent stands where
both have one, activity totals add up) and erasure (the rows go).
"""

from __future__ import annotations

from collections.abc import Sequence

from events.customer import ActivityRecorded, ConsentChanged, CustomerErased, CustomerMerged
from projections.base import Item


class CustomerDataProjection:
    name = "customer_data"
    tables = ("proj_consent", "proj_activity_totals")
    events = frozenset({ConsentChanged.NAME, ActivityRecorded.NAME, CustomerMerged.NAME, CustomerErased.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_consent (
        customer_id uuid NOT NULL,
        purpose text NOT NULL,
        channel text NOT NULL,
        granted boolean NOT NULL,
        source text NOT NULL,
        changed_at timestamptz NOT NULL,
        PRIMARY KEY (customer_id, purpose, channel)
    );
    CREATE TABLE IF NOT EXISTS proj_activity_totals (
        customer_id uuid NOT NULL,
        type text NOT NULL,
        count bigint NOT NULL,
        amount_sum numeric NOT NULL DEFAULT 0,
        last_at timestamptz NOT NULL,
        PRIMARY KEY (customer_id, type)
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        for _position, event, _redacted in items:
            kind = type(event)
            if kind is ConsentChanged:
                curs.execute(
                    "INSERT INTO proj_consent VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (customer_id, purpose, channel) DO UPDATE SET granted = EXCLUDED.granted, "
                    "source = EXCLUDED.source, changed_at = EXCLUDED.changed_at",
                    (event.stream_id, event.purpose, event.channel, event.granted, event.source, event.occurred_at),
                )
            elif kind is ActivityRecorded:
                amount = event.amount or 0
                curs.execute(
                    "INSERT INTO proj_activity_totals VALUES (%s, %s, 1, %s, %s) "
                    "ON CONFLICT (customer_id, type) DO UPDATE SET count = proj_activity_totals.count + 1, "
                    "amount_sum = proj_activity_totals.amount_sum + EXCLUDED.amount_sum, "
                    "last_at = GREATEST(proj_activity_totals.last_at, EXCLUDED.last_at)",
                    (event.stream_id, event.type, amount, event.occurred_at),
                )
            elif kind is CustomerMerged:
                self._merge(curs, event.stream_id, event.absorbed_id)
            elif kind is CustomerErased:
                self.erase(curs, [event.stream_id])
        return []

    @staticmethod
    def _merge(curs, survivor, absorbed) -> None:
        curs.execute(
            "INSERT INTO proj_consent SELECT %s, purpose, channel, granted, source, changed_at FROM proj_consent "
            "WHERE customer_id = %s ON CONFLICT (customer_id, purpose, channel) DO NOTHING",
            (survivor, absorbed),
        )
        curs.execute(
            "INSERT INTO proj_activity_totals SELECT %s, type, count, amount_sum, last_at FROM proj_activity_totals "
            "WHERE customer_id = %s ON CONFLICT (customer_id, type) DO UPDATE SET "
            "count = proj_activity_totals.count + EXCLUDED.count, "
            "amount_sum = proj_activity_totals.amount_sum + EXCLUDED.amount_sum, "
            "last_at = GREATEST(proj_activity_totals.last_at, EXCLUDED.last_at)",
            (survivor, absorbed),
        )
        for table in CustomerDataProjection.tables:
            curs.execute(f"DELETE FROM {table} WHERE customer_id = %s", (absorbed,))

    def erase(self, curs, customer_ids: Sequence) -> None:
        ids = list(customer_ids)
        for table in self.tables:
            curs.execute(f"DELETE FROM {table} WHERE customer_id = ANY(%s)", (ids,))
