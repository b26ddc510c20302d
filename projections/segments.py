"""Segment definitions: each segment's name and filter as last defined (members are not kept here:
they are found when asked, services/segments/members.py).

Few rows, rarely changed: applied event by event, and rebuilt by this same `apply` (no fold).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.config import SegmentDefined
from projections.base import Item

_encode = msgspec.json.Encoder().encode


class SegmentsProjection:
    name = "segments"
    tables = ("proj_segments",)
    events = frozenset({SegmentDefined.NAME})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_segments (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        filter jsonb NOT NULL,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_by text NOT NULL,
        updated_at timestamptz NOT NULL,
        position bigint NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        for position, event, _redacted in items:
            if type(event) is SegmentDefined:
                curs.execute(
                    "INSERT INTO proj_segments VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
                    "SET name = EXCLUDED.name, filter = EXCLUDED.filter, updated_by = EXCLUDED.updated_by, "
                    "updated_at = EXCLUDED.updated_at, position = EXCLUDED.position",
                    (
                        event.stream_id,
                        event.name,
                        _encode(event.filter).decode(),
                        event.by,
                        event.occurred_at,
                        event.by,
                        event.occurred_at,
                        position,
                    ),
                )
        return []

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing personal here: configuration written by supervisors, about no one customer."""
