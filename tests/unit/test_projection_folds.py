"""The rebuild's in-memory folds, event by event, as the live projections' SQL would have it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.interactions import Interaction
from projections.folds import Aliases, CasesFold, ProfileFold, TimelineFold, Unstorable, storable
from services.domain.case import Case
from services.domain.customer import Customer
from services.platform.eventstore.codec import REDACTED

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def feed(fold, *aggregates) -> list[int]:
    """Applies the aggregates' pending events in the order given, at consecutive positions."""
    positions = []
    for aggregate in aggregates:
        for event in aggregate.collect():
            position = getattr(fold, "_next", 1)
            fold._next = position + 1
            fold.apply(position, event, False)
            positions.append(position)
    return positions


def message(channel: str, minutes: int, text: str = "hello") -> Interaction:
    return Interaction(id=uuid.uuid4(), channel=channel, direction="inbound", occurred_at=at(minutes), text=text)


def test_aliases_follow_chained_merges():
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    aliases = Aliases()
    aliases.merge(b, a)  # B absorbs A
    aliases.merge(c, b)  # then C absorbs B: A's rows are C's now
    assert aliases.resolve(a) == aliases.resolve(b) == c
    assert aliases.owned_by(c) == {a, b, c} and aliases.owned_by(b) == {b}
    assert aliases.survivor == {a: c, b: c}


def test_profile_fold_names_identities_merges_and_erasure():
    fold = ProfileFold()
    ada, bob = Customer.register(uuid.uuid4(), at(0)), Customer.register(uuid.uuid4(), at(1))
    ada.link("email", "ada@example.org", at(0))
    ada.update_profile({"name": "Ada"}, True, at(0))
    ada.update_profile({"name": "Typed by a visitor"}, False, at(2))  # a claim never beats a verified name
    ada.record(message("sms", 3), None)
    bob.claim("email", "ada@example.org", at(1))
    bob.link("phone", "+447700900123", at(1))
    bob.record(message("chat", 5), None)
    bob.record(message("email", 6), None)
    feed(fold, ada, bob)
    assert fold.customers[ada.id].name == "Ada" and fold.customers[ada.id].name_verified
    assert fold.customers[ada.id].attributes == {"name": "Typed by a visitor"}

    ada.absorb(bob, at(7))
    feed(fold, ada, bob)
    survivor = fold.customers[ada.id]
    assert (survivor.count, survivor.first_seen, survivor.last_seen) == (3, at(0), at(6))
    assert survivor.channels == {"sms", "chat", "email"}
    assert fold.customers[bob.id].merged_into == ada.id
    # Copied without upgrading what the survivor already holds (live: ON CONFLICT DO NOTHING).
    assert fold.identities[ada.id][("email", "ada@example.org")] is True
    assert fold.identities[ada.id][("phone", "+447700900123")] is True

    ada.erase("gdpr", at(8))
    feed(fold, ada)
    for customer_id in (ada.id, bob.id):
        erased = fold.customers[customer_id]
        assert (erased.name, erased.attributes, erased.erased) == (None, {}, True)
        assert customer_id not in fold.identities
    assert fold.customers[ada.id].count == 3  # counters stay: they say nothing about the person

    order = {"chat": 0, "email": 1, "sms": 2}.__getitem__
    rows = fold.rows(lambda values: sorted(values, key=order))["proj_customers"][1]
    assert next(r for r in rows if r[0] == ada.id)[7] == ["chat", "email", "sms"]


def test_cases_fold_status_first_response_and_unknown_cases():
    fold = CasesFold()
    customer = uuid.uuid4()
    case = Case.open(uuid.uuid4(), customer, "email", "email:<t@x>", at(0), interaction_id=uuid.uuid4())
    reply = uuid.uuid4()
    case.request_reply(reply, "on it", "agent-7", at(5))
    feed(fold, case)
    c = fold.cases[case.id]
    assert (c.status, c.first_response_at, c.message_count, c.updated_at) == ("pending", at(5), 1, at(5))

    case.add_message(uuid.uuid4(), "inbound", "email", at(9))  # the customer answers: open again
    case.reply_sent(reply, "p-1", at(6))
    case.snooze(at(60), "agent-7", at(10))
    case.add_message(uuid.uuid4(), "outbound", "email", at(11))
    feed(fold, case)
    assert (c.status, c.snoozed_until, c.message_count, c.first_response_at) == ("snoozed", at(60), 3, at(5))
    assert fold.replies[reply][1:] == ["sent", None, at(6)]

    case.add_message(uuid.uuid4(), "inbound", "email", at(12))
    case.tag(["vip", "b2b"], "agent-7", at(13))
    case.resolve("agent-7", at(14))
    feed(fold, case)
    assert (c.status, c.resolved_at, c.tags, c.updated_at) == ("resolved", at(14), {"vip", "b2b"}, at(14))

    stranger = Case.open(uuid.uuid4(), customer, "sms", None, at(0))
    stranger.collect()  # its opening never reached the log: its other events change nothing ...
    stranger.assign("agent-9", "routing", at(1))
    stranger.add_note(uuid.uuid4(), "a note", "agent-9", at(2))
    feed(fold, stranger)
    assert stranger.id not in fold.cases
    assert len(fold.notes) == 1  # ... except the rows of their own (live: an INSERT, no join)


def test_cases_fold_erasure_redacts_notes_of_the_customer_and_those_merged_into_them():
    fold = CasesFold()
    ada, bob = Customer.register(uuid.uuid4(), at(0)), Customer.register(uuid.uuid4(), at(0))
    ada_case = Case.open(uuid.uuid4(), ada.id, "sms", None, at(1))
    bob_case = Case.open(uuid.uuid4(), bob.id, "chat", None, at(1))
    other_case = Case.open(uuid.uuid4(), uuid.uuid4(), "chat", None, at(1))
    for case in (ada_case, bob_case, other_case):
        case.add_note(uuid.uuid4(), "private", "agent-7", at(2))
        case.tag(["divorce"], "agent-7", at(2))
    ada.absorb(bob, at(3))
    feed(fold, ada, bob, ada_case, bob_case, other_case)
    ada.erase("gdpr", at(4))
    feed(fold, ada)
    ada_case.add_note(uuid.uuid4(), "written after", "agent-7", at(5))
    feed(fold, ada_case)
    texts = {(note[0], note[1]) for note in fold.notes.values()}
    assert texts == {
        (ada_case.id, REDACTED),
        (bob_case.id, REDACTED),
        (other_case.id, "private"),
        (ada_case.id, "written after"),
    }
    rows = fold.rows(sorted)["proj_cases"][1]
    assert {r[0]: r[1] for r in rows}[bob_case.id] == ada.id  # the case follows its customer
    # Tags are agents' words about the customer: erased with them.
    assert {r[0]: r[8] for r in rows} == {ada_case.id: [], bob_case.id: [], other_case.id: ["divorce"]}


def test_timeline_fold_streams_rows_and_marks_erasures_by_position():
    rows: list[tuple] = []
    fold = TimelineFold(rows.append)
    ada, bob = Customer.register(uuid.uuid4(), at(0)), Customer.register(uuid.uuid4(), at(0))
    bob.record(message("chat", 1, "bob speaking"), None)
    feed(fold, ada, bob)
    ada.absorb(bob, at(2))
    ada.record(message("sms", 3, "after the merge"), None)
    feed(fold, ada, bob)
    # Out as recorded; a merge after a row moves it at the end (corrections), as live UPDATEs would.
    assert [(r[1], r[2], r[8]) for r in rows] == [(bob.id, bob.id, "bob speaking"), (ada.id, ada.id, "after the merge")]
    ada.erase("gdpr", at(4))
    erased_at = feed(fold, ada)[0]
    assert sorted(fold.redactions) == sorted([(ada.id, erased_at), (bob.id, erased_at)])
    assert fold.rows(sorted) == {
        "proj_customer_alias": (fold.rows(sorted)["proj_customer_alias"][0], [(bob.id, ada.id)]),
        "proj_timeline_classes": (fold.rows(sorted)["proj_timeline_classes"][0], []),  # nothing classified
    }
    statements = [sql for sql, _params, _staged in fold.corrections()]
    assert any("customer_id = a.survivor_id" in sql for sql in statements)
    assert any("position < s.before" in sql for sql in statements)


def test_a_value_postgresql_cannot_store_is_refused_before_the_fold_changes_anything():
    storable("fine", ["also", {"key": "value"}], None, 3)
    for bad in ("a\x00b", ["ok", "a\x00"], {"k\x00": "v"}, {"k": ["\x00"]}):
        with pytest.raises(Unstorable):
            storable(bad)
    fold = ProfileFold()
    ada = Customer.register(uuid.uuid4(), at(0))
    ada.update_profile({"name": "Ada"}, True, at(1))
    feed(fold, ada)
    ada.update_profile({"name": "Ada\x00Lovelace", "locale": "en"}, True, at(2))
    with pytest.raises(Unstorable):
        feed(fold, ada)
    assert fold.customers[ada.id].attributes == {"name": "Ada"}
