"""What became of a campaign's messages: delivered (or not) as the provider reported, and replied to.

`sb_campaign_messages` holds one row per message a provider took, written by the campaigner as soon
as the provider answered (before the send is in the log, so a quick status callback finds it):
the keyed hash of the provider's message id, as `sb_outbound` keeps those of replies.

- Delivery: the core reads every status callback; one for no reply of ours but for a campaign's
  message marks its row with the first decisive word (`delivered`/`failed`: services.core.batch_sql
  `mark_campaign_message`), in the transaction that records the callback as processed, so a repeated
  callback changes nothing. The campaigner's tick turns each marked row into a campaign event
  (`campaign.MessageDelivered` / `MessageUndelivered`) and flags it recorded, in one transaction.
- Replies: the campaigner's log follower sees every inbound message (`customer.InteractionRecorded`);
  one from a recipient on the campaign's channel within `campaign_reply_window_seconds` after the
  send of their latest such campaign message records `campaign.MessageReplied`, first reply only,
  exactly once with the follower's position. Never in the core's hot ingest path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from events.campaign import CAMPAIGN_CHANNELS
from events.customer import InteractionRecorded
from services.domain.campaign import Campaign
from services.platform.eventstore.store import EventStore, Transaction

REPORTED_PAGE = 500

Campaigns = Callable[[UUID], Campaign]  # the campaign as this transaction has it so far


def remember_message(
    store: EventStore,
    campaign_id: UUID,
    recipient_id: UUID,
    channel: str,
    provider_message_id: str | None,
    sent_at: datetime,
) -> None:
    """The provider took a campaign's message: its row, committed at once (idempotent)."""
    blind = store.master.outbound_blind(channel, provider_message_id) if provider_message_id else None
    with store.datastore.transaction(commit=True) as curs:
        curs.execute(
            "INSERT INTO sb_campaign_messages (campaign_id, recipient_id, channel, provider_blind, sent_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (campaign_id, recipient_id) DO UPDATE SET "
            "provider_blind = COALESCE(sb_campaign_messages.provider_blind, EXCLUDED.provider_blind)",
            (campaign_id, recipient_id, channel, blind, sent_at),
        )


def record_reported(tx: Transaction, campaigns: Campaigns, at: datetime) -> None:
    """Statuses the core marked since the last tick, as campaign events (each row once)."""
    rows = tx.execute(
        "SELECT campaign_id, recipient_id, delivery, delivery_reason FROM sb_campaign_messages "
        "WHERE delivery IS NOT NULL AND NOT delivery_recorded ORDER BY campaign_id, recipient_id LIMIT %s",
        (REPORTED_PAGE,),
    ).fetchall()
    for row in rows:
        campaign = campaigns(row["campaign_id"])
        if row["recipient_id"] not in campaign.outcomes:
            continue  # the send itself is not in the log yet (a crash in between): a later tick
        if row["delivery"] == "delivered":
            campaign.delivered(row["recipient_id"], at)
        else:
            campaign.undelivered(row["recipient_id"], row["delivery_reason"] or "undelivered", at)
        tx.execute(
            "UPDATE sb_campaign_messages SET delivery_recorded = true WHERE campaign_id = %s AND recipient_id = %s",
            (row["campaign_id"], row["recipient_id"]),
        )


def record_reply(tx: Transaction, campaigns: Campaigns, event: InteractionRecorded, window: timedelta) -> None:
    """An inbound message: the reply to the latest campaign message its sender got on that channel
    within the window, if that one has none yet. The sender is the customer or anyone merged into them."""
    if event.direction != "inbound" or event.channel not in CAMPAIGN_CHANNELS or event.kind == "status":
        return
    at = event.occurred_at
    row = tx.execute(
        "SELECT campaign_id, recipient_id, replied_at FROM sb_campaign_messages "
        "WHERE recipient_id = ANY(%s) AND channel = %s AND sent_at <= %s AND sent_at >= %s "
        "ORDER BY sent_at DESC, campaign_id LIMIT 1",
        (_family(tx, event.stream_id), event.channel, at, at - window),
    ).fetchone()
    if row is None or row["replied_at"] is not None:
        return
    tx.execute(
        "UPDATE sb_campaign_messages SET replied_at = %s WHERE campaign_id = %s AND recipient_id = %s",
        (at, row["campaign_id"], row["recipient_id"]),
    )
    campaigns(row["campaign_id"]).reply_received(row["recipient_id"], at)


def _family(tx: Transaction, customer_id: UUID) -> list[UUID]:
    rows = tx.execute("SELECT absorbed_id FROM sb_customer_aliases WHERE survivor_id = %s", (customer_id,)).fetchall()
    return [customer_id, *(r["absorbed_id"] for r in rows)]
