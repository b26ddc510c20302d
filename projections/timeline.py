"""The 360° timeline: every touchpoint of a customer, on every channel, newest first.

After a merge the absorbed customer's items belong to the survivor; after erasure the text of the
customer's items is gone from this table too. An inbound message's classification (case.Classified,
by the classifier role) is a row of `proj_timeline_classes` (language, sentiment, intent), read
with its timeline row; a row of its own, so that classifying never rewrites a timeline row.

A campaign's message is an outbound item of its recipient (from `campaign.MessageSent`: its
`message_id` is the item's id, `channel` and `text` what went out, kind `campaign`, no case);
events recorded before those fields existed show no item.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.campaign import CampaignMessageSent
from events.case import CaseClassified
from events.customer import ActivityRecorded, CustomerErased, CustomerMerged, InteractionRecorded, activity_summary
from projections.base import ALIAS_SCHEMA, Item, bulk
from services.platform.eventstore.codec import REDACTED

_STAGE_COLUMNS = (
    ("i", "uuid"),
    ("c", "uuid"),
    ("p", "int8"),
    ("o", "timestamptz"),
    ("ch", "text"),
    ("d", "text"),
    ("k", "text"),
    ("t", "text"),
    ("cs", "uuid"),
    ("at", "text"),
)
_CLASSIFIED_COLUMNS = (("i", "uuid"), ("l", "text"), ("s", "text"), ("n", "text"), ("o", "timestamptz"))


# Full-text search (services/api/search.py; sb_search_vector: services/platform/schema.py) reads the
# item's words from a stored column: ranking a candidate then costs a microsecond, not the tens that
# unaccenting and parsing its text again took (a common word matches a third of all items). Computed
# once on insert (and again only when the text changes: an erasure), the GIN index built on it.
# Read models made before the column get it (looked up first: altering a table locks it even when
# there is nothing to do, and adding it rewrites the table once), and lose the expression index
# that computed the same words a second time on every insert.
SEARCH_VECTOR_COLUMN = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'proj_timeline' AND column_name = 'search_vector') THEN
        ALTER TABLE proj_timeline
            ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (sb_search_vector(text)) STORED;
    END IF;
    IF to_regclass(quote_ident(current_schema()) || '.proj_timeline_search_idx') IS NOT NULL THEN
        EXECUTE format('DROP INDEX %I.proj_timeline_search_idx', current_schema());
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS proj_timeline_words_idx ON proj_timeline USING gin (search_vector);
-- Newest first over all customers: the search's recent items (a common word's newest matches).
CREATE INDEX IF NOT EXISTS proj_timeline_newest_idx ON proj_timeline (occurred_at DESC, interaction_id DESC);
"""


class TimelineProjection:
    name = "timeline"
    tables = ("proj_timeline", "proj_customer_alias", "proj_timeline_classes")
    schema = (
        ALIAS_SCHEMA
        + """
    CREATE TABLE IF NOT EXISTS proj_timeline (
        interaction_id uuid PRIMARY KEY,
        customer_id uuid NOT NULL,
        origin_customer_id uuid NOT NULL,
        position bigint NOT NULL,
        occurred_at timestamptz NOT NULL,
        channel text NOT NULL,
        direction text NOT NULL,
        kind text NOT NULL,
        text text NOT NULL,
        case_id uuid,
        attachments jsonb NOT NULL DEFAULT '[]',
        search_vector tsvector GENERATED ALWAYS AS (sb_search_vector(text)) STORED
    );
    CREATE TABLE IF NOT EXISTS proj_timeline_classes (
        interaction_id uuid PRIMARY KEY,
        language text NOT NULL,
        sentiment text NOT NULL,
        intent text NOT NULL,
        occurred_at timestamptz NOT NULL  -- the message's time (metrics' sentiment trend)
    );
    CREATE INDEX IF NOT EXISTS proj_timeline_classes_at_idx ON proj_timeline_classes (occurred_at);
    CREATE INDEX IF NOT EXISTS proj_timeline_customer_idx ON proj_timeline (customer_id, occurred_at DESC, interaction_id DESC);
    CREATE INDEX IF NOT EXISTS proj_timeline_case_idx ON proj_timeline (case_id, occurred_at);
    CREATE INDEX IF NOT EXISTS proj_timeline_origin_idx ON proj_timeline (origin_customer_id);
    """
        + SEARCH_VECTOR_COLUMN
    )

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        rows: list[tuple] = []
        classified: dict = {}  # interaction → its classification (the last of the batch)
        live: list[dict] = []

        def flush() -> None:
            if rows:
                with bulk(curs, "stage_timeline", _STAGE_COLUMNS, rows) as (source, params):
                    curs.execute(
                        "INSERT INTO proj_timeline (interaction_id, customer_id, origin_customer_id, position, occurred_at, "
                        "channel, direction, kind, text, case_id, attachments) "
                        "SELECT u.i, COALESCE(a.survivor_id, u.c), u.c, u.p, u.o, u.ch, u.d, u.k, u.t, u.cs, u.at::jsonb "
                        f"FROM {source} LEFT JOIN proj_customer_alias a ON a.absorbed_id = u.c "
                        "ON CONFLICT (interaction_id) DO NOTHING",
                        params,
                    )
                rows.clear()
            if classified:
                with bulk(curs, "stage_timeline_classes", _CLASSIFIED_COLUMNS, list(classified.values())) as (
                    source,
                    params,
                ):
                    curs.execute(
                        "INSERT INTO proj_timeline_classes (interaction_id, language, sentiment, intent, occurred_at) "
                        f"SELECT u.i, u.l, u.s, u.n, u.o FROM {source} ON CONFLICT (interaction_id) DO UPDATE "
                        "SET language = EXCLUDED.language, sentiment = EXCLUDED.sentiment, intent = EXCLUDED.intent, "
                        "occurred_at = EXCLUDED.occurred_at",
                        params,
                    )
                classified.clear()

        for position, event, _redacted in items:
            if isinstance(event, InteractionRecorded):
                attachments = (
                    "["
                    + ",".join(
                        '{"name": %s, "content_type": %s, "size": %d, "sha256": "%s"}'
                        % (_json_str(a.name), _json_str(a.content_type), a.size, a.sha256)
                        for a in event.attachments
                    )
                    + "]"
                    if event.attachments
                    else "[]"
                )
                rows.append(
                    (
                        event.interaction_id,
                        event.stream_id,
                        position,
                        event.occurred_at,
                        event.channel,
                        event.direction,
                        event.kind,
                        event.text,
                        event.case_id,
                        attachments,
                    )
                )
                live.append(
                    {
                        "type": "timeline",
                        "customer_id": str(event.stream_id),
                        "interaction_id": str(event.interaction_id),
                        "channel": event.channel,
                    }
                )
            elif isinstance(event, ActivityRecorded):
                text = activity_summary(event.type, event.reference, event.amount, event.currency)
                row = (event.interaction_id, event.stream_id, position, event.occurred_at, "activity", "inbound")
                rows.append((*row, event.type, text, None, "[]"))
                live.append(
                    {
                        "type": "timeline",
                        "customer_id": str(event.stream_id),
                        "interaction_id": str(event.interaction_id),
                        "channel": "activity",
                    }
                )
            elif isinstance(event, CampaignMessageSent):
                if event.message_id is None:
                    continue
                row = (event.message_id, event.recipient_id, position, event.occurred_at, event.channel, "outbound")
                rows.append((*row, "campaign", event.text, None, "[]"))
                live.append(
                    {
                        "type": "timeline",
                        "customer_id": str(event.recipient_id),
                        "interaction_id": str(event.message_id),
                        "channel": event.channel,
                    }
                )
            elif isinstance(event, CaseClassified):
                classified[event.interaction_id] = (
                    event.interaction_id,
                    event.language,
                    event.sentiment,
                    event.intent,
                    event.occurred_at,
                )
            elif isinstance(event, CustomerMerged):
                flush()
                survivor, absorbed = event.stream_id, event.absorbed_id
                curs.execute(
                    "UPDATE proj_customer_alias SET survivor_id = %s WHERE survivor_id = %s", (survivor, absorbed)
                )
                curs.execute(
                    "INSERT INTO proj_customer_alias VALUES (%s, %s) ON CONFLICT (absorbed_id) DO UPDATE "
                    "SET survivor_id = EXCLUDED.survivor_id",
                    (absorbed, survivor),
                )
                curs.execute("UPDATE proj_timeline SET customer_id = %s WHERE customer_id = %s", (survivor, absorbed))
            elif isinstance(event, CustomerErased):
                flush()
                self.erase(curs, [event.stream_id])
        flush()
        return live

    def erase(self, curs, customer_ids: Sequence) -> None:
        ids = list(customer_ids)
        curs.execute(
            "UPDATE proj_timeline SET text = %s, attachments = '[]' "
            "WHERE customer_id = ANY(%s) OR origin_customer_id = ANY(%s)",
            (REDACTED, ids, ids),
        )


def _json_str(value: str) -> str:
    return msgspec.json.encode(value).decode()
