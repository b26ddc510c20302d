"""Meta's webhook formats: WhatsApp Cloud API, Messenger and Instagram, signature and handshake."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from functools import reduce
from operator import getitem
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.errors import Malformed, Unauthorized
from channels.social.meta import (
    meta_signature,
    parse_meta_webhook,
    verify_handshake,
    verify_meta_signature,
)
from events.interactions import ENCODER, INTERACTION_DECODER, Interaction, interaction_id
from tests.fixtures.fuzz import json_paths, json_values

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "social"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
META_FIXTURES = sorted(n for n in EXPECTED if not n.startswith("telegram_"))
APP_SECRET = "6f1d2c3b4a5968778695a4b3c2d1e0f9"
RECEIVED = datetime(2025, 6, 8, 12, 0, tzinfo=UTC)


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def round_trips(interaction: Interaction) -> None:
    assert INTERACTION_DECODER.decode(ENCODER.encode(interaction)) == interaction


def timeline_entry(interaction: Interaction, expected: dict) -> dict:
    """The interaction seen as the expected.json entries describe it: always the core fields, and
    the optional ones an entry names."""
    sender = interaction.identities[0] if interaction.identities else None
    entry = {
        "channel": interaction.channel,
        "sender_kind": sender.kind if sender else None,
        "sender_value": sender.value if sender else None,
        "text": interaction.text,
        "kind": interaction.kind,
    }
    optional = {
        "status": lambda: interaction.status,
        "direction": lambda: interaction.direction,
        "thread_key": lambda: interaction.thread_key,
        "provider_message_id": lambda: interaction.provider_message_id,
        "profile_name": lambda: interaction.profile.get("name"),
        "occurred_at": lambda: interaction.occurred_at.isoformat(),
        "meta": lambda: {k: interaction.meta.get(k) for k in expected["meta"]},
        "attachments": lambda: [
            {k: getattr(a, k) for k in want}
            for a, want in zip(interaction.attachments, expected["attachments"], strict=False)
        ],
    }
    for key in expected:
        if key in optional:
            entry[key] = optional[key]()
    return entry


@pytest.mark.parametrize("name", META_FIXTURES)
def test_fixture_becomes_the_expected_timeline_entries(name):
    interactions = parse_meta_webhook(load(name), received_at=RECEIVED)

    expected = EXPECTED[name]
    assert [timeline_entry(i, e) for i, e in zip(interactions, expected, strict=False)] == expected
    assert len(interactions) == len(expected)
    for interaction in interactions:
        round_trips(interaction)
        assert interaction.id == interaction_id(
            interaction.channel,
            interaction.provider_message_id
            if interaction.kind != "status"
            else f"{interaction.provider_message_id}:status:{interaction.status}",
        )


def test_whatsapp_text_carries_what_a_reply_needs():
    [interaction] = parse_meta_webhook(load("whatsapp_text.json"))

    assert interaction.direction == "inbound"
    assert interaction.meta["phone_number_id"] == "106540352242922"
    assert interaction.meta["type"] == "text"
    assert interaction.identities[0].verified


def test_whatsapp_image_keeps_the_media_id_as_reference():
    [interaction] = parse_meta_webhook(load("whatsapp_image.json"))
    [attachment] = interaction.attachments

    assert attachment.ref == "2754859441498128"
    assert attachment.name == "2754859441498128.jpg"
    assert attachment.size == 0 and attachment.sha256 == ""
    assert interaction.meta["media_sha256"] == "UBTlSUOOR0WWRbHyj5DRCJqSaZJHaR6QYxb2pk/ypKI="


def test_a_retried_webhook_yields_the_same_ids():
    first = parse_meta_webhook(load("whatsapp_status.json"))
    again = parse_meta_webhook(load("whatsapp_status.json"))

    assert [i.id for i in first] == [i.id for i in again]
    assert len({i.id for i in first}) == 2


def test_unknown_fields_are_ignored():
    payload = json.loads(load("whatsapp_text.json"))
    payload["brand_new_field"] = {"nested": [1, 2, 3]}
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["surprise"] = True
    payload["entry"][0]["changes"][0]["value"]["metadata"]["another"] = "x"

    [interaction] = parse_meta_webhook(json.dumps(payload).encode())

    assert interaction.text == "Does it come in another color?"


def test_unknown_message_types_are_kept_not_dropped():
    payload = json.loads(load("whatsapp_text.json"))
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message["type"] = "hologram"
    message["hologram"] = {"id": "1"}
    del message["text"]

    [interaction] = parse_meta_webhook(json.dumps(payload).encode())

    assert interaction.kind == "message"
    assert interaction.text == "[unsupported: hologram]"


def test_whatsapp_reaction():
    payload = json.loads(load("whatsapp_text.json"))
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message.update(type="reaction", reaction={"message_id": "wamid.ours", "emoji": "\U0001f44d"})
    del message["text"]

    [interaction] = parse_meta_webhook(json.dumps(payload).encode())

    assert (interaction.kind, interaction.text) == ("reaction", "\U0001f44d")
    assert interaction.meta["reacted_to"] == "wamid.ours"


def test_messenger_delivery_receipts_become_statuses_and_reads_are_ignored():
    body = {
        "object": "page",
        "entry": [
            {
                "id": "107425612345678",
                "time": 1749417000000,
                "messaging": [
                    {
                        "sender": {"id": "6945812301234567"},
                        "recipient": {"id": "107425612345678"},
                        "delivery": {"mids": ["m_1", "m_2"], "watermark": 1749417000000},
                    },
                    {
                        "sender": {"id": "6945812301234567"},
                        "recipient": {"id": "107425612345678"},
                        "timestamp": 1749417000001,
                        "read": {"watermark": 1749417000000},
                    },
                ],
            }
        ],
    }

    statuses = parse_meta_webhook(json.dumps(body).encode())

    assert [(s.kind, s.status, s.provider_message_id) for s in statuses] == [
        ("status", "delivered", "m_1"),
        ("status", "delivered", "m_2"),
    ]


def test_messenger_postback_is_a_message():
    body = {
        "object": "page",
        "entry": [
            {
                "id": "1",
                "time": 1,
                "messaging": [
                    {
                        "sender": {"id": "42"},
                        "recipient": {"id": "1"},
                        "timestamp": 1749417000000,
                        "postback": {"title": "Talk to a human", "payload": "HUMAN", "mid": "m_pb"},
                    }
                ],
            }
        ],
    }

    [interaction] = parse_meta_webhook(json.dumps(body).encode())

    assert (interaction.text, interaction.provider_message_id) == ("Talk to a human", "m_pb")
    assert interaction.meta["postback_payload"] == "HUMAN"


def test_other_objects_yield_nothing():
    assert parse_meta_webhook(b'{"object": "permissions", "entry": [{"id": "1", "time": 1}]}') == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"entry": []}',
        b'{"object": "page", "entry": {}}',
        b'{"object": "page", "entry": [{"messaging": [{"sender": {"id": "1"}, "message": {"text": "no mid"}}]}]}',
        b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", '
        b'"value": {"messages": [{"id": "wamid.1", "from": "not-a-phone", "type": "text"}]}}]}]}',
        b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", '
        b'"value": {"messages": [{"id": "wamid.1", "from": "16505551234", "timestamp": "soon"}]}}]}]}',
        b"\xff\xfe{}",
    ],
)
def test_malformed_bodies(body):
    with pytest.raises(Malformed) as raised:
        parse_meta_webhook(body)
    assert (raised.value.status, raised.value.code) == (400, "malformed")


# -- signature and handshake -------------------------------------------------------------------


def test_signature_of_the_exact_body_is_accepted():
    body = load("whatsapp_text.json")
    header = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()

    assert meta_signature(APP_SECRET, body) == header
    verify_meta_signature(APP_SECRET, body, header)
    verify_meta_signature(APP_SECRET, body, header.upper().replace("SHA256=", "sha256="))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 64,
        "sha256=not-hex-at-all-é",
        "garbage",
    ],
)
def test_missing_or_wrong_signature_is_unauthorized(header):
    with pytest.raises(Unauthorized) as raised:
        verify_meta_signature(APP_SECRET, load("whatsapp_text.json"), header)
    assert (raised.value.status, raised.value.code) == (401, "unauthorized")


def test_signature_of_another_body_or_secret_is_unauthorized():
    body = load("whatsapp_text.json")
    header = meta_signature(APP_SECRET, body)

    with pytest.raises(Unauthorized):
        verify_meta_signature(APP_SECRET, body + b" ", header)
    with pytest.raises(Unauthorized):
        verify_meta_signature("another-secret", body, header)


def test_handshake_returns_the_challenge_for_our_token():
    params = {"hub.mode": "subscribe", "hub.verify_token": "tok-123", "hub.challenge": "1158201444"}

    assert verify_handshake(params, "tok-123") == "1158201444"
    with pytest.raises(Unauthorized):
        verify_handshake({**params, "hub.verify_token": "wrong"}, "tok-123")
    with pytest.raises(Unauthorized):
        verify_handshake({k: v for k, v in params.items() if k != "hub.verify_token"}, "tok-123")
    with pytest.raises(Malformed):
        verify_handshake({**params, "hub.mode": "unsubscribe"}, "tok-123")
    with pytest.raises(Malformed):
        verify_handshake({k: v for k, v in params.items() if k != "hub.challenge"}, "tok-123")


# -- fuzzing -----------------------------------------------------------------------------------


@st.composite
def mutated_fixtures(draw, names):
    """A real payload with one to three of its subtrees replaced by arbitrary JSON or removed."""
    document = copy.deepcopy(json.loads(load(draw(st.sampled_from(names)))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(json_paths(document))))
        replacement = draw(json_values)
        if not path:
            document = replacement
            continue
        parent = reduce(getitem, path[:-1], document)
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
    return json.dumps(document).encode()


def assert_interactions_or_malformed(body: bytes) -> None:
    try:
        interactions = parse_meta_webhook(body)
    except Malformed:
        return
    assert isinstance(interactions, list)
    for interaction in interactions:
        assert isinstance(interaction, Interaction)
        round_trips(interaction)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200))
def test_fuzzed_bytes(body):
    assert_interactions_or_malformed(body)


@settings(max_examples=150, deadline=None)
@given(value=json_values)
def test_fuzzed_json_values(value):
    assert_interactions_or_malformed(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_fixtures(META_FIXTURES))
def test_fuzzed_payloads_near_real_ones(body):
    assert_interactions_or_malformed(body)


def test_deeply_nested_json_is_malformed_or_ignored():
    deep = b'{"object": "page", "entry": [{"id": "1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    assert_interactions_or_malformed(deep)
