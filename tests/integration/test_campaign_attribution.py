"""Campaign attribution against the real database and event store: a provider status the core marked
becomes one campaign event, however often it was repeated, and only once the send itself is in the
log (a status may overtake it); a recipient's message counts as their reply once, only on the
campaign's channel and within the reply window, through the campaigner's log follower."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.interactions import Interaction
from services.campaigns.attribution import remember_message
from services.campaigns.campaigner import Campaigner
from services.core.batch_sql import mark_campaign_message
from services.core.commands import append_new, run_command
from services.domain.campaign import Campaign
from services.domain.customer import Customer
from tests.fixtures.campaigns import running_campaign

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def new_campaign(store, recipients: int) -> Campaign:
    campaign = running_campaign(recipients, AT)
    append_new(store, campaign)
    return campaign


def sent(store, campaign_id: uuid.UUID, recipient: uuid.UUID) -> None:
    run_command(store, Campaign, campaign_id, lambda c: c.sent(recipient, AT, channel="sms", text="20% off"))


def names(store, campaign_id: uuid.UUID) -> list[tuple[str, uuid.UUID | None]]:
    return [(e.NAME, getattr(e, "recipient_id", None)) for e in store.load(campaign_id)]


def test_a_reported_status_is_recorded_once_and_waits_for_its_send(store, settings):
    campaigner = Campaigner(store, settings, senders={})
    campaign = new_campaign(store, 2)
    a, b = uuid.uuid4(), uuid.uuid4()
    remember_message(store, campaign.id, a, "sms", "SM" + "a" * 32, AT)
    remember_message(store, campaign.id, b, "sms", "SM" + "b" * 32, AT)
    sent(store, campaign.id, a)  # b's send is not in the log yet (the campaigner's tick is under way)

    def mark(provider_id: str, outcome: str, reason: str | None = None) -> bool:
        with store.transaction() as tx:
            return mark_campaign_message(tx, "sms", store.master.outbound_blind("sms", provider_id), outcome, reason)

    assert mark("SM" + "a" * 32, "delivered")
    assert not mark("SM" + "a" * 32, "delivered")  # Twilio repeating its callback
    assert not mark("SM" + "a" * 32, "failed", "late")  # a later word
    assert mark("SM" + "b" * 32, "failed", "twilio error 30003")
    assert not mark("SM" + "c" * 32, "delivered")  # no campaign sent that one

    follower = campaigner.follower()
    follower.run_tick(AT)
    assert names(store, campaign.id)[-2:] == [("campaign.MessageSent", a), ("campaign.MessageDelivered", a)]
    sent(store, campaign.id, b)
    follower.run_tick(AT)
    follower.run_tick(AT)
    reported = [
        n for n in names(store, campaign.id) if n[0] in ("campaign.MessageDelivered", "campaign.MessageUndelivered")
    ]
    assert reported == [("campaign.MessageDelivered", a), ("campaign.MessageUndelivered", b)]
    undelivered = store.load(campaign.id)[-1]
    assert undelivered.reason == "twilio error 30003"
    assert Campaign.replay(campaign.id, store.load(campaign.id)).counts()["failed"] == 1


def message(channel: str, at: datetime) -> Interaction:
    return Interaction(id=uuid.uuid4(), channel=channel, direction="inbound", occurred_at=at, text="thanks!")


def test_the_first_reply_on_the_campaigns_channel_within_the_window_counts_once(store, settings):
    campaigner = Campaigner(store, settings.with_(campaign_reply_window_seconds=3600.0), senders={})
    follower = campaigner.follower()
    campaign = new_campaign(store, 2)
    late, replying = Customer.register(uuid.uuid4(), AT), Customer.register(uuid.uuid4(), AT)
    for customer in (late, replying):
        remember_message(store, campaign.id, customer.id, "sms", None, AT)
        sent(store, campaign.id, customer.id)
    late.record(message("sms", AT + timedelta(hours=2)), None)  # after the window
    replying.record(message("email", AT + timedelta(minutes=5)), None)  # another channel
    replying.record(message("sms", AT - timedelta(minutes=5)), None)  # before the send
    replying.record(message("sms", AT + timedelta(minutes=10)), None)  # the reply
    replying.record(message("sms", AT + timedelta(minutes=20)), None)  # a second one
    with store.transaction() as tx:
        tx.append([*late.collect(), *replying.collect()])
    follower.catch_up()
    follower.catch_up()
    assert [n for n in names(store, campaign.id) if n[0] == "campaign.MessageReplied"] == [
        ("campaign.MessageReplied", replying.id)
    ]
    replied = Campaign.replay(campaign.id, store.load(campaign.id))
    assert replied.counts()["replied"] == 1
