"""CSAT (services.domain.csat, Case, routing): which replies are a score, the survey text, the
signed rating token, and a score on a resolved case's open survey answering it without a new case."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.case import CsatRecorded
from events.interactions import Identity, Interaction
from services.domain.aggregate import DomainError
from services.domain.case import Case
from services.domain.csat import (
    SURVEY_QUESTION,
    BadToken,
    ExpiredToken,
    csat_key,
    parse_score,
    sign_token,
    survey_text,
    verify_token,
)
from services.domain.customer import Customer
from services.domain.routing import case_for, thread_key_of

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("5", 5),
        (" 5 ", 5),
        ("5!", 5),
        ("5!!", 5),
        ("4.", 4),
        ("1", 1),
        ("4 stars", 4),
        ("1 star", 1),
        ("4 Stars!", 4),
        ("3 estrellas", 3),
        ("4/5", 4),
        ("4 / 5", 4),
        ("4 out of 5", 4),
        ("5️⃣", 5),
        ("⭐⭐⭐⭐", 4),
        ("⭐ ⭐ ⭐", 3),
        ("★", 1),
        ("\n2\n", 2),
    ],
)
def test_a_score_is_read_from_a_reply_that_is_nothing_but_a_rating(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        None,
        "0",
        "6",
        "10",
        "55",
        "5 items are missing",
        "2 hours late!",
        "4 or 5",
        "five",
        "⭐⭐⭐⭐⭐⭐",
        "⭐ great",
        "5/10",
        "-3",
        "3.5",
        "my order 5",
    ],
)
def test_anything_else_is_an_ordinary_message(text):
    assert parse_score(text) is None


def test_the_survey_carries_rating_links_on_email_and_chat_only():
    link = lambda score: f"https://sb.test/csat/tok?score={score}"  # noqa: E731
    email = survey_text("email", link)
    assert email.startswith(SURVEY_QUESTION)
    for score in range(1, 6):
        assert f"https://sb.test/csat/tok?score={score}" in email
    assert "csat" in survey_text("chat", link)
    assert survey_text("sms", link) == SURVEY_QUESTION
    assert survey_text("email", None) == SURVEY_QUESTION


def test_a_rating_token_names_its_case_until_it_expires_and_cannot_be_forged():
    key = csat_key(b"k" * 32)
    case_id = uuid.uuid4()
    token = sign_token(key, case_id, T0 + timedelta(days=7))
    assert verify_token(key, token, T0) == case_id
    with pytest.raises(ExpiredToken):
        verify_token(key, token, T0 + timedelta(days=7, seconds=1))
    with pytest.raises(BadToken):
        verify_token(csat_key(b"x" * 32), token, T0)
    tampered = sign_token(key, uuid.uuid4(), T0 + timedelta(days=7))
    with pytest.raises(BadToken):
        verify_token(key, token[:22] + tampered[22:], T0)
    for junk in ("", "abc", "é" * 10, "A" * 200):
        with pytest.raises(BadToken):
            verify_token(key, junk, T0)


def _message(text: str, at: datetime, channel: str = "sms") -> Interaction:
    return Interaction(
        id=uuid.uuid4(),
        channel=channel,
        direction="inbound",
        occurred_at=at,
        identities=[Identity("phone", "+447700900001")],
        text=text,
    )


def _surveyed() -> tuple[Customer, Case, str]:
    customer = Customer.register(uuid.uuid4(), T0)
    first = _message("my parcel is late", T0)
    key = thread_key_of(customer, first)
    case = case_for(customer, first, key, None).opened
    assert case is not None
    customer.record(first, case.id, key)
    case.resolve("agent", T0 + timedelta(hours=1))
    case.request_reply(uuid.uuid4(), SURVEY_QUESTION, "csat", T0 + timedelta(hours=1))
    case.request_csat(uuid.uuid4(), T0 + timedelta(hours=1, days=7), T0 + timedelta(hours=1))
    case.collect()
    customer.collect()
    return customer, case, key


def test_a_score_within_the_window_answers_the_survey_and_opens_no_case():
    customer, case, key = _surveyed()
    answer = _message("5!", T0 + timedelta(days=2))
    choice = case_for(customer, answer, key, case)
    assert choice.case_id == case.id and choice.opened is None
    [recorded] = case.collect()
    assert isinstance(recorded, CsatRecorded) and (recorded.score, recorded.source) == (5, "reply")
    # A second score: the message still joins the case's timeline, nothing more is recorded.
    again = case_for(customer, _message("4", T0 + timedelta(days=2, minutes=1)), key, case)
    assert again.case_id == case.id and again.opened is None and case.collect() == []


def test_a_late_score_a_word_or_another_channel_opens_a_case_as_before():
    customer, case, key = _surveyed()
    for message in (
        _message("5", T0 + timedelta(days=8)),
        _message("thanks a lot", T0 + timedelta(days=1)),
        _message("5", T0 + timedelta(days=1), channel="whatsapp"),
    ):
        choice = case_for(customer, message, key, case)
        assert choice.opened is not None and choice.case_id != case.id
    assert case.collect() == []


def test_the_first_answer_counts_and_a_reopening_closes_the_survey():
    _, case, _ = _surveyed()
    at = T0 + timedelta(days=1)
    assert case.answer_survey(2, "link", at) is True
    assert case.answer_survey(5, "link", at) is False
    assert [e.score for e in case.collect()] == [2]
    case.reopen("agent", at)
    with pytest.raises(DomainError):
        case.answer_survey(4, "link", at)
    # Resolved again: a new survey may go out, and be answered.
    case.resolve("agent", at)
    case.request_csat(uuid.uuid4(), at + timedelta(days=7), at)
    assert case.answer_survey(4, "reply", at) is True
    replayed = Case.replay(case.id, [])
    assert replayed.csat_until is None
