"""The automation rules read model: each rule as its last save left it (`automation.Configured`),
with how often it fired and when last (`automation.Fired`): what `GET /api/v1/automations` lists.

Rules hold no personal data, and a firing only ids and kinds of action: erasing a customer changes
nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.automation import AutomationConfigured, AutomationFired
from projections.base import Item

_json = msgspec.json.Encoder()


class AutomationsProjection:
    name = "automations"
    tables = ("proj_automations",)
    events = frozenset({AutomationConfigured.NAME, AutomationFired.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_automations (
        name text PRIMARY KEY,
        version bigint NOT NULL,
        on_type text NOT NULL,
        condition jsonb,
        actions jsonb NOT NULL,
        enabled boolean NOT NULL,
        created_at timestamptz NOT NULL,
        updated_by text NOT NULL,
        updated_at timestamptz NOT NULL,
        fired bigint NOT NULL DEFAULT 0,
        last_fired_at timestamptz,
        position bigint NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        live = []
        for position, event, _redacted in items:
            kind = type(event)
            if kind is AutomationConfigured:
                curs.execute(
                    "INSERT INTO proj_automations (name, version, on_type, condition, actions, enabled, created_at, "
                    "updated_by, updated_at, position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET version = excluded.version, on_type = excluded.on_type, "
                    "condition = excluded.condition, actions = excluded.actions, enabled = excluded.enabled, "
                    "updated_by = excluded.updated_by, updated_at = excluded.updated_at, position = excluded.position "
                    "WHERE proj_automations.position < excluded.position",
                    (
                        event.name,
                        event.version,
                        event.on,
                        None if event.condition is None else _json.encode(event.condition).decode(),
                        _json.encode(event.actions).decode(),
                        event.enabled,
                        event.occurred_at,
                        event.by,
                        event.occurred_at,
                        position,
                    ),
                )
                live.append({"type": "automation", "automation": event.name})
            elif kind is AutomationFired:
                curs.execute(
                    "UPDATE proj_automations SET fired = fired + 1, "
                    "last_fired_at = GREATEST(last_fired_at, %s) WHERE name = %s",
                    (event.occurred_at, event.rule),
                )
        return live

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing of a customer's is here."""
