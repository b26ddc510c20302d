"""Campaigns, listed: one row per campaign (name, channel, status, when created) for
`GET /api/v1/campaigns`. A campaign's counts are read from its own stream when asked (they are
the campaign aggregate's), so this read model holds no per-recipient rows and nothing personal."""

from __future__ import annotations

from collections.abc import Sequence

from events.campaign import CampaignCompleted, CampaignCreated, CampaignFailed, CampaignPaused, CampaignStarted
from projections.base import Item

_STATUS = {
    CampaignStarted: "running",
    CampaignPaused: "paused",
    CampaignCompleted: "completed",
    CampaignFailed: "failed",
}


class CampaignsProjection:
    name = "campaigns"
    tables = ("proj_campaigns",)
    events = frozenset({CampaignCreated.NAME, *(kind.NAME for kind in _STATUS)})
    schema = """
    CREATE TABLE IF NOT EXISTS proj_campaigns (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        channel text NOT NULL,
        status text NOT NULL,
        created_at timestamptz NOT NULL
    );
    """

    def apply(self, curs, items: Sequence[Item]) -> list[dict]:
        live: list[dict] = []
        for _position, event, _redacted in items:
            kind = type(event)
            if kind is CampaignCreated:
                curs.execute(
                    "INSERT INTO proj_campaigns VALUES (%s, %s, %s, 'draft', %s) ON CONFLICT DO NOTHING",
                    (event.stream_id, event.name, event.channel, event.occurred_at),
                )
            elif kind in _STATUS:
                curs.execute("UPDATE proj_campaigns SET status = %s WHERE id = %s", (_STATUS[kind], event.stream_id))
            else:
                continue
            live.append({"type": "campaign", "campaign_id": str(event.stream_id)})
        return live

    def erase(self, curs, customer_ids: Sequence) -> None:
        """Nothing personal is kept here."""
