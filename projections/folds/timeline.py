"""The timeline fold: rows of `proj_timeline`, streamed out as the log goes past."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from events.base import DomainEvent
from events.campaign import CampaignMessageSent
from events.case import CaseClassified
from events.customer import (
    ActivityRecorded,
    CustomerErased,
    CustomerMerged,
    InteractionRecorded,
    activity_summary,
)
from projections.folds.common import (
    Aliases,
    Columns,
    Correction,
    Order,
    RawJson,
    Rows,
    _encode,
    storable,
)
from services.platform.eventstore.codec import REDACTED

# -- timeline -----------------------------------------------------------------------------------

TIMELINE_COLUMNS: Columns = (
    ("interaction_id", "uuid"),
    ("customer_id", "uuid"),
    ("origin_customer_id", "uuid"),
    ("position", "int8"),
    ("occurred_at", "timestamptz"),
    ("channel", "text"),
    ("direction", "text"),
    ("kind", "text"),
    ("text", "text"),
    ("case_id", "uuid"),
    ("attachments", "jsonb"),
)
ALIAS_COLUMNS: Columns = (("absorbed_id", "uuid"), ("survivor_id", "uuid"))
REDACTION_COLUMNS: Columns = (("origin", "uuid"), ("before", "int8"))
CLASSES_COLUMNS: Columns = (
    ("interaction_id", "uuid"),
    ("language", "text"),
    ("sentiment", "text"),
    ("intent", "text"),
    ("occurred_at", "timestamptz"),
)


def attachments_json(attachments: Sequence[Any]) -> RawJson:
    if not attachments:
        return RawJson(b"[]")
    return RawJson(
        _encode(
            [{"name": a.name, "content_type": a.content_type, "size": a.size, "sha256": a.sha256} for a in attachments]
        )
    )


class TimelineFold:
    """proj_timeline (rows streamed to `sink` in log order), proj_customer_alias and proj_timeline_classes."""

    name = "timeline"
    streamed: tuple[str, Columns] | None = ("proj_timeline", TIMELINE_COLUMNS)
    # The same interaction recorded twice keeps its first row (live: ON CONFLICT DO NOTHING).
    duplicates = (
        "DELETE FROM proj_timeline t USING proj_timeline f "
        "WHERE t.interaction_id = f.interaction_id AND t.position > f.position"
    )

    def __init__(self, sink: Callable[[tuple], None]):
        self.sink = sink
        self.aliases = Aliases()
        self.redactions: list[tuple[UUID, int]] = []  # rows of this origin, recorded before this position
        self.classes: dict[UUID, tuple[Any, ...]] = {}  # interaction → its classification (the last)

    def apply(self, position: int, event: DomainEvent, redacted: bool) -> None:
        kind = type(event)
        if kind is InteractionRecorded:
            origin = event.stream_id
            storable(
                event.channel,
                event.direction,
                event.kind,
                event.text,
                *((a.name, a.content_type, a.sha256) for a in event.attachments),
            )
            self.sink(
                (
                    event.interaction_id,
                    self.aliases.resolve(origin),
                    origin,
                    position,
                    event.occurred_at,
                    event.channel,
                    event.direction,
                    event.kind,
                    event.text,
                    event.case_id,
                    attachments_json(event.attachments),
                )
            )
        elif kind is ActivityRecorded:
            text = activity_summary(event.type, event.reference, event.amount, event.currency)
            storable(event.type, text)
            origin = event.stream_id
            row = (event.interaction_id, self.aliases.resolve(origin), origin, position, event.occurred_at)
            self.sink((*row, "activity", "inbound", event.type, text, None, RawJson(b"[]")))
        elif kind is CampaignMessageSent:
            if event.message_id is None:
                return
            storable(event.channel, event.text)
            origin = event.recipient_id
            row = (event.message_id, self.aliases.resolve(origin), origin, position, event.occurred_at)
            self.sink((*row, event.channel, "outbound", "campaign", event.text, None, RawJson(b"[]")))
        elif kind is CaseClassified:
            self.classes[event.interaction_id] = (
                event.interaction_id,
                event.language,
                event.sentiment,
                event.intent,
                event.occurred_at,
            )
        elif kind is CustomerMerged:
            self.aliases.merge(event.stream_id, event.absorbed_id)
        elif kind is CustomerErased:
            # erase(): rows WHERE customer_id = X (whoever is aliased to X) OR origin_customer_id = X.
            self.redactions.extend((origin, position) for origin in self.aliases.owned_by(event.stream_id))

    def array_values(self) -> set[str]:
        return set()

    def rows(self, order: Order) -> Rows:
        return {
            "proj_customer_alias": (ALIAS_COLUMNS, list(self.aliases.survivor.items())),
            "proj_timeline_classes": (CLASSES_COLUMNS, list(self.classes.values())),
        }

    def corrections(self) -> list[Correction]:
        out: list[Correction] = [
            # A row follows its customer into every merge recorded after it.
            (
                "UPDATE proj_timeline t SET customer_id = a.survivor_id FROM proj_customer_alias a "
                "WHERE t.origin_customer_id = a.absorbed_id AND t.customer_id <> a.survivor_id",
                (),
                None,
            )
        ]
        if self.redactions:
            out.append(
                (
                    "UPDATE proj_timeline t SET text = %s, attachments = '[]' FROM stage s "
                    "WHERE t.origin_customer_id = s.origin AND t.position < s.before",
                    (REDACTED,),
                    (REDACTION_COLUMNS, self.redactions),
                )
            )
        return out
