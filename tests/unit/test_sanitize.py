"""The one sanitiser at the edge: what it removes, what it keeps, and that it walks whole interactions."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.interactions import ENCODER, INTERACTION_DECODER, Attachment, Identity, Interaction, interaction_id
from events.sanitize import REPLACEMENT, clean_text, is_clean, json_may_need_cleaning, sanitize

pytestmark = pytest.mark.unit

C0_REMOVED = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]


@pytest.mark.parametrize("control", C0_REMOVED, ids=[f"U+{ord(c):04X}" for c in C0_REMOVED])
def test_every_c0_control_but_tab_newline_and_cr_is_removed(control):
    assert clean_text(f"a{control}b{control}") == "ab"


def test_tab_and_newline_are_kept_and_carriage_returns_become_newlines():
    assert clean_text("one\ttwo\nthree") == "one\ttwo\nthree"
    assert clean_text("line 1\r\nline 2\rline 3\n\r\n") == "line 1\nline 2\nline 3\n\n"


def test_nul_is_removed():
    assert clean_text("where is\x00 my order\x00") == "where is my order"
    assert clean_text("\x00\x00") == ""


def test_lone_surrogates_become_the_replacement_character():
    # What `surrogateescape` makes of an undecodable byte, and half of an emoji's UTF-16 pair.
    assert clean_text("caf\udce9 \ud83d!") == f"caf{REPLACEMENT} {REPLACEMENT}!"
    assert clean_text("caf\udce9").encode("utf-8") == "caf\ufffd".encode()


def test_real_text_of_any_script_passes_unchanged_and_is_the_same_object():
    for text in ("Grüße aus Köln", "日本語のテキスト", "Привет", "مرحبا", "👍🏽 ok", "DEL\x7f and NBSP\xa0 stay", ""):
        assert clean_text(text) is text
        assert is_clean(text)


@given(st.text())
def test_output_is_always_clean_and_encodes_as_utf8(text):
    cleaned = clean_text(text)
    assert is_clean(cleaned)
    assert "\x00" not in cleaned and "\r" not in cleaned
    cleaned.encode("utf-8")  # no lone surrogate left
    assert clean_text(cleaned) == cleaned  # idempotent


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"))))
def test_text_without_controls_or_surrogates_is_untouched(text):
    assert clean_text(text) is text


def _dirty_interaction() -> Interaction:
    return Interaction(
        id=interaction_id("chat", "s1:c1"),
        channel="chat",
        direction="inbound",
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        identities=[Identity("chat", "sess\x00ion"), Identity("email", "ada\x01@example.com", verified=False)],
        text="hello\x00 there\r\nsecond line\x1b[2J",
        profile={"na\x00me": "Ada\x00 Lovelace"},
        thread_key="chat:\x00s1",
        provider_message_id="s1:c1\x00",
        attachments=[Attachment(name="in\x00voice\x07.pdf", content_type="application/pdf", size=3, sha256="ab")],
        meta={"subject": "Re:\x00 order\r\n", "clean": "fine"},
    )


def test_sanitize_walks_every_string_of_an_interaction():
    dirty = _dirty_interaction()
    clean = sanitize(dirty)
    assert clean.id == dirty.id and clean.occurred_at == dirty.occurred_at
    assert clean.text == "hello there\nsecond line[2J"
    assert clean.identities == [Identity("chat", "session"), Identity("email", "ada@example.com", verified=False)]
    assert clean.profile == {"name": "Ada Lovelace"}
    assert clean.thread_key == "chat:s1"
    assert clean.provider_message_id == "s1:c1"
    assert clean.attachments[0].name == "invoice.pdf"
    assert clean.meta == {"subject": "Re: order\n", "clean": "fine"}


def test_sanitize_returns_clean_values_themselves():
    clean = sanitize(_dirty_interaction())
    assert sanitize(clean) is clean
    values = {"tags": ["a", "b"], "n": 3, "nested": ("x", ["y"])}
    assert sanitize(values) is values


def test_sanitize_keeps_container_types_and_leaves_non_strings_alone():
    assert sanitize(("a\x00", "b")) == ("a", "b")
    assert sanitize(["a\x00", 1, None, 2.5]) == ["a", 1, None, 2.5]
    assert sanitize({"k\x00": ["v\x00"]}) == {"k": ["v"]}


def test_json_escape_check_finds_every_way_json_can_spell_a_control_or_surrogate():
    for raw in (b'"a\\u0000"', b'"a\\r"', b'"a\\b"', b'"a\\f"', b'"\\ud83d"'):
        assert json_may_need_cleaning(raw)
    for raw in (b'"plain text"', b'"tab\\t and newline\\n"', '"ünïcode"'.encode()):
        assert not json_may_need_cleaning(raw)


@given(st.text())
def test_json_without_those_escapes_decodes_to_clean_text(text):
    raw = msgspec.json.encode(text.encode("utf-8", "replace").decode("utf-8", "replace"))
    if not json_may_need_cleaning(raw):
        assert is_clean(msgspec.json.decode(raw))


def test_a_sanitized_interaction_round_trips_through_json():
    clean = sanitize(_dirty_interaction())
    assert INTERACTION_DECODER.decode(ENCODER.encode(clean)) == clean
