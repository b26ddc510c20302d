"""Who a touchpoint belongs to (services.domain.resolution), on in-memory customers: register, link,
merge into the first registered, suggest instead of merging two company-side ids, claims never link."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.customer import (
    CustomerAbsorbed,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    MergeSuggested,
    ProfileUpdated,
)
from events.interactions import Identity, Interaction
from services.domain.customer import Customer
from services.domain.resolution import (
    DIFFERENT_EXTERNAL_IDS,
    new_customer_id,
    profile_is_verified,
    resolve_customer,
    survivor_among,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def customer(registered_at: datetime = T0, **identities: str) -> Customer:
    c = Customer.register(uuid.uuid4(), registered_at)
    for kind, value in identities.items():
        c.link(kind, value, registered_at)
    c.collect()
    return c


def message(*identities: Identity, channel: str = "sms", **fields) -> Interaction:
    return Interaction(
        id=uuid.uuid4(),
        channel=channel,
        direction="inbound",
        occurred_at=T0 + timedelta(hours=1),
        identities=list(identities),
        **fields,
    )


def names(aggregate: Customer) -> list[str]:
    return [e.NAME for e in aggregate.collect()]


def resolve(interaction: Interaction, owners: dict[Identity, Customer] | None = None):
    return resolve_customer(interaction, interaction.identities, owners or {}, new_customer_id(interaction.id))


PHONE = Identity("phone", "+447700900001")
EMAIL = Identity("email", "ana@example.com")


def test_identities_nobody_holds_register_a_customer_who_holds_them_all():
    interaction = message(PHONE, EMAIL)
    resolution = resolve(interaction)
    registered = resolution.customer
    assert resolution.registered is registered
    assert registered.id == new_customer_id(interaction.id)  # a retry registers the same customer
    assert resolution.newly_held == [PHONE, EMAIL]
    assert resolution.merges == []
    events = registered.collect()
    assert [type(e) for e in events] == [CustomerRegistered, IdentityLinked, IdentityLinked]
    assert registered.identities == {("phone", PHONE.value), ("email", EMAIL.value)}


def test_a_known_sender_is_the_customer_and_a_new_identity_is_linked_to_them():
    ana = customer(phone=PHONE.value)
    resolution = resolve(message(PHONE, EMAIL), {PHONE: ana})
    assert resolution.customer is ana
    assert resolution.registered is None
    assert resolution.newly_held == [EMAIL]
    assert names(ana) == ["customer.IdentityLinked"]  # the phone she holds already: linked once
    assert ("email", EMAIL.value) in ana.identities


def test_the_same_identity_twice_is_held_once():
    resolution = resolve(message(PHONE, PHONE))
    assert resolution.newly_held == [PHONE]
    assert names(resolution.customer) == ["customer.Registered", "customer.IdentityLinked"]


def test_two_holders_merge_into_the_first_registered():
    older = customer(T0 - timedelta(days=30), email=EMAIL.value)
    newer = customer(T0, phone=PHONE.value)
    interaction = message(PHONE, EMAIL)  # the sender's own identity (the phone, newer's) first
    resolution = resolve(interaction, {PHONE: newer, EMAIL: older})
    assert resolution.customer is older
    assert resolution.merges == [(newer.id, older.id)]
    assert resolution.newly_held == []
    survivor_events = older.collect()
    assert isinstance(survivor_events[0], CustomerMerged) and survivor_events[0].absorbed_id == newer.id
    assert survivor_events[0].interaction_id == interaction.id
    absorbed_events = newer.collect()
    assert [type(e) for e in absorbed_events] == [CustomerAbsorbed]
    assert absorbed_events[0].survivor_id == older.id
    assert ("phone", PHONE.value) in older.identities


def test_a_tie_in_registration_time_goes_to_the_smaller_id():
    a, b = customer(T0), customer(T0)
    first = min((a, b), key=lambda c: str(c.id))
    assert survivor_among([a, b]) is first
    assert survivor_among([b, a]) is first
    resolution = resolve(message(PHONE, EMAIL), {PHONE: a, EMAIL: b})
    assert resolution.customer is first


def test_claims_are_recorded_and_never_link_or_merge():
    ana = customer(phone=PHONE.value)
    bob = customer(email=EMAIL.value)
    typed = Identity("email", EMAIL.value, verified=False)
    resolution = resolve(message(PHONE, typed, channel="chat"), {PHONE: ana})
    assert resolution.customer is ana
    assert resolution.merges == [] and resolution.newly_held == []
    events = ana.collect()
    assert [type(e) for e in events] == [IdentityClaimed]
    assert ana.claims == {("email", EMAIL.value)}
    assert names(bob) == []


def test_two_holders_with_different_external_ids_are_only_suggested():
    older = customer(T0 - timedelta(days=1), external="crm-1", email=EMAIL.value)
    newer = customer(T0, external="crm-2", phone=PHONE.value)
    interaction = message(PHONE, EMAIL)
    resolution = resolve(interaction, {PHONE: newer, EMAIL: older})
    # No merge; the sender's own identity (the phone) decides whose touchpoint it is.
    assert resolution.customer is newer
    assert resolution.merges == []
    for a, b in ((older, newer), (newer, older)):
        events = a.collect()
        assert [type(e) for e in events] == [MergeSuggested]
        assert (events[0].other_id, events[0].reason, events[0].interaction_id) == (
            b.id,
            DIFFERENT_EXTERNAL_IDS,
            interaction.id,
        )
    # The email stays older's: it is not linked to newer.
    assert ("email", EMAIL.value) not in newer.identities


def test_an_unheld_external_id_never_gives_a_customer_a_second_one():
    ana = customer(external="crm-1", phone=PHONE.value)
    interaction = message(PHONE, Identity("external", "crm-2"), channel="chat")
    resolution = resolve(interaction, {PHONE: ana})
    separate = resolution.customer
    assert separate is not ana and resolution.registered is separate
    assert separate.id == new_customer_id(interaction.id)
    assert resolution.newly_held == [Identity("external", "crm-2")]
    assert separate.identities == {("external", "crm-2")}  # the phone stays ana's
    assert ana.external_ids == {"crm-1"}
    assert [type(e) for e in ana.collect()] == [MergeSuggested]
    assert [type(e) for e in separate.collect()] == [CustomerRegistered, MergeSuggested, IdentityLinked]


def test_the_same_external_id_again_links_normally():
    ana = customer(external="crm-1", phone=PHONE.value)
    resolution = resolve(
        message(PHONE, Identity("external", "crm-1"), channel="chat"), {PHONE: ana, Identity("external", "crm-1"): ana}
    )
    assert resolution.customer is ana and resolution.registered is None
    assert names(ana) == []


def test_the_profile_is_as_verified_as_the_sender():
    resolution = resolve(message(PHONE, profile={"name": "Ana"}))
    events = resolution.customer.collect()
    assert isinstance(events[-1], ProfileUpdated) and events[-1].verified is True
    assert profile_is_verified("sms", [PHONE])
    assert not profile_is_verified("chat", [Identity("chat", "session-1")])  # a visitor types their name
    assert profile_is_verified("chat", [Identity("chat", "session-1"), Identity("external", "u1")])
    assert not profile_is_verified("email", [])  # an unverified From's display name


def test_resolving_records_no_interaction():
    """Recording the touchpoint (and choosing its case) is the caller's next step."""
    resolution = resolve(message(PHONE))
    assert InteractionRecorded not in {type(e) for e in resolution.customer.collect()}
