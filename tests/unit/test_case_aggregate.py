"""The case aggregate: the events each command emits, and how its status moves."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.case import (
    CaseAssigned,
    CaseMessageAdded,
    CaseNoteAdded,
    CaseOpened,
    CasePrioritized,
    CaseReopened,
    CaseResolved,
    CaseSnoozed,
    CaseTagged,
    CsatRecorded,
    ReplyDelivered,
    ReplyFailed,
    ReplyRequested,
    ReplySent,
)
from services.domain.aggregate import DomainError
from services.domain.case import Case, CaseResolvedError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CUSTOMER = uuid.uuid4()


def opened(**kwargs) -> Case:
    case = Case.open(
        uuid.uuid4(), CUSTOMER, "email", "email:<root@example.org>", T0, interaction_id=uuid.uuid4(), **kwargs
    )
    case.collect()
    return case


def test_open_emits_opened_with_its_queue_and_first_message():
    first = uuid.uuid4()
    case = Case.open(uuid.uuid4(), CUSTOMER, "sms", "sms:thread", T0, priority="high", interaction_id=first)
    [event] = case.collect()
    assert isinstance(event, CaseOpened)
    assert (event.stream_id, event.version, event.customer_id, event.channel, event.thread_key) == (
        case.id,
        1,
        CUSTOMER,
        "sms",
        "sms:thread",
    )
    assert (event.queue, event.priority, event.sla_due_at, event.interaction_id) == (
        "sms",
        "high",
        None,  # the SLA clock is the timer's, from the queue's policy
        first,
    )
    assert case.status == "open" and case.messages == {first}
    case.add_message(first, "inbound", "sms", T0)  # the opening message is already the case's first
    assert case.collect() == []


def test_open_with_an_unknown_priority_is_refused():
    with pytest.raises(DomainError):
        Case.open(uuid.uuid4(), CUSTOMER, "sms", None, T0, priority="whenever")


def test_a_message_is_added_once():
    case = opened()
    message = uuid.uuid4()
    case.add_message(message, "inbound", "email", T0)
    case.add_message(message, "inbound", "email", T0)
    [event] = case.collect()
    assert isinstance(event, CaseMessageAdded) and (event.interaction_id, event.direction) == (message, "inbound")
    assert event.customer_id == CUSTOMER


def test_status_moves_open_pending_open_snoozed_open_resolved_open():
    case = opened()
    reply = uuid.uuid4()
    case.request_reply(reply, "On its way!", "agent-1", T0)
    assert case.status == "pending"  # we answered; waiting on the customer
    case.add_message(uuid.uuid4(), "inbound", "email", T0 + timedelta(minutes=5))
    assert case.status == "open"  # they wrote again
    case.snooze(T0 + timedelta(days=1), "agent-1", T0)
    assert case.status == "snoozed" and case.snoozed_until == T0 + timedelta(days=1)
    case.add_message(uuid.uuid4(), "inbound", "email", T0 + timedelta(hours=1))
    assert case.status == "open"
    case.add_message(uuid.uuid4(), "outbound", "email", T0 + timedelta(hours=2))
    assert case.status == "open"  # our own message does not reopen or park anything
    case.resolve("agent-1", T0)
    case.resolve("agent-1", T0)
    assert case.status == "resolved"
    case.reopen("supervisor", T0)
    case.reopen("supervisor", T0)
    assert case.status == "open"
    assert [type(e) for e in case.collect()] == [
        ReplyRequested,
        CaseMessageAdded,
        CaseSnoozed,
        CaseMessageAdded,
        CaseMessageAdded,
        CaseResolved,
        CaseReopened,
    ]


def test_a_resolved_case_cannot_be_snoozed():
    case = opened()
    case.resolve("agent-1", T0)
    with pytest.raises(CaseResolvedError):
        case.snooze(T0 + timedelta(hours=1), "agent-1", T0)


def test_assign_prioritize_and_tag_emit_only_changes():
    case = opened()
    case.assign("agent-1", "supervisor", T0)
    case.assign("agent-1", "supervisor", T0)
    case.prioritize("urgent", "supervisor", T0)
    case.prioritize("urgent", "supervisor", T0)
    case.tag(["refund", " vip ", "", "refund"], "agent-1", T0)
    case.tag(["vip"], "agent-1", T0)
    assigned, prioritized, tagged = case.collect()
    assert isinstance(assigned, CaseAssigned) and (assigned.assignee, assigned.by) == ("agent-1", "supervisor")
    assert isinstance(prioritized, CasePrioritized) and prioritized.priority == "urgent"
    assert isinstance(tagged, CaseTagged) and tagged.tags == ["refund", "vip"]
    assert (case.assignee, case.priority, case.tags) == ("agent-1", "urgent", ["refund", "vip"])
    with pytest.raises(DomainError):
        case.prioritize("asap", "supervisor", T0)


def test_notes_need_text():
    case = opened()
    note = uuid.uuid4()
    case.add_note(note, "called back, no answer", "agent-1", T0)
    [event] = case.collect()
    assert isinstance(event, CaseNoteAdded) and (event.note_id, event.text, event.by) == (
        note,
        "called back, no answer",
        "agent-1",
    )
    with pytest.raises(DomainError):
        case.add_note(uuid.uuid4(), "   ", "agent-1", T0)


def test_reply_lifecycle_requested_sent_delivered():
    case = opened()
    reply = uuid.uuid4()
    case.request_reply(reply, "Hello!", "agent-1", T0)
    case.request_reply(reply, "Hello!", "agent-1", T0)  # the same request again: once
    case.reply_sent(reply, "SM123", T0)
    case.reply_sent(reply, "SM123", T0)
    case.reply_delivered(reply, T0)
    case.reply_delivered(reply, T0)
    case.reply_failed(reply, "too late", T0)  # delivered is final
    requested, sent, delivered = case.collect()
    assert isinstance(requested, ReplyRequested) and (requested.text, requested.channel) == ("Hello!", "email")
    assert isinstance(sent, ReplySent) and sent.provider_message_id == "SM123"
    assert isinstance(delivered, ReplyDelivered) and delivered.reply_id == reply
    assert case.replies == {reply: "delivered"}


def test_a_reply_can_fail_and_unknown_replies_are_ignored():
    case = opened()
    reply = uuid.uuid4()
    case.request_reply(reply, "Hello!", "agent-1", T0)
    case.reply_failed(reply, "30007 carrier violation", T0)
    case.reply_delivered(reply, T0)  # a late status after failing changes nothing
    case.reply_sent(uuid.uuid4(), "SM999", T0)  # not ours
    _, failed = case.collect()
    assert isinstance(failed, ReplyFailed) and failed.reason == "30007 carrier violation" and failed.final
    with pytest.raises(DomainError):
        case.request_reply(uuid.uuid4(), " ", "agent-1", T0)


def test_csat_is_a_score_from_one_to_five():
    case = opened()
    case.record_csat(5, T0)
    [event] = case.collect()
    assert isinstance(event, CsatRecorded) and event.score == 5
    for score in (0, 6):
        with pytest.raises(DomainError):
            case.record_csat(score, T0)


def test_replay_rebuilds_status_and_replies():
    case = Case.open(uuid.uuid4(), CUSTOMER, "chat", "chat:s", T0, interaction_id=uuid.uuid4())
    reply = uuid.uuid4()
    case.request_reply(reply, "hi", "agent-1", T0)
    case.reply_sent(reply, None, T0)
    case.assign("agent-2", "supervisor", T0)
    again = Case.replay(case.id, case.collect())
    assert (again.version, again.status, again.replies, again.assignee, again.customer_id, again.channel) == (
        4,
        "pending",
        {reply: "sent"},
        "agent-2",
        CUSTOMER,
        "chat",
    )


def test_a_message_is_classified_once_on_the_case_s_classification_stream():
    from events.case import CaseClassified
    from services.domain.case import Classifications

    case = opened()
    classifications = Classifications(Classifications.stream_of(case.id))
    assert classifications.id not in (case.id, case.customer_id)
    assert Classifications.stream_of(case.id) == classifications.id, "the same stream whoever asks"
    message = uuid.uuid4()
    classifications.classify(case.id, case.owner_id, message, "es", "negative", "complaint", 0.9, T0)
    classifications.classify(case.id, case.owner_id, message, "es", "negative", "complaint", 0.9, T0)
    [event] = classifications.collect()
    assert isinstance(event, CaseClassified)
    assert (event.stream_id, event.version, event.case_id, event.customer_id) == (
        classifications.id,
        1,
        case.id,
        case.customer_id,
    )
    assert (event.interaction_id, event.language, event.sentiment, event.intent, event.confidence) == (
        message,
        "es",
        "negative",
        "complaint",
        0.9,
    )
    replayed = Classifications.replay(classifications.id, [event])
    replayed.classify(case.id, case.owner_id, message, "en", "neutral", "other", 0.5, T0)
    assert replayed.collect() == [], "once per message, across a replay"
    with pytest.raises(AssertionError):
        replayed.classify(uuid.uuid4(), case.owner_id, uuid.uuid4(), "en", "neutral", "other", 0.5, T0)
