"""Campaign messages on the recipients' timelines (from `campaign.MessageSent`): one row each,
following a merge and an erasure recorded after them, and `projections rebuild` (the timeline's fold)
builds exactly what the live projection built."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from projections.runner import ProjectionRunner
from services.core.commands import append_new, erase_customer
from services.core.merging import merge_by_hand
from services.domain.campaign import Campaign
from services.platform.eventstore.codec import REDACTED
from tests.benchmarks import _eventlog
from tests.fixtures.campaigns import running_campaign
from tests.integration.test_projections_rebuild import differences, dump

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def campaign_for(recipients: list[uuid.UUID], *, with_ids: bool) -> Campaign:
    campaign = running_campaign(len(recipients), AT)
    for recipient in recipients:
        if with_ids:
            campaign.sent(recipient, AT, message_id=uuid.uuid4(), channel="sms", text="20% off")
        else:  # as recorded before MessageSent carried what went out
            campaign.sent(recipient, AT)
    return campaign


def campaign_rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT interaction_id, customer_id, origin_customer_id, channel, direction, text, case_id "
            "FROM proj_timeline WHERE kind = 'campaign' ORDER BY interaction_id"
        ).fetchall()


def test_campaign_messages_on_the_timeline_rebuild_to_what_live_built(store, database_url):
    live = ProjectionRunner(store, batch_size=7)
    _eventlog.write(store, _eventlog.events(customers=12, target=400, merge_rate=0.0, seed=11), batch=200)
    live.catch_up()
    with psycopg.connect(database_url) as conn:
        customers = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT originator_id FROM sb_events WHERE topic = 'customer.Registered' "
                "ORDER BY originator_id LIMIT 4"
            )
        ]
    survivor, absorbed, erased, old = customers
    sent = campaign_for([survivor, absorbed, erased], with_ids=True)
    append_new(store, sent)
    append_new(store, campaign_for([old], with_ids=False))
    live.catch_up()
    merge_by_hand(store, survivor, absorbed, "test", AT)
    erase_customer(store, erased, "test", AT)
    live.catch_up()

    rows = campaign_rows(database_url)
    by_origin = {r[2]: r for r in rows}
    assert sorted(by_origin) == sorted([survivor, absorbed, erased])  # the old-format event shows nothing
    assert by_origin[absorbed][1] == survivor  # followed the merge
    assert by_origin[erased][5] == REDACTED  # the erasure reaches it like any item of theirs
    assert by_origin[survivor][3:] == ("sms", "outbound", "20% off", None)
    before = dump(database_url, ("proj_timeline",))

    ProjectionRunner(store).rebuild()

    after = dump(database_url, ("proj_timeline",))
    assert after == before, differences(after["proj_timeline"], before["proj_timeline"])
    assert campaign_rows(database_url) == rows
