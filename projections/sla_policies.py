"""SLA policies as last configured: what `GET /api/v1/sla-policies` lists."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.config import SlaPolicyConfigured
from projections.base import Item

_json = msgspec.json.Encoder()


class SlaPoliciesProjection:
    name = "sla_policies"
    tables = ("proj_sla_policies",)
    events = frozenset({SlaPolicyConfigured.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_sla_policies (
        name text PRIMARY KEY,
        first_response jsonb NOT NULL,
        next_response jsonb NOT NULL,
        resolution jsonb NOT NULL,
        business_hours jsonb,
        configured_by text NOT NULL,
        configured_at timestamptz NOT NULL,
        position bigint NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        for position, event, _redacted in items:
            if type(event) is not SlaPolicyConfigured:
                continue
            hours = None if event.business_hours is None else _json.encode(event.business_hours).decode()
            curs.execute(
                "INSERT INTO proj_sla_policies VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE "
                "SET first_response = excluded.first_response, next_response = excluded.next_response, "
                "resolution = excluded.resolution, business_hours = excluded.business_hours, "
                "configured_by = excluded.configured_by, configured_at = excluded.configured_at, "
                "position = excluded.position WHERE proj_sla_policies.position < excluded.position",
                (
                    event.name,
                    _json.encode(event.first_response).decode(),
                    _json.encode(event.next_response).decode(),
                    _json.encode(event.resolution).decode(),
                    hours,
                    event.by,
                    event.occurred_at,
                    position,
                ),
            )
        return []

    def erase(self, curs, customer_ids: Sequence) -> None:
        """No personal data here."""
