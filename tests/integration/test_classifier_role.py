"""The classifier role: each inbound message with text and a case classified once, in the
follower's transaction; a replayed batch, a second follower or a restart adds nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.case import CaseClassified
from events.interactions import Identity, Interaction, interaction_id
from services.core.classifier import ClassifierRole, classifier_follower
from services.core.processor import CoreProcessor
from services.intelligence.classify import default_classifier

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def inbound(phone: str, text: str, at: int) -> Interaction:
    provider_id = uuid.uuid4().hex
    return Interaction(
        id=interaction_id("sms", provider_id),
        channel="sms",
        direction="inbound",
        occurred_at=T0 + timedelta(seconds=at),
        identities=[Identity("phone", phone)],
        text=text,
        provider_message_id=provider_id,
    )


def log(store) -> list[tuple]:
    items, position = [], 0
    while batch := store.read(position, 1000):  # a run of positions at a time
        items += batch
        position = batch[-1][0]
    return items


def classified(store) -> dict[uuid.UUID, list[CaseClassified]]:
    out: dict[uuid.UUID, list[CaseClassified]] = {}
    for _position, event, _redacted in log(store):
        if type(event) is CaseClassified:
            out.setdefault(event.interaction_id, []).append(event)
    return out


def test_each_inbound_message_is_classified_once_across_replays_and_restarts(store) -> None:
    processor = CoreProcessor(store)
    first = [
        inbound("+34600000001", "Es una vergüenza, llevo tres semanas sin el pedido y nadie me contesta. Quiero poner una reclamación", 0),
        inbound("+447700900002", "Thank you so much, the agent was brilliant", 1),
        inbound("+447700900003", "", 2),  # nothing to classify
    ]  # fmt: skip
    processor.process([(m, n + 1) for n, m in enumerate(first)])

    follower = classifier_follower(store)
    assert follower.catch_up() > 0
    got = classified(store)
    assert set(got) == {first[0].id, first[1].id}
    assert all(len(v) == 1 for v in got.values())
    angry = got[first[0].id][0]
    assert (angry.language, angry.sentiment, angry.intent) == ("es", "negative", "complaint")
    happy = got[first[1].id][0]
    assert (happy.language, happy.sentiment, happy.intent) == ("en", "positive", "praise")
    assert 0.0 < angry.confidence <= 1.0

    # The same batch handled again (a crash before the position was stored): nothing new.
    with store.transaction() as tx:
        ClassifierRole(store).handle(tx, log(store))
        assert tx.stored == []
    # A restarted follower goes on from its stored position: only the new message.
    later = inbound("+447700900002", "my parcel still hasnt arrived, where is it?", 3)
    processor.process([(later, 10)])
    again = classifier_follower(store)
    assert again.position() == follower.position()
    again.catch_up()
    got = classified(store)
    assert set(got) == {first[0].id, first[1].id, later.id}
    assert all(len(v) == 1 for v in got.values())
    assert got[later.id][0].intent == "delivery"
    assert classifier_follower(store).catch_up() == 0


def test_a_custom_training_file_sets_the_labels(tmp_path) -> None:
    data = tmp_path / "labels.jsonl"
    rows = [("is my kettle under warranty", "warranty"), ("warranty claim for the toaster", "warranty"),
            ("how long is the guarantee", "warranty"), ("I want to cancel my subscription", "cancel"),
            ("please cancel my plan", "cancel"), ("stop my membership", "cancel")]  # fmt: skip
    data.write_text("\n".join(f'{{"text": "{t}", "intent": "{i}"}}' for t, i in rows), encoding="utf-8")
    clf = default_classifier(data)
    assert clf.intents == ("cancel", "warranty", "other")
    assert clf.classify("cancel my subscription please").intent == "cancel"
    assert default_classifier(data) is clf  # trained once per process
