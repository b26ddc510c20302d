"""A campaign whose segment this release refuses (a filter stored by an earlier release, with a
pattern outside today's RE2 subset) fails with the reason, once, and stalls nobody: the campaigner's
tick goes on to target the other running campaigns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from events.config import SegmentDefined
from services.campaigns.campaigner import Campaigner
from services.core.commands import append_new, run_command
from services.domain.campaign import Campaign
from services.domain.config import Segment
from tests.fixtures.campaigns import running_campaign

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _segment(store, name: str, filter: dict) -> uuid.UUID:
    """Stored as an earlier release did: straight into the log, not through today's parse."""
    segment = Segment(Segment.stream_id(name))
    segment._trigger(SegmentDefined, AT, name=name, filter=filter, by="earlier-release")
    append_new(store, segment)
    return segment.id


def _running(store, segment_id: uuid.UUID) -> Campaign:
    campaign = running_campaign(None, AT, segment_id)  # started, not yet targeted: the tick targets it
    append_new(store, campaign)
    return campaign


def test_a_refused_segment_fails_its_campaign_and_the_others_go_on(store, settings):
    refused = _segment(store, "backrefs", {"all": [{"field": "name", "op": "matches", "value": r"(a)\1"}]})
    fine = _segment(store, "nobody", {"all": [{"field": "name", "op": "eq", "value": "no such name " + "x" * 8}]})
    broken, healthy = _running(store, refused), _running(store, fine)

    follower = Campaigner(store, settings, senders={}).follower(lambda: AT)
    follower.catch_up()  # the campaigns' runs, from the log
    follower.run_tick(AT)
    follower.run_tick(AT)  # a second tick records nothing more

    failed = Campaign.replay(broken.id, store.load(broken.id))
    assert failed.status == "failed"
    assert failed.failure is not None and f"segment {refused}" in failed.failure
    assert "filter.all[0].value: not a valid pattern" in failed.failure, failed.failure
    assert [e.NAME for e in store.load(broken.id)].count("campaign.Failed") == 1
    other = Campaign.replay(healthy.id, store.load(healthy.id))
    assert other.targeted == 0 and other.status == "completed", "the other campaign was targeted and done"

    with pytest.raises(Exception, match="failed"):
        run_command(store, Campaign, broken.id, lambda c: c.start("supervisor", AT))
