"""When customers were active: one row per customer and (UTC) day on which they reached us (an inbound
message on any channel; business activities too once they are in the log), for retention and churn
(services/domain/metrics.py `retention`, GET /api/v1/metrics); and the channels each customer has
written to us on (`proj_customer_inbound_channels`), where, under the `implied` consent policy, they
may receive marketing until they opt out (segments' `consent.PURPOSE.CHANNEL`; not the profile's
`proj_customers.channels`, which holds the channels of our messages to them too, and a message of
ours is no consent); and the value of
each customer's business activities per currency (`proj_customer_value`: lifetime value in the
metrics, and the profile's `amounts`; currency upper-cased, "" for an amount without one).

No personal data (a customer id and a date), so `erase` has nothing to remove: the figures of the
past stay as they were. A merge moves the absorbed customer's days to the survivor.

Rebuilt by this same `apply` (rows are keyed and written with ON CONFLICT DO NOTHING, so applying a
run of events again changes nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal

from events.customer import CustomerMerged, InteractionRecorded
from projections.base import Item, bulk

_COLUMNS = (("customer_id", "uuid"), ("day", "date"))
_CHANNEL_COLUMNS = (("customer_id", "uuid"), ("channel", "text"))
# Business activities (branch h-data's `customer.ActivityRecorded`): matched by name, so this read
# model needs nothing of that module; each is a day the customer was active.
ACTIVITY_EVENT = "customer.ActivityRecorded"


class CustomerActivityProjection:
    name = "customer_activity"
    tables = ("proj_customer_activity", "proj_customer_inbound_channels", "proj_customer_value")
    events = frozenset({InteractionRecorded.NAME, ACTIVITY_EVENT, CustomerMerged.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_customer_activity (
        customer_id uuid NOT NULL,
        day date NOT NULL,
        PRIMARY KEY (customer_id, day)
    );
    CREATE INDEX IF NOT EXISTS proj_customer_activity_day_idx ON proj_customer_activity (day, customer_id);
    CREATE TABLE IF NOT EXISTS proj_customer_inbound_channels (
        customer_id uuid NOT NULL,
        channel text NOT NULL,
        PRIMARY KEY (customer_id, channel)
    );
    CREATE TABLE IF NOT EXISTS proj_customer_value (
        customer_id uuid NOT NULL,
        currency text NOT NULL,
        amount_sum numeric NOT NULL,
        activities bigint NOT NULL,
        PRIMARY KEY (customer_id, currency)
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        days: dict[tuple, None] = {}
        channels: dict[tuple, None] = {}

        def flush() -> None:
            if channels:
                with bulk(curs, "stage_inbound_channels", _CHANNEL_COLUMNS, list(channels)) as (source, params):
                    curs.execute(
                        f"INSERT INTO proj_customer_inbound_channels SELECT u.customer_id, u.channel FROM {source} "
                        "ON CONFLICT DO NOTHING",
                        params,
                    )
                channels.clear()
            if days:
                with bulk(curs, "stage_customer_activity", _COLUMNS, list(days)) as (source, params):
                    curs.execute(
                        f"INSERT INTO proj_customer_activity SELECT u.customer_id, u.day FROM {source} "
                        "ON CONFLICT DO NOTHING",
                        params,
                    )
                days.clear()

        for _position, event, _redacted in items:
            kind = type(event)
            if kind is InteractionRecorded:
                if event.direction == "inbound" and event.kind != "status":
                    days[(event.stream_id, event.occurred_at.astimezone(UTC).date())] = None
                    channels[(event.stream_id, event.channel)] = None
            elif event.NAME == ACTIVITY_EVENT:
                days[(event.stream_id, event.occurred_at.astimezone(UTC).date())] = None
                amount = getattr(event, "amount", None)
                if amount is not None:
                    # Each activity is in the log once (per reference and type), and a batch is
                    # applied once (its position stored with the view): adding is exact.
                    currency = (getattr(event, "currency", None) or "").upper()
                    curs.execute(
                        "INSERT INTO proj_customer_value VALUES (%s, %s, %s, 1) ON CONFLICT (customer_id, currency) "
                        "DO UPDATE SET amount_sum = proj_customer_value.amount_sum + EXCLUDED.amount_sum, "
                        "activities = proj_customer_value.activities + 1",
                        (event.stream_id, currency, Decimal(str(amount))),
                    )
            elif kind is CustomerMerged:
                flush()
                curs.execute(
                    "INSERT INTO proj_customer_activity SELECT %s, day FROM proj_customer_activity "
                    "WHERE customer_id = %s ON CONFLICT DO NOTHING",
                    (event.stream_id, event.absorbed_id),
                )
                curs.execute("DELETE FROM proj_customer_activity WHERE customer_id = %s", (event.absorbed_id,))
                curs.execute(
                    "INSERT INTO proj_customer_inbound_channels SELECT %s, channel FROM proj_customer_inbound_channels "
                    "WHERE customer_id = %s ON CONFLICT DO NOTHING",
                    (event.stream_id, event.absorbed_id),
                )
                curs.execute("DELETE FROM proj_customer_inbound_channels WHERE customer_id = %s", (event.absorbed_id,))
                curs.execute(
                    "INSERT INTO proj_customer_value SELECT %s, currency, amount_sum, activities FROM proj_customer_value "
                    "WHERE customer_id = %s ON CONFLICT (customer_id, currency) DO UPDATE SET "
                    "amount_sum = proj_customer_value.amount_sum + EXCLUDED.amount_sum, "
                    "activities = proj_customer_value.activities + EXCLUDED.activities",
                    (event.stream_id, event.absorbed_id),
                )
                curs.execute("DELETE FROM proj_customer_value WHERE customer_id = %s", (event.absorbed_id,))
        flush()
        return []

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing personal: an id, the days it was active, the names of channels, sums of money."""
