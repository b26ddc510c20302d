"""A stream that already has the configuration asked for is left alone (no update request). No I/O."""

from __future__ import annotations

import dataclasses

import pytest

from services.platform.streams import Names, _same_config, stream_configs

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
