"""The audit anchor's signature: any field changed, or another key, and it no longer verifies."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from services.platform.eventstore import anchor as anchors

pytestmark = pytest.mark.unit

KEY = b"a" * 32
AT = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)


def test_a_signed_anchor_reads_back() -> None:
    chain = os.urandom(32)
    anchor = anchors.sign(KEY, 1234, chain, AT)
    read = anchors.decode(anchors.encode(anchor), KEY)
    assert (read.position, bytes.fromhex(read.chain), read.at) == (1234, chain, AT)


@pytest.mark.parametrize("change", [{"position": 1233}, {"chain": "00" * 32}, {"at": AT - timedelta(days=1)}])
def test_any_field_changed_is_a_forgery(change: dict) -> None:
    anchor = msgspec.structs.replace(anchors.sign(KEY, 1234, os.urandom(32), AT), **change)
    with pytest.raises(anchors.AnchorError, match="anchor forged"):
        anchors.decode(anchors.encode(anchor), KEY)


def test_another_key_is_a_forgery() -> None:
    with pytest.raises(anchors.AnchorError, match="anchor forged"):
        anchors.decode(anchors.encode(anchors.sign(b"b" * 32, 7, os.urandom(32), AT)), KEY)


@pytest.mark.parametrize(
    "data", [b"", b"{", b'{"position": "x"}', b'{"position": 1, "chain": "zz", "at": "2026-01-01T00:00:00Z"}']
)
def test_garbage_is_unreadable(data: bytes) -> None:
    with pytest.raises(anchors.AnchorError, match="anchor unreadable"):
        anchors.decode(data, KEY)
