"""The customer profile: name, identities (verified and claimed), channels, first and last seen.

Writes are gathered per batch and sent as a few set-based statements (registrations, identities,
profile changes, touch counters), in that order; merges and erasures are rare and flush what was
gathered before them, so the result is the same as applying every event one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.customer import (
    CustomerAbsorbed,
    CustomerAttributesSet,
    CustomerErased,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    ProfileUpdated,
)
from projections.base import Item, bulk, rounds

_encode = msgspec.json.Encoder().encode
_IDENTITY_COLUMNS = (("customer_id", "uuid"), ("kind", "text"), ("value", "text"), ("verified", "bool"))
_TOUCH_COLUMNS = (("id", "uuid"), ("n", "int8"), ("seen", "timestamptz"), ("chs", "text"))
_PROFILE_COLUMNS = (("id", "uuid"), ("attrs", "text"), ("name", "text"), ("verified", "bool"))

# Databases made before custom attributes get the column (looked up first: altering a table locks it
# even when there is nothing to do).
CUSTOM_ATTRIBUTES_COLUMN = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'proj_customers' AND column_name = 'custom_attributes') THEN
        ALTER TABLE proj_customers ADD COLUMN custom_attributes jsonb NOT NULL DEFAULT '{}';
    END IF;
END $$;
"""


class ProfileProjection:
    name = "profile"
    tables = ("proj_customers", "proj_identities")
    schema = (
        """
    CREATE TABLE IF NOT EXISTS proj_customers (
        id uuid PRIMARY KEY,
        name text,
        name_verified boolean NOT NULL DEFAULT false,
        attributes jsonb NOT NULL DEFAULT '{}',
        first_seen timestamptz NOT NULL,
        last_seen timestamptz NOT NULL,
        interaction_count bigint NOT NULL DEFAULT 0,
        channels text[] NOT NULL DEFAULT '{}',
        merged_into uuid,
        erased boolean NOT NULL DEFAULT false,
        custom_attributes jsonb NOT NULL DEFAULT '{}'
    ) WITH (fillfactor = 80);
    -- Room on each page: a customer's counters change with every message, and an update that finds
    -- room on its page (HOT) leaves the name's search indexes alone. Built so by a rebuild; on an
    -- older read model, for the pages written from now on (looked for first: altering locks the table).
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = 'proj_customers'::regclass
                       AND reloptions @> '{fillfactor=80}') THEN
            ALTER TABLE proj_customers SET (fillfactor = 80);
        END IF;
    END $$;
    CREATE TABLE IF NOT EXISTS proj_identities (
        customer_id uuid NOT NULL,
        kind text NOT NULL,
        value text NOT NULL,
        verified boolean NOT NULL,
        PRIMARY KEY (customer_id, kind, value)
    );
    CREATE INDEX IF NOT EXISTS proj_identities_value_idx ON proj_identities (lower(value));
    CREATE INDEX IF NOT EXISTS proj_customers_name_idx ON proj_customers (lower(name));
    -- Who was merged into a customer (a merge moves them on, an erasure finds them): few rows, and
    -- without it every merge read all customers (issue 13: 9–12 ms a merge at 20,000 customers).
    CREATE INDEX IF NOT EXISTS proj_customers_merged_idx ON proj_customers (merged_into)
        WHERE merged_into IS NOT NULL;
    -- Full-text search (services/api/search.py; sb_search_vector: services/platform/schema.py).
    CREATE INDEX IF NOT EXISTS proj_customers_search_idx ON proj_customers USING gin (sb_search_vector(name));
    CREATE INDEX IF NOT EXISTS proj_identities_search_idx ON proj_identities USING gin (sb_search_vector(value));
    -- A part of a name or an address (services/api/queries.py search_customers): trigrams (pg_trgm).
    CREATE INDEX IF NOT EXISTS proj_customers_fold_idx ON proj_customers USING gin (sb_search_fold(name) gin_trgm_ops);
    CREATE INDEX IF NOT EXISTS proj_identities_fold_idx ON proj_identities
        USING gin (sb_search_fold(value) gin_trgm_ops);
    """
        + CUSTOM_ATTRIBUTES_COLUMN
    )

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        registered: list[tuple] = []
        identities: dict[tuple, bool] = {}  # (customer, kind, value) → verified
        profiles: list[tuple] = []  # (customer, attributes json, name, verified), in log order
        touches: dict = {}  # customer id → [count, last_seen, channels]
        live: list[dict] = []

        def flush() -> None:
            if registered:
                with bulk(curs, "stage_customers", (("i", "uuid"), ("s", "timestamptz")), registered) as (
                    source,
                    params,
                ):
                    curs.execute(
                        f"INSERT INTO proj_customers (id, first_seen, last_seen) SELECT u.i, u.s, u.s FROM {source} "
                        "ON CONFLICT (id) DO NOTHING",
                        params,
                    )
                registered.clear()
            if identities:
                rows = [(*k, v) for k, v in identities.items()]
                with bulk(curs, "stage_identities", _IDENTITY_COLUMNS, rows) as (source, params):
                    curs.execute(
                        f"INSERT INTO proj_identities SELECT u.customer_id, u.kind, u.value, u.verified FROM {source} "
                        "ON CONFLICT (customer_id, kind, value) DO UPDATE "
                        "SET verified = proj_identities.verified OR EXCLUDED.verified",
                        params,
                    )
                identities.clear()
            # One statement per round: a customer changed twice in a batch is changed twice, in order.
            for round_ in rounds(profiles):
                with bulk(curs, "stage_profiles", _PROFILE_COLUMNS, round_) as (source, params):
                    curs.execute(
                        "UPDATE proj_customers c SET attributes = c.attributes || u.attrs::jsonb, "
                        "name = CASE WHEN u.name IS NOT NULL AND (u.verified OR c.name IS NULL OR NOT c.name_verified) "
                        "THEN u.name ELSE c.name END, "
                        "name_verified = c.name_verified OR (u.name IS NOT NULL AND u.verified) "
                        f"FROM {source} WHERE c.id = u.id",
                        params,
                    )
            profiles.clear()
            if touches:
                rows = [(i, n, seen, ",".join(sorted(channels))) for i, (n, seen, channels) in touches.items()]
                with bulk(curs, "stage_touches", _TOUCH_COLUMNS, rows) as (source, params):
                    curs.execute(
                        "UPDATE proj_customers c SET interaction_count = c.interaction_count + u.n, "
                        "last_seen = GREATEST(c.last_seen, u.seen), "
                        "channels = ARRAY(SELECT DISTINCT x FROM unnest(c.channels || string_to_array(u.chs, ',')) x "
                        f"ORDER BY x) FROM {source} WHERE c.id = u.id",
                        params,
                    )
                touches.clear()

        for _position, event, _redacted in items:
            kind = type(event)
            if kind is InteractionRecorded:
                entry = touches.get(event.stream_id)
                if entry is None:
                    touches[event.stream_id] = [1, event.occurred_at, {event.channel}]
                else:
                    entry[0] += 1
                    if event.occurred_at > entry[1]:
                        entry[1] = event.occurred_at
                    entry[2].add(event.channel)
            elif kind is CustomerRegistered:
                registered.append((event.stream_id, event.occurred_at))
            elif kind is IdentityLinked or kind is IdentityClaimed:
                key = (event.stream_id, event.kind, event.value)
                identities[key] = identities.get(key, False) or kind is IdentityLinked
            elif kind is ProfileUpdated:
                profiles.append(
                    (event.stream_id, _encode(event.attributes).decode(), event.attributes.get("name"), event.verified)
                )
            elif kind is CustomerMerged:
                flush()
                survivor, absorbed = event.stream_id, event.absorbed_id
                curs.execute(
                    "UPDATE proj_customers s SET interaction_count = s.interaction_count + a.interaction_count, "
                    "first_seen = LEAST(s.first_seen, a.first_seen), last_seen = GREATEST(s.last_seen, a.last_seen), "
                    "channels = ARRAY(SELECT DISTINCT x FROM unnest(s.channels || a.channels) x ORDER BY x) "
                    "FROM proj_customers a WHERE s.id = %s AND a.id = %s",
                    (survivor, absorbed),
                )
                curs.execute(
                    "INSERT INTO proj_identities SELECT %s, kind, value, verified FROM proj_identities "
                    "WHERE customer_id = %s ON CONFLICT DO NOTHING",
                    (survivor, absorbed),
                )
                curs.execute(
                    "UPDATE proj_customers SET merged_into = %s WHERE id = %s OR merged_into = %s",
                    (survivor, absorbed, absorbed),
                )
                live.append({"type": "customer", "customer_id": str(survivor), "merged": str(absorbed)})
            elif kind is CustomerAttributesSet:
                # Rare (an agent's PATCH): in order with what was gathered before it. None removes.
                flush()
                curs.execute(
                    "UPDATE proj_customers SET custom_attributes = jsonb_strip_nulls(custom_attributes || %s::jsonb) "
                    "WHERE id = %s",
                    (_encode(event.values).decode(), event.stream_id),
                )
            elif kind is CustomerAbsorbed:
                flush()
                curs.execute(
                    "UPDATE proj_customers SET merged_into = %s WHERE id = %s", (event.survivor_id, event.stream_id)
                )
            elif kind is CustomerErased:
                flush()
                self.erase(curs, [event.stream_id])
        flush()
        return live

    def erase(self, curs, customer_ids: Sequence) -> None:
        ids = list(customer_ids)
        curs.execute(
            "UPDATE proj_customers SET name = NULL, name_verified = false, attributes = '{}', custom_attributes = '{}', "
            "erased = true "
            "WHERE id = ANY(%s) OR merged_into = ANY(%s)",
            (ids, ids),
        )
        curs.execute(
            "DELETE FROM proj_identities WHERE customer_id = ANY(%s) OR customer_id IN "
            "(SELECT id FROM proj_customers WHERE merged_into = ANY(%s))",
            (ids, ids),
        )
