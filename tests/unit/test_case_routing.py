"""Which case a message joins (services.domain.routing): the conversation's case while it is not
resolved, a new one after; machine mail never opens one; a case we start holds our message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.case import CaseMessageAdded, CaseOpened
from events.interactions import Identity, Interaction
from services.domain.case import Case
from services.domain.customer import Customer
from services.domain.routing import case_for, joins, known_case, new_case_id, opens_cases, thread_key_of

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def message(n: int = 1, **fields) -> Interaction:
    return Interaction(
        **{
            "id": uuid.uuid4(),
            "channel": "sms",
            "direction": "inbound",
            "occurred_at": T0 + timedelta(minutes=n),
            "identities": [Identity("phone", "+447700900001")],
            **fields,
        }
    )


def conversation(status: str = "open") -> tuple[Customer, Case, Interaction]:
    """A customer whose first message opened a case, that case moved to `status`."""
    customer = Customer.register(uuid.uuid4(), T0)
    first = message(0)
    key = thread_key_of(customer, first)
    choice = case_for(customer, first, key, None)
    case = choice.opened
    assert case is not None
    customer.record(first, case.id, key)
    if status == "pending":
        case.request_reply(uuid.uuid4(), "on it", "agent", T0)
    elif status == "resolved":
        case.resolve("agent", T0)
    elif status == "snoozed":
        case.snooze(T0 + timedelta(days=1), "agent", T0)
    customer.collect()
    case.collect()
    assert case.status == status
    return customer, case, first


def test_a_first_inbound_message_opens_a_case_it_is_the_first_message_of():
    customer = Customer.register(uuid.uuid4(), T0)
    inbound = message()
    choice = case_for(customer, inbound, thread_key_of(customer, inbound), None)
    assert choice.case_id == new_case_id(inbound.id)  # a retry opens the same case
    case = choice.opened
    assert case is not None
    [opened] = case.collect()
    assert isinstance(opened, CaseOpened)
    assert (opened.customer_id, opened.channel, opened.queue, opened.interaction_id) == (
        customer.id,
        "sms",
        "sms",
        inbound.id,
    )
    assert opened.thread_key == f"sms:{customer.id}"  # a channel without threads: one conversation


@pytest.mark.parametrize("status", ["open", "pending", "snoozed"])
def test_the_next_message_joins_the_case_while_it_is_not_resolved(status):
    customer, case, _ = conversation(status)
    nxt = message(5)
    key = thread_key_of(customer, nxt)
    assert known_case(customer, nxt, key) == case.id
    choice = case_for(customer, nxt, key, case)
    assert (choice.case_id, choice.opened) == (case.id, None)
    [added] = case.collect()
    assert isinstance(added, CaseMessageAdded) and added.interaction_id == nxt.id
    assert case.status == "open"  # the customer wrote again: it is their turn no longer


def test_a_message_after_the_case_was_resolved_opens_a_new_case():
    customer, case, _ = conversation("resolved")
    assert not joins(case)
    nxt = message(5)
    choice = case_for(customer, nxt, thread_key_of(customer, nxt), case)
    assert choice.case_id == new_case_id(nxt.id) != case.id
    assert choice.opened is not None
    assert case.collect() == []  # the resolved case is left as it was


def test_machine_mail_is_recorded_under_the_conversations_case_and_opens_none():
    customer, case, _ = conversation("resolved")
    auto = message(5, kind="auto_reply")
    assert not opens_cases(auto)
    choice = case_for(customer, auto, thread_key_of(customer, auto), None)
    assert (choice.case_id, choice.opened) == (case.id, None)
    stranger = Customer.register(uuid.uuid4(), T0)
    assert case_for(stranger, auto, thread_key_of(stranger, auto), None).case_id is None


def test_a_conversation_we_start_opens_a_case_holding_our_message():
    customer = Customer.register(uuid.uuid4(), T0)
    ours = message(direction="outbound")
    case = case_for(customer, ours, thread_key_of(customer, ours), None).opened
    assert case is not None
    opened, added = case.collect()
    assert isinstance(opened, CaseOpened) and opened.interaction_id is None
    assert isinstance(added, CaseMessageAdded) and (added.interaction_id, added.direction) == (ours.id, "outbound")


def test_an_email_finds_its_case_through_an_earlier_message_of_the_thread():
    customer = Customer.register(uuid.uuid4(), T0)
    first = message(0, channel="email", thread_key="<root@example.com>")
    case = case_for(customer, first, thread_key_of(customer, first), None).opened
    assert case is not None
    customer.record(first, case.id, "<root@example.com>")
    # A reply whose own thread key is new, but whose References name the root.
    reply = message(
        5,
        channel="email",
        thread_key="<other@example.com>",
        meta={"thread_ids": "<unknown@example.com> <root@example.com>"},
    )
    assert thread_key_of(customer, reply) == "<other@example.com>"
    assert known_case(customer, reply, "<other@example.com>") == case.id
