"""The codec decides the bytes the log keeps: personal fields sealed with the customer's key, bound to
their event, and readable as redacted values once that key is destroyed.

Every registered event type has a sample below, with a distinctive value in each personal field, so a
new event type cannot join the registry without being checked here.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import StoredEvent

from events.agent import (
    AgentChanged,
    AgentCreated,
    AgentDisabled,
    AgentEnabled,
    AgentPasswordChanged,
    AgentStatusChanged,
    TeamCreated,
)
from events.automation import AutomationConfigured, AutomationFired
from events.base import DomainEvent
from events.campaign import (
    CampaignCompleted,
    CampaignCreated,
    CampaignFailed,
    CampaignMessageDelivered,
    CampaignMessageFailed,
    CampaignMessageReplied,
    CampaignMessageSent,
    CampaignMessageUndelivered,
    CampaignPaused,
    CampaignRecipientSkipped,
    CampaignStarted,
    CampaignTargeted,
)
from events.case import (
    CaseAssigned,
    CaseAttributesSet,
    CaseClassified,
    CaseMessageAdded,
    CaseNoteAdded,
    CaseOpened,
    CasePrioritized,
    CaseReopened,
    CaseResolved,
    CaseSnoozed,
    CaseTagged,
    CaseTransferred,
    CaseWoken,
    CsatRecorded,
    CsatRequested,
    ReplyDelivered,
    ReplyFailed,
    ReplyRequested,
    ReplySent,
    SlaBreached,
    SlaFulfilled,
    SlaPaused,
    SlaResumed,
    SlaStarted,
)
from events.config import (
    AttributeDefined,
    BusinessHours,
    CannedResponseCreated,
    CannedResponseDeleted,
    QueueConfigured,
    SegmentDefined,
    SlaPolicyConfigured,
)
from events.customer import (
    ActivityRecorded,
    ConsentChanged,
    CustomerAbsorbed,
    CustomerAttributesSet,
    CustomerErased,
    CustomerMerged,
    CustomerRegistered,
    IdentityClaimed,
    IdentityLinked,
    InteractionRecorded,
    MergeSuggested,
    MergeSuggestionResolved,
    ProfileUpdated,
)
from events.interactions import Attachment
from events.registry import REGISTRY
from services.platform.eventstore.codec import REDACTED, EventCodec, TamperedEventError
from services.platform.eventstore.keys import KeyDestroyedError

pytestmark = pytest.mark.unit

CUSTOMER = uuid.UUID("5d1c0f59-3a8e-4f7e-9a51-0c2d4b6e8f10")
CASE = uuid.UUID("8b2e4c6a-1d3f-4a5b-9c7d-e0f1a2b3c4d5")
AGENT = uuid.UUID("3a7c9e1b-5d2f-4b8a-9c6e-0f1d2a3b4c5e")
RECORD = uuid.UUID("6e8a0c2d-4f1b-4d7e-8a9c-1b3d5f7a9c0e")
AT = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)

# Distinctive personal values: none may appear in the stored bytes.
NAME = "Philippa Quenneville-Sorrentino"
EMAIL = "philippa.q.sorrentino@example.org"
PHONE = "+447700900461"
TEXT = "Mon colis n'est jamais arrivé — commande n° 77-ZX-4410"
NOTE = "She asked us to call back after 6pm on her mobile"
REPLY = "Dear Philippa, your parcel 77-ZX-4410 is on its way"
THREAD = "email:<CAF7x9Q@mail.example.org>"
ATTACHMENT = "passport-scan-philippa.pdf"
META = "X-Original-Sender-Philippa"
# Provider ids that embed the person: a wamid (base64 of the phone number), an email Message-ID (the
# sender's host); and an agent's tag.
WAMID = "wamid.HBgMNDQ3NzAwOTAwNDYxFQIAEhggQTNFQjBGMjQ0QTQ4RTk2"
MESSAGE_ID = "<CAF7x9Q@philippa-sorrentino-home.example>"
TAG = "sorrentino-divorce-case"
COMMENT = "Philippa says the courier was rude"
ATTRIBUTE = "loyalty-number-PQS-55120"
AGENT_EMAIL = "ottoline.vandermeer@switchboard.example"
AGENT_NAME = "Ottoline Vandermeer"


def _base(cls: type[DomainEvent], stream_id: uuid.UUID, version: int) -> dict[str, Any]:
    return {
        "id": uuid.uuid5(stream_id, str(version)),
        "stream_id": stream_id,
        "version": version,
        "occurred_at": AT + timedelta(seconds=version),
        "customer_id": CUSTOMER,
    }


def _samples() -> list[DomainEvent]:
    def customer(cls, version, **fields):
        return cls(**_base(cls, CUSTOMER, version), **fields)

    def case(cls, version, **fields):
        return cls(**_base(cls, CASE, version), **fields)

    def agent(cls, version, **fields):
        return cls(**{**_base(cls, AGENT, version), "customer_id": AGENT}, **fields)

    def record(cls, version, **fields):
        return cls(**{**_base(cls, RECORD, version), "customer_id": RECORD}, **fields)

    interaction = uuid.UUID("1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9")
    reply = uuid.UUID("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    other = uuid.UUID("99999999-8888-4777-a666-555555555555")
    return [
        customer(CustomerRegistered, 1),
        customer(IdentityLinked, 2, kind="email", value=EMAIL),
        customer(IdentityClaimed, 3, kind="phone", value=PHONE),
        customer(ProfileUpdated, 4, attributes={"name": NAME}, verified=False),
        customer(
            InteractionRecorded,
            5,
            interaction_id=interaction,
            channel="email",
            direction="inbound",
            kind="message",
            case_id=CASE,
            text=TEXT,
            provider_message_id=MESSAGE_ID,
            thread_key=THREAD,
            meta={"x-header": META},
            attachments=[
                Attachment(name=ATTACHMENT, content_type="application/pdf", size=48213, sha256="ab" * 32, ref="blob:42")
            ],
        ),
        customer(CustomerMerged, 6, absorbed_id=other, interaction_id=interaction),
        customer(CustomerAbsorbed, 7, survivor_id=other),
        customer(MergeSuggested, 8, other_id=other, reason="different external ids"),
        customer(ConsentChanged, 9, channel="sms", granted=False),
        customer(CustomerErased, 10, requested_by="cli"),
        case(
            CaseOpened,
            1,
            channel="email",
            thread_key=THREAD,
            queue="email",
            priority="high",
            sla_due_at=AT + timedelta(hours=1),
            interaction_id=interaction,
        ),
        case(CaseMessageAdded, 2, interaction_id=interaction, direction="inbound", channel="email"),
        case(CaseAssigned, 3, assignee="agent-7", by="supervisor-1"),
        case(CasePrioritized, 4, priority="urgent", by="agent-7"),
        case(CaseTagged, 5, tags=["billing", TAG], by="agent-7"),
        case(CaseNoteAdded, 6, note_id=uuid.UUID("12345678-1234-4234-8234-123456789abc"), text=NOTE, by="agent-7"),
        case(ReplyRequested, 7, reply_id=reply, text=REPLY, by="agent-7", channel="email"),
        case(ReplySent, 8, reply_id=reply, provider_message_id=WAMID),
        case(ReplyDelivered, 9, reply_id=reply),
        case(ReplyFailed, 10, reply_id=reply, reason="smtp relay answered 550", final=True),
        case(CaseSnoozed, 11, until=AT + timedelta(days=1), by="agent-7"),
        case(CaseResolved, 12, by="agent-7"),
        case(CaseReopened, 13, by="customer"),
        case(CsatRecorded, 14, score=4, comment=COMMENT, source="reply"),
        case(CsatRequested, 15, reply_id=reply, until=AT + timedelta(days=7)),
        case(CaseTransferred, 16, queue="billing", by="agent-7"),
        case(CaseAttributesSet, 17, values={"loyalty": ATTRIBUTE}, by="agent-7"),
        case(SlaStarted, 18, target="first_response", policy="gold", due_at=AT + timedelta(hours=1)),
        case(SlaPaused, 19, reason="pending"),
        case(SlaResumed, 20, target="first_response", due_at=AT + timedelta(hours=2)),
        case(SlaFulfilled, 21, target="first_response"),
        case(SlaBreached, 22, target="resolution", due_at=AT + timedelta(hours=8)),
        case(CaseWoken, 23),
        case(
            CaseClassified,
            24,
            interaction_id=interaction,
            language="es",
            sentiment="negative",
            intent="complaint",
            confidence=0.91,
        ),
        customer(CustomerAttributesSet, 11, values={"loyalty": ATTRIBUTE}, by="agent-7"),
        customer(
            ActivityRecorded,
            12,
            interaction_id=interaction,
            type="order.placed",
            reference="ORD-1",
            source="shop",
            amount=Decimal("42.50"),
            currency="EUR",
            data={"note": ATTRIBUTE},
        ),
        customer(MergeSuggestionResolved, 12, other_id=other, accepted=True, by="supervisor-1"),
        agent(AgentCreated, 1, email=AGENT_EMAIL, name=AGENT_NAME, role="agent", teams=["billing"], skills=["es"]),
        agent(AgentChanged, 2, name=AGENT_NAME + " Jr", capacity=3, by="admin"),
        agent(AgentStatusChanged, 3, status="online"),
        agent(AgentPasswordChanged, 4, by="admin"),
        agent(AgentDisabled, 5, by="admin"),
        agent(AgentEnabled, 6, by="admin"),
        record(TeamCreated, 1, name="billing"),
        record(QueueConfigured, 1, name="billing", strategy="round_robin", team="billing", sla_policy="gold"),
        record(
            SlaPolicyConfigured,
            1,
            name="gold",
            first_response={"high": "PT15M"},
            business_hours=BusinessHours(timezone="Europe/Madrid", week={"mon": ["09:00-18:00"]}),
        ),
        record(CannedResponseCreated, 1, shortcut="thanks", text="Thank you, {{customer.name}}"),
        record(CannedResponseDeleted, 2),
        record(AttributeDefined, 1, key="loyalty", type="text", applies_to="customer"),
        record(
            AutomationConfigured,
            1,
            name="angry",
            on="case.Classified",
            condition={"all": [{"field": "sentiment", "op": "eq", "value": "negative"}]},
            actions=[{"set_queue": "complaints"}, {"webhook": {"url": "https://hooks.example.com/sb"}}],
        ),
        customer(
            AutomationFired,
            13,
            rule="angry",
            rule_version=1,
            event_id=other,
            event_type="case.Classified",
            case_id=CASE,
            actions=["set_queue"],
            depth=0,
        ),
        record(SegmentDefined, 1, name="buyers", filter={"all": [{"field": "tags", "op": "contains", "value": "vip"}]}),
        record(
            CampaignCreated,
            1,
            name="spring sale",
            segment_id=other,
            channel="sms",
            text="20% off this week",
            send_at=AT,
            quiet_hours={"start": "21:00", "end": "08:00"},
            by="supervisor-1",
        ),
        record(CampaignStarted, 2, by="supervisor-1"),
        record(CampaignPaused, 3, by="supervisor-1"),
        record(CampaignTargeted, 4, count=3),
        record(CampaignRecipientSkipped, 5, recipient_id=other, reason="no_consent"),
        record(CampaignMessageSent, 6, recipient_id=other, message_id=other, channel="sms", text="20% off this week"),
        record(CampaignMessageFailed, 7, recipient_id=other, reason="twilio answered HTTP 400"),
        record(CampaignCompleted, 8),
        record(CampaignFailed, 12, reason="segment 1: a pattern this release refuses"),
        record(CampaignMessageDelivered, 9, recipient_id=other),
        record(CampaignMessageUndelivered, 10, recipient_id=other, reason="twilio error 30003"),
        record(CampaignMessageReplied, 11, recipient_id=other),
    ]


SAMPLES = _samples()
PERSONAL_VALUES = [
    COMMENT,
    ATTRIBUTE,
    AGENT_EMAIL,
    AGENT_NAME,
    NAME,
    EMAIL,
    PHONE,
    TEXT,
    NOTE,
    REPLY,
    THREAD,
    ATTACHMENT,
    META,
    WAMID,
    MESSAGE_ID,
    TAG,
    "philippa-sorrentino-home.example",
]


def _ids(event: DomainEvent) -> str:
    return event.NAME


@pytest.fixture
def codec() -> EventCodec:
    return EventCodec()


@pytest.fixture
def key() -> AESGCM:
    return AESGCM(AESGCM.generate_key(bit_length=256))


def _forms(value: str) -> list[bytes]:
    """How a string could show up in stored JSON: raw UTF-8, JSON-escaped, ASCII-escaped."""
    return [value.encode(), json.dumps(value)[1:-1].encode(), json.dumps(value, ensure_ascii=False)[1:-1].encode()]


def test_every_registered_event_type_has_a_sample() -> None:
    assert sorted({type(e).NAME for e in SAMPLES}) == REGISTRY.names()


@pytest.mark.parametrize("event", SAMPLES, ids=_ids)
def test_seal_then_open_gives_back_the_same_event(codec: EventCodec, key: AESGCM, event: DomainEvent) -> None:
    stored = codec.seal(event, key)
    assert stored.topic == event.NAME
    assert (stored.originator_id, stored.originator_version) == (event.stream_id, event.version)
    assert codec.open_(stored, key) == event
    assert codec.customer_of(stored) == event.customer_id
    view = codec.view(stored.state)
    assert codec.owner_text(stored.state) == str(event.customer_id).encode()
    event_again, redacted = codec.open_view(stored.topic, event.stream_id, event.version, view, key)
    assert event_again == event and redacted is False
    # The replay payload is the same event as JSON, without the row's own stream id and version.
    payload, redacted = codec.payload(stored.topic, event.stream_id, event.version, view, key)
    expected = msgspec.to_builtins(event)
    del expected["stream_id"], expected["version"]
    assert msgspec.json.decode(payload) == expected and redacted is False


@pytest.mark.parametrize("event", SAMPLES, ids=_ids)
def test_stored_bytes_hold_no_personal_value_in_clear(codec: EventCodec, key: AESGCM, event: DomainEvent) -> None:
    stored = codec.seal(event, key)
    state = stored.state
    for value in PERSONAL_VALUES:
        for form in _forms(value):
            assert form not in state, f"{value!r} stored in clear by {event.NAME}"
    document = json.loads(state)
    assert set(document) <= {"v", "d", "p"} and document["v"] == type(event).VERSION
    # Exactly the personal fields are sealed; every other field stays in clear for indexing and audit.
    assert not set(document["d"]) & type(event).PERSONAL
    assert set(document["d"]) == set(type(event).__struct_fields__) - type(event).PERSONAL - {"stream_id", "version"}
    assert ("p" in document) == bool(type(event).PERSONAL)


@pytest.mark.parametrize("event", [e for e in SAMPLES if type(e).PERSONAL], ids=_ids)
def test_each_seal_uses_a_fresh_nonce(codec: EventCodec, key: AESGCM, event: DomainEvent) -> None:
    first, second = codec.seal(event, key), codec.seal(event, key)
    assert json.loads(first.state)["p"] != json.loads(second.state)["p"]


def _with_sealed(stored: StoredEvent, sealed: str) -> StoredEvent:
    document = json.loads(stored.state)
    document["p"] = sealed
    return StoredEvent(
        stored.originator_id,
        stored.originator_version,
        stored.topic,
        json.dumps(document, separators=(",", ":")).encode(),
    )


@pytest.mark.parametrize("event", [e for e in SAMPLES if type(e).PERSONAL], ids=_ids)
@pytest.mark.parametrize("byte", [0, 12, -1], ids=["nonce", "ciphertext", "tag"])
def test_a_tampered_seal_fails_loudly(codec: EventCodec, key: AESGCM, event: DomainEvent, byte: int) -> None:
    stored = codec.seal(event, key)
    sealed = bytearray(base64.b64decode(json.loads(stored.state)["p"]))
    sealed[byte] ^= 0x01
    with pytest.raises(TamperedEventError, match=event.NAME):
        codec.open_(_with_sealed(stored, base64.b64encode(sealed).decode()), key)


def test_a_truncated_or_garbled_seal_fails_loudly(codec: EventCodec, key: AESGCM) -> None:
    stored = codec.seal(SAMPLES[4], key)
    sealed = json.loads(stored.state)["p"]
    for broken in (sealed[:16], "not base64 at all!", ""):
        with pytest.raises(TamperedEventError):
            codec.open_(_with_sealed(stored, broken), key)


@pytest.mark.parametrize("move", ["another stream", "another version", "another event type"])
def test_a_seal_moved_to_another_event_fails_loudly(codec: EventCodec, key: AESGCM, move: str) -> None:
    """The stream id, version and name are associated data: same key, different place, no decryption."""
    text = codec.seal(SAMPLES[4], key)  # InteractionRecorded, customer stream v5
    sealed = json.loads(text.state)["p"]
    if move == "another stream":
        target = StoredEvent(CASE, text.originator_version, text.topic, text.state)
    elif move == "another version":
        target = StoredEvent(text.originator_id, 9, text.topic, text.state)
    else:
        # The claim of v3 (IdentityClaimed) carrying the interaction's seal instead of its own.
        claim = codec.seal(SAMPLES[2], key)
        target = _with_sealed(claim, sealed)
    with pytest.raises(TamperedEventError):
        codec.open_(target, key)


def test_another_customers_key_fails_loudly(codec: EventCodec, key: AESGCM) -> None:
    stored = codec.seal(SAMPLES[1], key)
    with pytest.raises(TamperedEventError):
        codec.open_(stored, AESGCM(AESGCM.generate_key(bit_length=256)))


def test_sealing_needs_the_key(codec: EventCodec) -> None:
    with pytest.raises(KeyDestroyedError):
        codec.seal(SAMPLES[1], None)
    # Events without personal fields need none.
    assert codec.seal(SAMPLES[0], None).topic == "customer.Registered"


REDACTIONS = {
    "customer.IdentityLinked": {"value": REDACTED},
    "customer.IdentityClaimed": {"value": REDACTED},
    "customer.ProfileUpdated": {"attributes": {}},
    "customer.InteractionRecorded": {
        "text": REDACTED,
        "thread_key": None,
        "attachments": [],
        "meta": {},
        "provider_message_id": None,
    },
    "case.Opened": {"thread_key": None},
    "case.Tagged": {"tags": []},
    "case.ReplySent": {"provider_message_id": None},
    "case.NoteAdded": {"text": REDACTED},
    "case.ReplyRequested": {"text": REDACTED},
    "case.CsatRecorded": {"comment": None},
    "case.AttributesSet": {"values": {}},
    "customer.AttributesSet": {"values": {}},
    "customer.ActivityRecorded": {"data": {}},
    "agent.Created": {"email": REDACTED, "name": REDACTED},
    "agent.Changed": {"name": None},
}


def test_the_redactions_are_known_for_every_type_with_personal_fields(codec: EventCodec) -> None:
    assert {cls.NAME for cls in REGISTRY if cls.PERSONAL} == set(REDACTIONS)
    for name, expected in REDACTIONS.items():
        assert codec.redactions(name) == expected


@pytest.mark.parametrize("event", SAMPLES, ids=_ids)
def test_without_the_key_personal_fields_read_as_redacted(codec: EventCodec, key: AESGCM, event: DomainEvent) -> None:
    stored = codec.seal(event, key)
    view = codec.view(stored.state)
    opened, redacted = codec.open_view(stored.topic, event.stream_id, event.version, view, None)
    personal = type(event).PERSONAL
    assert redacted is bool(personal)
    for name in type(event).__struct_fields__:
        if name in personal:
            assert getattr(opened, name) == REDACTIONS[event.NAME][name]
        else:
            assert getattr(opened, name) == getattr(event, name), name
    payload, payload_redacted = codec.payload(stored.topic, event.stream_id, event.version, view, None)
    assert payload_redacted is redacted
    for value in PERSONAL_VALUES:
        assert value.encode() not in payload and json.dumps(value)[1:-1].encode() not in payload
    assert msgspec.json.decode(payload) == {
        k: v for k, v in msgspec.to_builtins(opened).items() if k not in ("stream_id", "version")
    }


def test_the_owner_is_found_even_when_clear_fields_mention_other_customers(codec: EventCodec, key: AESGCM) -> None:
    """The hot path reads the owner without parsing; strings that look like the key cannot fool it."""
    decoy = '"customer_id":"00000000-0000-4000-8000-000000000000"'
    event = CaseTagged(**_base(CaseTagged, CASE, 1), tags=[decoy, "x"], by=decoy)
    stored = codec.seal(event, key)
    assert codec.owner_text(stored.state) == str(CUSTOMER).encode()
    assert codec.customer_of(stored) == CUSTOMER


def test_personal_fields_are_sealed_in_declaration_order(codec: EventCodec, key: AESGCM) -> None:
    """Not in a frozenset's order, which changes between processes: replay output is stable."""
    event = SAMPLES[4]
    payload, _ = codec.payload(
        event.NAME, event.stream_id, event.version, codec.view(codec.seal(event, key).state), key
    )
    keys = list(msgspec.json.decode(payload))
    assert keys[-5:] == ["text", "provider_message_id", "thread_key", "attachments", "meta"]
