"""The queues read model: every queue's configuration as its last PUT left it (`queue.Configured`).

Counts (open, unassigned, breached) are not kept here: they are the cases' (proj_cases) and are
counted when asked (services/api/queues.py). A queue nobody configured (a channel's, before any PUT)
has no row: it is manual. Queues hold no personal data: erasing a customer changes nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence

from events.config import QueueConfigured
from projections.base import Item


class QueuesProjection:
    name = "queues"
    tables = ("proj_queues",)
    events = frozenset({QueueConfigured.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_queues (
        name text PRIMARY KEY,
        strategy text NOT NULL,
        team text,
        required_skills text[] NOT NULL DEFAULT '{}',
        sla_policy text,
        csat boolean NOT NULL DEFAULT false,
        updated_at timestamptz NOT NULL,
        position bigint NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        live = []
        for position, event, _redacted in items:
            if type(event) is not QueueConfigured:
                continue
            curs.execute(
                "INSERT INTO proj_queues (name, strategy, team, required_skills, sla_policy, csat, updated_at, position) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "strategy = excluded.strategy, team = excluded.team, required_skills = excluded.required_skills, "
                "sla_policy = excluded.sla_policy, csat = excluded.csat, updated_at = excluded.updated_at, "
                "position = excluded.position",
                (
                    event.name,
                    event.strategy,
                    event.team,
                    list(event.required_skills),
                    event.sla_policy,
                    event.csat,
                    event.occurred_at,
                    position,
                ),
            )
            live.append({"type": "queue", "queue": event.name})
        return live

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing of a customer's is here."""
