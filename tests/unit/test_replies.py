"""What a provider status or a bounce means for a reply we sent (services.domain.replies)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.case import CaseMessageAdded, ReplyDelivered, ReplyFailed, ReplySent
from events.customer import InteractionRecorded
from events.interactions import Interaction
from services.domain.case import Case
from services.domain.customer import Customer
from services.domain.replies import (
    StatusReport,
    StatusWithoutMessageId,
    bounce_report,
    delivery_outcome,
    record_delivery_status,
    record_outbound,
    status_report,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def case_with_reply(state: str = "sent") -> tuple[Case, uuid.UUID]:
    case = Case.open(uuid.uuid4(), uuid.uuid4(), "sms", None, T0)
    reply_id = uuid.uuid4()
    case.request_reply(reply_id, "on its way", "agent", T0)
    if state == "sent":
        case.reply_sent(reply_id, "SM1", T0)
    case.collect()
    return case, reply_id


def status(word: str | None, **fields) -> Interaction:
    return Interaction(
        **{
            "id": uuid.uuid4(),
            "channel": "sms",
            "direction": "outbound",
            "kind": "status",
            "occurred_at": T0 + timedelta(minutes=1),
            "provider_message_id": "SM1",
            "status": word,
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("word", "outcome"),
    [
        ("delivered", "delivered"),
        ("read", "delivered"),
        ("failed", "failed"),
        ("undelivered", "failed"),
        ("queued", None),
        ("sending", None),
        ("sent", None),
        (None, None),
        ("something new", None),
    ],
)
def test_what_a_status_word_means(word, outcome):
    assert delivery_outcome(word) == outcome


@pytest.mark.parametrize("word", ["delivered", "read"])
def test_delivered_or_read_marks_the_reply_delivered(word):
    case, reply_id = case_with_reply()
    assert record_delivery_status(case, reply_id, status_report(status(word))) == "delivered"
    [event] = case.collect()
    assert isinstance(event, ReplyDelivered) and event.reply_id == reply_id
    assert case.replies[reply_id] == "delivered"


def test_a_failure_carries_the_providers_error_or_the_status_word():
    case, reply_id = case_with_reply()
    record_delivery_status(case, reply_id, status_report(status("undelivered", meta={"error": "30003"})))
    [event] = case.collect()
    assert isinstance(event, ReplyFailed) and (event.reason, event.final) == ("30003", True)
    case, reply_id = case_with_reply("requested")
    record_delivery_status(case, reply_id, status_report(status("failed")))
    assert case.collect()[0].reason == "failed"


def test_an_intermediate_status_changes_nothing():
    case, reply_id = case_with_reply()
    assert record_delivery_status(case, reply_id, status_report(status("queued"))) is None
    assert case.collect() == []


def test_a_late_status_does_not_undo_an_outcome():
    case, reply_id = case_with_reply()
    record_delivery_status(case, reply_id, status_report(status("delivered")))
    case.collect()
    record_delivery_status(case, reply_id, status_report(status("failed")))
    assert case.collect() == []
    assert case.replies[reply_id] == "delivered"


def test_a_status_names_its_message_by_the_relays_ids_or_the_providers():
    case_id, reply_id = uuid.uuid4(), uuid.uuid4()
    ours = status_report(status("sent", provider_message_id=None, case_id=case_id, reply_id=reply_id))
    assert ours.from_relay and (ours.case_id, ours.reply_id) == (case_id, reply_id)
    assert not status_report(status("sent")).from_relay
    with pytest.raises(StatusWithoutMessageId):
        status_report(status("delivered", provider_message_id=None))


def test_a_bounce_is_the_failure_of_the_message_it_returns():
    bounce = Interaction(
        id=uuid.uuid4(),
        channel="email",
        direction="inbound",
        kind="bounce",
        occurred_at=T0,
        meta={"bounced_message_id": " <reply-1@switchboard> ", "bounce_status": "5.1.1"},
    )
    report = bounce_report(bounce)
    assert report == StatusReport(
        interaction_id=bounce.id,
        channel="email",
        provider_message_id="reply-1@switchboard",
        status="failed",
        error="bounced (5.1.1)",
        occurred_at=T0,
    )
    case, reply_id = case_with_reply()
    assert record_delivery_status(case, reply_id, report) == "failed"
    assert case.collect()[0].reason == "bounced (5.1.1)"
    plain = Interaction(
        id=uuid.uuid4(),
        channel="email",
        direction="inbound",
        kind="bounce",
        occurred_at=T0,
        meta={"bounced_message_id": "<reply-2@switchboard>"},
    )
    assert bounce_report(plain).error == "bounced"


def test_a_bounce_naming_no_message_means_nothing():
    bounce = Interaction(
        id=uuid.uuid4(),
        channel="email",
        direction="inbound",
        kind="bounce",
        occurred_at=T0,
        meta={"bounced_message_id": "  <> "},
    )
    assert bounce_report(bounce) is None


def test_a_relayed_reply_going_out_joins_the_case_and_the_timeline_and_is_sent():
    case, reply_id = case_with_reply("requested")
    customer = Customer.register(case.customer_id, T0)
    customer.collect()
    out = Interaction(
        id=uuid.uuid4(),
        channel="sms",
        direction="outbound",
        occurred_at=T0,
        text="on its way",
        case_id=case.id,
        reply_id=reply_id,
        provider_message_id="SM9",
    )
    record_outbound(case, customer, out)
    added, sent = case.collect()
    assert isinstance(added, CaseMessageAdded) and added.direction == "outbound"
    assert isinstance(sent, ReplySent) and sent.provider_message_id == "SM9"
    [recorded] = customer.collect()
    assert isinstance(recorded, InteractionRecorded) and recorded.case_id == case.id
