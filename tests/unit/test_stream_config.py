"""Stream configuration: a stream that already has what is asked for is left alone (no update
request), limits and discard policies per stream, an operator's changes kept. No I/O."""

from __future__ import annotations

import dataclasses

import pytest
from nats.js.api import DiscardPolicy

from services.platform.embedded import sync_interval
from services.platform.streams import (
    APPLIED_KEY,
    Names,
    StreamLimits,
    _applied_record,
    _same_config,
    reconcile,
    stream_configs,
)

pytestmark = pytest.mark.unit


def test_what_the_server_reports_back_counts_as_the_same():
    for wanted in stream_configs(Names(), 3600):
        # As the server returns it: subjects in another order, defaults filled in, floats re-encoded.
        current = dataclasses.replace(
            wanted,
            subjects=list(reversed(wanted.subjects)),
            max_age=wanted.max_age + 1e-9,
            duplicate_window=wanted.duplicate_window or 120.0,
            max_msgs=-1,
            max_bytes=-1,
        )
        assert _same_config(current, wanted)


@pytest.mark.parametrize(
    "change", [{"max_age": 7200.0}, {"num_replicas": 3}, {"subjects": ["other.>"]}, {"duplicate_window": 60.0}]
)
def test_any_setting_we_ask_for_that_differs_means_an_update(change):
    wanted = stream_configs(Names(), 3600)[0]
    assert not _same_config(dataclasses.replace(wanted, **change), wanted)


# -- limits, discard policies, and what an operator changed ---------------------------------------


LIMITS = StreamLimits(1 << 20, 2 << 20, 3 << 20)


def _wanted(limits=LIMITS, retention=3600):
    configs = {c.name: c for c in stream_configs(Names(), retention, 1, limits)}
    for config in configs.values():
        config.metadata = {APPLIED_KEY: _applied_record(config)}
    return configs


def test_each_stream_gets_its_limit_and_discard_policy():
    configs = _wanted()
    interactions, events, deadletters = configs["SB_INTERACTIONS"], configs["SB_EVENTS"], configs["SB_DEADLETTER"]
    assert (interactions.max_bytes, interactions.discard) == (1 << 20, DiscardPolicy.NEW)
    assert (events.max_bytes, events.discard, events.max_age) == (2 << 20, DiscardPolicy.OLD, 3600.0)
    # Dead letters: refused when full, never aged out.
    assert (deadletters.max_bytes, deadletters.discard, deadletters.max_age) == (3 << 20, DiscardPolicy.NEW, 0.0)


def test_a_stream_as_switchboard_made_it_needs_no_update():
    wanted = _wanted()["SB_INTERACTIONS"]
    update, kept = reconcile(dataclasses.replace(wanted), wanted)
    assert update is None and kept == {}


def test_an_operators_change_is_kept_and_reported():
    wanted = _wanted()["SB_INTERACTIONS"]
    current = dataclasses.replace(wanted, max_age=600.0, max_bytes=5 << 20)
    update, kept = reconcile(current, wanted)
    assert update is None
    assert set(kept) == {"max_age", "max_bytes"}


def test_a_changed_setting_reaches_a_stream_nobody_edited():
    current = _wanted()["SB_EVENTS"]
    wanted = _wanted(StreamLimits(1 << 20, 8 << 20, 3 << 20))["SB_EVENTS"]
    update, kept = reconcile(current, wanted)
    assert update is not None and update.max_bytes == 8 << 20 and kept == {}
    # ...and the record says so, so the next start needs no update.
    assert reconcile(update, wanted) == (None, {})


def test_the_operators_value_stays_when_the_setting_changes_too():
    old = _wanted()["SB_EVENTS"]
    current = dataclasses.replace(old, max_bytes=5 << 20)
    wanted = _wanted(StreamLimits(1 << 20, 8 << 20, 3 << 20))["SB_EVENTS"]
    update, kept = reconcile(current, wanted)
    assert "max_bytes" in kept
    assert update is None or update.max_bytes == 5 << 20


def test_a_missing_subject_is_added_and_the_operators_own_kept():
    wanted = _wanted()["SB_INTERACTIONS"]
    current = dataclasses.replace(wanted, subjects=["partner.inbound.>"])
    update, _ = reconcile(current, wanted)
    assert update is not None and update.subjects == ["partner.inbound.>", "sb.interactions.>"]


def test_a_stream_from_before_the_limits_gets_a_size_limit_with_discard_new():
    wanted = _wanted()["SB_INTERACTIONS"]
    current = dataclasses.replace(wanted, max_bytes=-1, discard=DiscardPolicy.OLD, max_age=7200.0, metadata=None)
    update, kept = reconcile(current, wanted)
    assert update is not None
    assert (update.max_bytes, update.discard, update.max_age) == (1 << 20, DiscardPolicy.NEW, 7200.0)
    assert set(kept) == {"max_age"}


@pytest.mark.parametrize("value", ["always", "1s", "500ms", "2m", "1m30s", " Always "])
def test_sync_interval_accepts_always_and_durations(value):
    assert sync_interval(value) == value.strip().lower()


@pytest.mark.parametrize("value", ["", "sometimes", "1", "5 s", "1d"])
def test_sync_interval_refuses_anything_else(value):
    with pytest.raises(ValueError, match="nats_sync_interval"):
        sync_interval(value)


def test_dead_letters_may_be_given_an_age_limit():
    configs = _wanted(StreamLimits(1 << 20, 2 << 20, 3 << 20, deadletter_max_age_seconds=86400))
    assert configs["SB_DEADLETTER"].max_age == 86400.0
