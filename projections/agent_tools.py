"""Agents' tools: the canned responses (deleted ones gone) and the custom attribute definitions.

Few rows, rarely changed: applied event by event. Rebuilt by this same `apply` (no fold needed).
"""

from __future__ import annotations

from collections.abc import Sequence

from events.config import AttributeDefined, CannedResponseCreated, CannedResponseDeleted
from projections.base import Item


class AgentToolsProjection:
    name = "agent_tools"
    tables = ("proj_canned_responses", "proj_attribute_definitions")
    events = frozenset({CannedResponseCreated.NAME, CannedResponseDeleted.NAME, AttributeDefined.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_canned_responses (
        id uuid PRIMARY KEY,
        shortcut text NOT NULL,
        text text NOT NULL,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS proj_attribute_definitions (
        key text PRIMARY KEY,
        type text NOT NULL,
        applies_to text NOT NULL,
        options text[] NOT NULL DEFAULT '{}',
        updated_by text NOT NULL,
        updated_at timestamptz NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        for _position, event, _redacted in items:
            kind = type(event)
            if kind is CannedResponseCreated:
                curs.execute(
                    "INSERT INTO proj_canned_responses VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (event.stream_id, event.shortcut, event.text, event.by, event.occurred_at),
                )
            elif kind is CannedResponseDeleted:
                curs.execute("DELETE FROM proj_canned_responses WHERE id = %s", (event.stream_id,))
            elif kind is AttributeDefined:
                curs.execute(
                    "INSERT INTO proj_attribute_definitions VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE "
                    "SET type = EXCLUDED.type, applies_to = EXCLUDED.applies_to, options = EXCLUDED.options, "
                    "updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
                    (event.key, event.type, event.applies_to, list(event.options), event.by, event.occurred_at),
                )
        return []

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing personal here: configuration written by agents, about no customer."""
