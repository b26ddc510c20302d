"""The customer profile: name, identities (verified and claimed), channels, first and last seen."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.customer import (
    CustomerAbsorbed,
    CustomerErased,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    ProfileUpdated,
)
from projections.base import Item


class ProfileProjection:
    name = "profile"
    tables = ("proj_customers", "proj_identities")
    schema = """
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
        erased boolean NOT NULL DEFAULT false
    );
    CREATE TABLE IF NOT EXISTS proj_identities (
        customer_id uuid NOT NULL,
        kind text NOT NULL,
        value text NOT NULL,
        verified boolean NOT NULL,
        PRIMARY KEY (customer_id, kind, value)
    );
    CREATE INDEX IF NOT EXISTS proj_identities_value_idx ON proj_identities (lower(value));
    CREATE INDEX IF NOT EXISTS proj_customers_name_idx ON proj_customers (lower(name));
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        touches: dict = {}  # customer id → [count, last_seen, channels]
        live: list[dict] = []

        def flush() -> None:
            if not touches:
                return
            ids = list(touches)
            curs.execute(
                "UPDATE proj_customers c SET interaction_count = c.interaction_count + u.n, "
                "last_seen = GREATEST(c.last_seen, u.seen), "
                "channels = ARRAY(SELECT DISTINCT x FROM unnest(c.channels || string_to_array(u.chs, ',')) x ORDER BY x) "
                "FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[], %s::text[]) AS u(id, n, seen, chs) "
                "WHERE c.id = u.id",
                (ids, [touches[i][0] for i in ids], [touches[i][1] for i in ids],
                 [",".join(sorted(touches[i][2])) for i in ids]),
            )
            touches.clear()

        for _position, event, _redacted in items:
            if isinstance(event, InteractionRecorded):
                entry = touches.setdefault(event.stream_id, [0, event.occurred_at, set()])
                entry[0] += 1
                entry[1] = max(entry[1], event.occurred_at)
                entry[2].add(event.channel)
                continue
            flush()
            if isinstance(event, CustomerRegistered):
                curs.execute("INSERT INTO proj_customers (id, first_seen, last_seen) VALUES (%s, %s, %s) "
                             "ON CONFLICT (id) DO NOTHING", (event.stream_id, event.occurred_at, event.occurred_at))
            elif isinstance(event, IdentityLinked | IdentityClaimed):
                verified = isinstance(event, IdentityLinked)
                curs.execute("INSERT INTO proj_identities VALUES (%s, %s, %s, %s) ON CONFLICT (customer_id, kind, value) "
                             "DO UPDATE SET verified = proj_identities.verified OR EXCLUDED.verified",
                             (event.stream_id, event.kind, event.value, verified))
            elif isinstance(event, ProfileUpdated):
                name = event.attributes.get("name")
                curs.execute(
                    "UPDATE proj_customers SET attributes = attributes || %s::jsonb, "
                    "name = CASE WHEN %s::text IS NOT NULL AND (%s OR name IS NULL OR NOT name_verified) THEN %s ELSE name END, "
                    "name_verified = name_verified OR (%s::text IS NOT NULL AND %s) WHERE id = %s",
                    (msgspec.json.encode(event.attributes).decode(), name, event.verified, name, name, event.verified,
                     event.stream_id))
            elif isinstance(event, CustomerMerged):
                survivor, absorbed = event.stream_id, event.absorbed_id
                curs.execute(
                    "UPDATE proj_customers s SET interaction_count = s.interaction_count + a.interaction_count, "
                    "first_seen = LEAST(s.first_seen, a.first_seen), last_seen = GREATEST(s.last_seen, a.last_seen), "
                    "channels = ARRAY(SELECT DISTINCT x FROM unnest(s.channels || a.channels) x ORDER BY x) "
                    "FROM proj_customers a WHERE s.id = %s AND a.id = %s", (survivor, absorbed))
                curs.execute("INSERT INTO proj_identities SELECT %s, kind, value, verified FROM proj_identities "
                             "WHERE customer_id = %s ON CONFLICT DO NOTHING", (survivor, absorbed))
                curs.execute("UPDATE proj_customers SET merged_into = %s WHERE id = %s OR merged_into = %s",
                             (survivor, absorbed, absorbed))
                live.append({"type": "customer", "customer_id": str(survivor), "merged": str(absorbed)})
            elif isinstance(event, CustomerAbsorbed):
                curs.execute("UPDATE proj_customers SET merged_into = %s WHERE id = %s", (event.survivor_id, event.stream_id))
            elif isinstance(event, CustomerErased):
                curs.execute("UPDATE proj_customers SET name = NULL, attributes = '{}', erased = true "
                             "WHERE id = %s OR merged_into = %s", (event.stream_id, event.stream_id))
                curs.execute("DELETE FROM proj_identities WHERE customer_id = %s OR customer_id IN "
                             "(SELECT id FROM proj_customers WHERE merged_into = %s)", (event.stream_id, event.stream_id))
        flush()
        return live
