"""Channels, identity kinds, statuses and priorities are spelt once, as Literals in events/."""

from __future__ import annotations

from typing import get_args

import pytest

from events.case import CASE_STATUSES, PRIORITIES, CaseStatus, Priority
from events.interactions import CHANNELS, IDENTITY_KINDS, MACHINE_KINDS, Channel, IdentityKind, InteractionKind

pytestmark = pytest.mark.unit


def test_the_tuples_are_the_literals():
    # "activity": business activities on the timeline (the contract's `channel: "activity"`), inbound only
    channels = ("email", "sms", "chat", "whatsapp", "messenger", "instagram", "telegram", "activity")
    assert CHANNELS == get_args(Channel) == channels
    assert IDENTITY_KINDS == get_args(IdentityKind)
    assert set(IDENTITY_KINDS) == {"email", "phone", "messenger", "instagram", "telegram", "chat", "external"}
    assert CASE_STATUSES == get_args(CaseStatus) == ("open", "pending", "snoozed", "resolved")
    assert PRIORITIES == get_args(Priority) == ("low", "normal", "high", "urgent")
    assert set(MACHINE_KINDS) <= set(get_args(InteractionKind))
