"""Telegram's Bot API `Update` as posted to our webhook, and its secret-token header."""

from __future__ import annotations

import copy
import json
from functools import reduce
from operator import getitem
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.errors import Malformed, Unauthorized
from channels.social.telegram import parse_telegram_update, verify_telegram_secret
from events.interactions import ENCODER, INTERACTION_DECODER, Interaction, interaction_id
from tests.fixtures.fuzz import json_paths, json_values

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "social"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
TELEGRAM_FIXTURES = sorted(n for n in EXPECTED if n.startswith("telegram_"))


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def update(**fields) -> bytes:
    message = {
        "message_id": 7,
        "from": {"id": 111111111, "is_bot": False, "first_name": "Ada"},
        "chat": {"id": 111111111, "type": "private"},
        "date": 1749417400,
        **fields,
    }
    return json.dumps({"update_id": 1, "message": message}).encode()


def round_trips(interaction: Interaction) -> None:
    assert INTERACTION_DECODER.decode(ENCODER.encode(interaction)) == interaction


def timeline_entry(interaction: Interaction, expected: dict) -> dict:
    sender = interaction.identities[0]
    entry = {
        "channel": interaction.channel,
        "sender_kind": sender.kind,
        "sender_value": sender.value,
        "text": interaction.text,
        "kind": interaction.kind,
    }
    optional = {
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


@pytest.mark.parametrize("name", TELEGRAM_FIXTURES)
def test_fixture_becomes_the_expected_timeline_entries(name):
    interactions = parse_telegram_update(load(name))

    expected = EXPECTED[name]
    assert [timeline_entry(i, e) for i, e in zip(interactions, expected, strict=False)] == expected
    assert len(interactions) == len(expected)
    for interaction in interactions:
        round_trips(interaction)
        assert interaction.direction == "inbound"


def test_message_id_is_unique_per_chat():
    [interaction] = parse_telegram_update(load("telegram_text.json"))

    assert interaction.id == interaction_id("telegram", "111111111:1365")
    assert interaction.profile == {"name": "Ada Lovelace", "username": "ada_l"}


def test_an_edit_is_a_new_entry_not_a_retry_of_the_original():
    [original] = parse_telegram_update(load("telegram_text.json"))
    [edit] = parse_telegram_update(load("telegram_edited.json"))

    assert edit.provider_message_id == original.provider_message_id
    assert edit.id != original.id
    assert edit.meta["edit_of"] == "111111111:1365"


def test_photo_keeps_the_largest_size():
    [interaction] = parse_telegram_update(load("telegram_photo.json"))

    assert [a.ref for a in interaction.attachments] == ["AgACAgQAAxkBAAIBX2Zs-large"]


def test_document_voice_location_and_contact():
    [document] = parse_telegram_update(
        update(
            document={
                "file_name": "invoice.pdf",
                "mime_type": "application/pdf",
                "file_id": "BQACAgQ",
                "file_unique_id": "AgADxQ",
                "file_size": 48213,
            }
        )
    )
    [voice] = parse_telegram_update(
        update(
            voice={
                "duration": 3,
                "mime_type": "audio/ogg",
                "file_id": "AwACAgQ",
                "file_unique_id": "AgADxR",
                "file_size": 9210,
            }
        )
    )
    [location] = parse_telegram_update(update(location={"latitude": 52.520008, "longitude": 13.404954}))
    [contact] = parse_telegram_update(
        update(contact={"phone_number": "4915112345678", "first_name": "Ada", "user_id": 111111111})
    )
    [someone_else] = parse_telegram_update(
        update(contact={"phone_number": "+4915112345679", "first_name": "Bob", "user_id": 222})
    )

    assert [(a.name, a.content_type, a.size, a.ref) for a in document.attachments] == [
        ("invoice.pdf", "application/pdf", 48213, "BQACAgQ")
    ]
    assert [(a.name, a.content_type) for a in voice.attachments] == [("AgADxR.ogg", "audio/ogg")]
    assert (location.kind, location.text) == ("location", "Location: 52.520008,13.404954")
    assert contact.text == "Contact: Ada 4915112345678"
    # The sender's own number is a claim, never a verified, linking identity.
    assert [(i.kind, i.value, i.verified) for i in contact.identities] == [
        ("telegram", "111111111", True),
        ("phone", "+4915112345678", False),
    ]
    assert [i.kind for i in someone_else.identities] == ["telegram"]


def test_channel_post_without_sender_uses_the_channel():
    body = json.dumps(
        {
            "update_id": 5,
            "channel_post": {
                "message_id": 3,
                "sender_chat": {"id": -1001234567890, "type": "channel", "title": "News"},
                "chat": {"id": -1001234567890, "type": "channel", "title": "News"},
                "date": 1749417400,
                "text": "Announcement",
            },
        }
    ).encode()

    [interaction] = parse_telegram_update(body)

    assert interaction.identities[0].value == "-1001234567890"
    assert interaction.thread_key == "telegram:-1001234567890"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"{}",
        b'{"update_id": "one"}',
        b'{"update_id": 1, "message": {"message_id": 1}}',
        b'{"update_id": 1, "message": {"message_id": 1, "date": 99999999999999, "chat": {"id": 1}}}',
        b"\x00\x01",
    ],
)
def test_malformed_updates(body):
    with pytest.raises(Malformed):
        parse_telegram_update(body)


def test_secret_token():
    verify_telegram_secret("s3cr3t-T0ken_", "s3cr3t-T0ken_")
    for header in (None, "", "s3cr3t-T0ken", "s3cr3t-T0ken_x", "é"):
        with pytest.raises(Unauthorized) as raised:
            verify_telegram_secret("s3cr3t-T0ken_", header)
        assert (raised.value.status, raised.value.code) == (401, "unauthorized")
    with pytest.raises(Unauthorized):
        verify_telegram_secret("", "")


# -- fuzzing -----------------------------------------------------------------------------------


@st.composite
def mutated_fixtures(draw):
    document = copy.deepcopy(json.loads(load(draw(st.sampled_from(TELEGRAM_FIXTURES)))))
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
        interactions = parse_telegram_update(body)
    except Malformed:
        return
    assert isinstance(interactions, list) and len(interactions) <= 1
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
@given(body=mutated_fixtures())
def test_fuzzed_updates_near_real_ones(body):
    assert_interactions_or_malformed(body)
