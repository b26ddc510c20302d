"""A projection turns a run of stored events into rows of its read model.

`apply(curs, items)` gets (position, event, redacted) tuples in log order and must be idempotent:
the runner stores the projection's position in the same transaction, so after a crash the batch is
simply applied again from the stored position, and `rebuild` starts again from zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from events.base import DomainEvent

Item = tuple[int, DomainEvent, bool]


class Projection(Protocol):
    name: str
    schema: str
    tables: tuple[str, ...]

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        """Writes the view; returns live notifications ({"type": ..., ...}) for the agent console."""
        ...


def resolve_alias_sql(param: str = "%s") -> str:
    """SQL for 'the survivor of this customer id, or itself'."""
    return f"COALESCE((SELECT survivor_id FROM proj_customer_alias WHERE absorbed_id = {param}), {param})"


ALIAS_SCHEMA = """
CREATE TABLE IF NOT EXISTS proj_customer_alias (
    absorbed_id uuid PRIMARY KEY,
    survivor_id uuid NOT NULL
);
"""
