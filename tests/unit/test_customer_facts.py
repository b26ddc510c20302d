"""A customer's consent and activities folded from their events, with the meaning segments give the
fields `consent.PURPOSE.CHANNEL`, `activities.TYPE.count` and `activities.amount.sum`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from events.customer import (
    ActivityRecorded,
    ConsentChanged,
    CustomerAbsorbed,
    CustomerErased,
    CustomerMerged,
    InteractionRecorded,
)
from services.domain.customer_facts import combine, fold, reads, value_of

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def _base(customer: uuid.UUID, version: int) -> dict:
    return {"id": uuid.uuid4(), "stream_id": customer, "version": version, "occurred_at": T0, "customer_id": customer}


def _message(customer, version, channel, direction="inbound", kind="message") -> InteractionRecorded:
    return InteractionRecorded(
        **_base(customer, version),
        interaction_id=uuid.uuid4(),
        channel=channel,
        direction=direction,
        kind=kind,
        text="hola",
        case_id=None,
    )


def _order(customer, version, amount=None, type_="order.placed") -> ActivityRecorded:
    return ActivityRecorded(
        **_base(customer, version),
        interaction_id=uuid.uuid4(),
        type=type_,
        reference=f"SO-{version}",
        source="shop",
        amount=amount,
        currency="EUR" if amount is not None else None,
    )


def _consent(customer, version, channel, granted) -> ConsentChanged:
    return ConsentChanged(
        **_base(customer, version), channel=channel, purpose="marketing", granted=granted, source="keyword:STOP"
    )


def test_activities_count_per_type_and_amounts_sum_over_every_type() -> None:
    ana = uuid.uuid4()
    facts = fold(
        [
            _order(ana, 1, Decimal("10.50")),
            _order(ana, 2, Decimal("4.50")),
            _order(ana, 3, None),
            _order(ana, 4, Decimal("2"), type_="invoice.paid"),
        ]
    )
    assert value_of(facts, "activities.order.placed.count", "implied") == 3
    assert value_of(facts, "activities.invoice.paid.count", "implied") == 1
    assert value_of(facts, "activities.order.delivered_late.count", "implied") == 0  # none: 0, as segments
    assert value_of(facts, "activities.amount.sum", "implied") == Decimal("17.00")
    assert value_of(fold([]), "activities.amount.sum", "implied") == 0


def test_consent_is_the_recorded_word_else_the_policy_over_the_channels_written_on() -> None:
    ana = uuid.uuid4()
    wrote = fold([_message(ana, 1, "sms"), _message(ana, 2, "email", direction="outbound")])
    # Implied: written to us by SMS; an email we sent is not the customer writing.
    assert value_of(wrote, "consent.marketing.sms", "implied") is True
    assert value_of(wrote, "consent.marketing.email", "implied") is False
    assert value_of(wrote, "consent.marketing.sms", "explicit") is False
    # A provider's status report is not the customer writing either.
    assert (
        value_of(fold([_message(ana, 1, "whatsapp", kind="status")]), "consent.marketing.whatsapp", "implied") is False
    )
    stopped = fold([_message(ana, 1, "sms"), _consent(ana, 2, "sms", False)])
    assert value_of(stopped, "consent.marketing.sms", "implied") is False
    granted = fold([_consent(ana, 1, "email", True)])
    assert value_of(granted, "consent.marketing.email", "explicit") is True


def test_a_merged_family_adds_up_activities_and_keeps_the_survivors_word() -> None:
    ana, bo = uuid.uuid4(), uuid.uuid4()
    survivor = fold(
        [
            _order(ana, 1, Decimal("1")),
            CustomerMerged(**_base(ana, 2), absorbed_id=bo),
            _consent(ana, 3, "sms", False),  # the survivor's own word
        ]
    )
    absorbed = fold(
        [
            _message(bo, 1, "whatsapp"),
            _consent(bo, 2, "sms", True),
            _order(bo, 3, Decimal("2")),
            CustomerAbsorbed(**_base(bo, 4), survivor_id=ana),
        ]
    )
    assert survivor.absorbed == [bo] and absorbed.survivor_id == ana
    family = combine([survivor, absorbed])
    assert value_of(family, "activities.order.placed.count", "implied") == 2
    assert value_of(family, "activities.amount.sum", "implied") == Decimal("3")
    assert value_of(family, "consent.marketing.sms", "implied") is False
    assert value_of(family, "consent.marketing.whatsapp", "implied") is True  # the absorbed wrote on it


def test_an_erased_customer_has_no_values_and_other_fields_are_not_read_here() -> None:
    ana = uuid.uuid4()
    erased = fold([_order(ana, 1, Decimal("5")), CustomerErased(**_base(ana, 2), requested_by="dpo")])
    assert value_of(erased, "activities.order.placed.count", "implied") is None
    assert value_of(fold([]), "name", "implied") is None
    assert reads("consent.marketing.sms") and reads("activities.amount.sum") and not reads("name")
