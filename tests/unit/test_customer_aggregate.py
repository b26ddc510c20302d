"""The customer aggregate: each command asserts the events it emits (and the ones it must not)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.customer import (
    ConsentChanged,
    CustomerAbsorbed,
    CustomerErased,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    MergeSuggested,
    ProfileUpdated,
)
from events.interactions import Attachment, Interaction
from services.domain.aggregate import DomainError, event_id
from services.domain.customer import Customer, CustomerAbsorbedError, CustomerErasedError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def customer(**identities: str) -> Customer:
    c = Customer.register(uuid.uuid4(), T0)
    for kind, value in identities.items():
        c.link(kind, value, T0)
    c.collect()
    return c


def interaction(**fields) -> Interaction:
    return Interaction(
        **{"id": uuid.uuid4(), "channel": "sms", "direction": "inbound", "occurred_at": T0, "text": "hello", **fields}
    )


def test_register_emits_registered_as_version_one_with_a_derived_id():
    c = Customer.register(uuid.uuid4(), T0)
    [event] = c.collect()
    assert isinstance(event, CustomerRegistered)
    assert (event.stream_id, event.version, event.customer_id, event.occurred_at) == (c.id, 1, c.id, T0)
    assert event.id == event_id(c.id, 1)
    assert c.version == 1 and c.registered_at == T0


def test_link_emits_identity_linked_once():
    c = customer()
    c.link("email", "ada@example.org", T0)
    c.link("email", "ada@example.org", T0)
    [event] = c.collect()
    assert isinstance(event, IdentityLinked) and (event.kind, event.value, event.version) == (
        "email",
        "ada@example.org",
        2,
    )
    assert c.identities == {("email", "ada@example.org")}


def test_a_claim_is_kept_apart_from_identities_and_a_later_link_supersedes_it():
    c = customer()
    c.claim("email", "maybe@example.org", T0)
    c.claim("email", "maybe@example.org", T0)
    [claimed] = c.collect()
    assert isinstance(claimed, IdentityClaimed)
    assert c.claims == {("email", "maybe@example.org")} and not c.identities
    c.link("email", "maybe@example.org", T0)
    c.claim("email", "maybe@example.org", T0)  # already verified: nothing to claim
    assert [type(e) for e in c.collect()] == [IdentityLinked]
    assert c.claims == set() and c.identities == {("email", "maybe@example.org")}


def test_profile_update_emits_only_what_changed():
    c = customer()
    c.update_profile({"name": "Ada", "locale": "en"}, True, T0)
    c.update_profile({"name": "Ada", "locale": ""}, True, T0)  # nothing new, and blanks are ignored
    c.update_profile({"name": "Ada L.", "locale": "en"}, False, T0)
    first, second = c.collect()
    assert isinstance(first, ProfileUpdated) and first.attributes == {"name": "Ada", "locale": "en"} and first.verified
    assert second.attributes == {"name": "Ada L."} and not second.verified


def test_record_emits_interaction_recorded_with_the_touchpoint_and_deduplicates():
    c = customer(phone="+447700900123")
    case_id = uuid.uuid4()
    attachment = Attachment(name="p.jpg", content_type="image/jpeg", size=3, sha256="ab" * 32)
    i = interaction(
        channel="whatsapp",
        text="where is my parcel?",
        provider_message_id="wamid.1",
        attachments=[attachment],
        meta={"k": "v"},
    )
    c.record(i, case_id, "whatsapp:thread")
    c.record(i, case_id, "whatsapp:thread")  # redelivered: recorded once
    [event] = c.collect()
    assert isinstance(event, InteractionRecorded)
    assert (event.interaction_id, event.channel, event.direction, event.kind, event.case_id, event.text) == (
        i.id,
        "whatsapp",
        "inbound",
        "message",
        case_id,
        "where is my parcel?",
    )
    assert event.provider_message_id == "wamid.1" and event.thread_key == "whatsapp:thread"
    assert event.attachments == [attachment] and event.meta == {"k": "v"}
    assert c.threads == {"whatsapp:thread": case_id} and c.interactions == {i.id}


def test_absorb_moves_identities_and_profile_to_the_survivor_and_marks_the_other():
    survivor, other = customer(email="a@example.org"), customer(chat="session-1", phone="+447700900123")
    other.update_profile({"name": "Ada", "locale": "en"}, True, T0)
    survivor.update_profile({"locale": "fr"}, True, T0)
    survivor.collect(), other.collect()
    cause = uuid.uuid4()
    survivor.absorb(other, T0, cause)
    merged, *linked, profile = survivor.collect()
    [absorbed] = other.collect()
    assert isinstance(merged, CustomerMerged) and merged.absorbed_id == other.id and merged.interaction_id == cause
    assert [(e.kind, e.value) for e in linked] == [("chat", "session-1"), ("phone", "+447700900123")]
    assert isinstance(profile, ProfileUpdated) and profile.attributes == {"name": "Ada"}  # the survivor's locale stays
    assert isinstance(absorbed, CustomerAbsorbed) and absorbed.survivor_id == survivor.id
    assert absorbed.customer_id == other.id  # sealed with the absorbed customer's own key
    assert other.survivor_id == survivor.id and survivor.absorbed == [other.id]


def test_an_absorbed_customer_takes_no_more_commands():
    survivor, other = customer(), customer()
    survivor.absorb(other, T0)
    for command in (
        lambda: other.link("email", "x@example.org", T0),
        lambda: other.record(interaction(), None),
        lambda: other.update_profile({"name": "X"}, True, T0),
        lambda: survivor.absorb(other, T0),
    ):
        with pytest.raises(CustomerAbsorbedError):
            command()


def test_two_different_external_ids_are_never_merged_but_can_be_suggested():
    a, b = customer(external="user-1"), customer(external="user-2")
    assert not a.can_merge_with(b) and customer(external="user-1").can_merge_with(customer())
    with pytest.raises(DomainError):
        a.absorb(b, T0)
    assert a.collect() == [] and b.collect() == []
    a.suggest_merge(b.id, "different external ids", T0)
    a.suggest_merge(b.id, "different external ids", T0)
    [event] = a.collect()
    assert isinstance(event, MergeSuggested) and event.other_id == b.id and event.reason == "different external ids"


def test_a_customer_cannot_absorb_itself():
    c = customer()
    with pytest.raises(DomainError):
        c.absorb(c, T0)


def test_consent_changes_are_recorded_once_per_change():
    c = customer()
    c.change_consent("sms", False, T0)
    c.change_consent("sms", False, T0)
    c.change_consent("sms", True, T0 + timedelta(days=1))
    assert [(type(e), e.granted) for e in c.collect()] == [(ConsentChanged, False), (ConsentChanged, True)]


def test_erase_is_recorded_once_and_ends_every_other_command():
    c = customer(email="a@example.org")
    c.update_profile({"name": "Ada"}, True, T0)
    c.collect()
    c.erase("dpo", T0)
    c.erase("dpo", T0)
    [event] = c.collect()
    assert isinstance(event, CustomerErased) and event.requested_by == "dpo"
    assert c.erased and c.profile == {}
    with pytest.raises(CustomerErasedError):
        c.record(interaction(), None)
    with pytest.raises(CustomerErasedError):
        c.claim("email", "b@example.org", T0)


def test_replaying_the_emitted_events_rebuilds_the_same_state():
    c = Customer.register(uuid.uuid4(), T0)
    c.link("email", "a@example.org", T0)
    c.claim("phone", "+447700900123", T0)
    c.update_profile({"name": "Ada"}, True, T0)
    i = interaction(thread_key="sms:1")
    case_id = uuid.uuid4()
    c.record(i, case_id)
    events = c.collect()
    again = Customer.replay(c.id, events)
    assert (again.version, again.identities, again.claims, again.profile, again.threads, again.interactions) == (
        5,
        {("email", "a@example.org")},
        {("phone", "+447700900123")},
        {"name": "Ada"},
        {"sms:1": case_id},
        {i.id},
    )
