"""The core on a real PostgreSQL: an email whose From no trusted upstream vouched for."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from events.interactions import Identity, Interaction, interaction_id
from services.core.processor import CoreProcessor

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def email(*identities: Identity, at: int = 0, name: str = "Ann") -> Interaction:
    provider_id = f"{uuid.uuid4().hex}@example.org"
    return Interaction(
        id=interaction_id("email", provider_id),
        channel="email",
        direction="inbound",
        occurred_at=T0 + timedelta(seconds=at),
        identities=list(identities),
        text="hello",
        provider_message_id=provider_id,
        thread_key=provider_id,
        profile={"name": name},
    )


def rows(database_url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def test_an_unverified_sender_gets_a_customer_of_its_own_holding_only_a_claim(store, database_url):
    processor = CoreProcessor(store)
    verified = email(Identity("email", "ann@example.org"), at=0)
    claimed = [email(Identity("email", "Ann@Example.org", verified=False), at=n, name="Ann Forged") for n in (1, 2)]
    outcome = processor.process([(verified, 1), (claimed[0], 2), (claimed[1], 3)])
    assert outcome.recorded == [verified.id, *(c.id for c in claimed)] and not outcome.poison
    # Three customers: the claims linked nobody, merged nobody, and own no identity.
    assert rows(database_url, "SELECT count(*) FROM sb_events WHERE topic = 'customer.Registered'") == [(3,)]
    assert rows(database_url, "SELECT count(*) FROM sb_identities") == [(1,)]
    assert rows(database_url, "SELECT count(*) FROM sb_events WHERE topic = 'customer.Merged'") == [(0,)]
    assert rows(database_url, "SELECT count(*) FROM sb_events WHERE topic = 'customer.IdentityClaimed'") == [(2,)]
    assert rows(database_url, "SELECT count(*) FROM sb_events WHERE topic = 'case.Opened'") == [(3,)]


def test_claims_alone_on_another_channel_are_still_poison(store):
    sms = Interaction(
        id=interaction_id("sms", "SM1"),
        channel="sms",
        direction="inbound",
        occurred_at=T0,
        identities=[Identity("email", "ann@example.org", verified=False)],
        provider_message_id="SM1",
    )
    outcome = CoreProcessor(store).process([(sms, 1)])
    assert "no verified identity" in outcome.poison[sms.id]
