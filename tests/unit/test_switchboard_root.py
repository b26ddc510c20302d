"""The composition root before it connects: nothing at construction, a clear error for NATS not yet there."""

from __future__ import annotations

import pytest

from services.bootstrap import NotConnected, Switchboard
from services.platform.settings import load_settings
from services.platform.streams import Names

pytestmark = pytest.mark.unit


def test_building_the_root_connects_nothing(tmp_path):
    # Unreachable URLs: building must not touch them (nothing connects at construction or import time).
    settings = load_settings(
        environ={},
        data_dir=tmp_path,
        nats_url="nats://127.0.0.1:9",
        database_url="postgresql://nobody@127.0.0.1:9/none",
    )
    sb = Switchboard(settings, Names())
    assert sb.nc is None and sb.js is None and sb.store is None and sb.core_consumer is None
    with pytest.raises(NotConnected):
        sb.jetstream()


async def test_closing_nats_that_never_opened_is_a_no_op(tmp_path):
    sb = Switchboard(load_settings(environ={}, data_dir=tmp_path))
    await sb.close_nats()
    await sb.close_nats()
    assert sb.nc is None
