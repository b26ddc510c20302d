"""Consent keywords, the send-time rule, unsubscribe tokens and what the customer aggregate records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from events.customer import ConsentChanged
from events.interactions import Interaction
from services.domain import consent
from services.domain.customer import Customer

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 26, 10, tzinfo=UTC)


def _sms(text: str, channel: str = "sms", direction: str = "inbound") -> Interaction:
    return Interaction(id=uuid.uuid4(), channel=channel, direction=direction, occurred_at=T0, text=text)


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "stop",
        " Stop. ",
        "STOPALL",
        "unsubscribe",
        "Cancel",
        "END",
        "quit",
        "BAJA",
        "baja!",
        "No más",
        "stop all",
    ],
)
def test_opt_out_words_withdraw(text):
    assert consent.keyword_of(_sms(text)) == consent.Keyword(" ".join(text.strip().strip(".!¡").split()).upper(), False)


@pytest.mark.parametrize("text", ["START", "unstop", "Yes", "ALTA"])
def test_opt_in_words_restore(text):
    found = consent.keyword_of(_sms(text))
    assert found is not None and found.granted is True


@pytest.mark.parametrize(
    "interaction",
    [
        _sms("please stop sending me the invoice twice"),
        _sms("STOP", channel="email"),
        _sms("STOP", channel="chat"),
        _sms("STOP", direction="outbound"),
        _sms("stopp"),
        _sms(""),
    ],
)
def test_other_messages_are_no_keyword(interaction):
    assert consent.keyword_of(interaction) is None


def test_whatsapp_keywords_count_too():
    assert consent.keyword_of(_sms("STOP", channel="whatsapp")) == consent.Keyword("STOP", False)


def test_the_send_time_rule():
    assert consent.allowed(None, True, "implied") is True
    assert consent.allowed(None, False, "implied") is False
    assert consent.allowed(None, True, "explicit") is False
    assert consent.allowed(True, False, "explicit") is True
    assert consent.allowed(False, True, "implied") is False


def test_the_customer_records_each_change_once_and_answers_the_rule():
    c = Customer.register(uuid.uuid4(), T0)
    c.record(_sms("hola"), None)
    assert c.marketing_allowed("sms", "implied") and not c.marketing_allowed("sms", "explicit")
    assert not c.marketing_allowed("email", "implied")
    c.change_consent("sms", False, T0, source="keyword:STOP")
    c.change_consent("sms", False, T0, source="keyword:STOP")
    assert not c.marketing_allowed("sms", "implied")
    c.change_consent("email", True, T0, source="api:ana")
    assert c.marketing_allowed("email", "explicit")
    changes = [e for e in c.collect() if isinstance(e, ConsentChanged)]
    assert [(e.channel, e.granted, e.source) for e in changes] == [
        ("sms", False, "keyword:STOP"),
        ("email", True, "api:ana"),
    ]


def test_a_merge_carries_a_withdrawal_over_and_keeps_the_survivors_word():
    survivor, absorbed = Customer.register(uuid.uuid4(), T0), Customer.register(uuid.uuid4(), T0)
    absorbed.change_consent("sms", False, T0)
    absorbed.change_consent("email", False, T0)
    survivor.change_consent("email", True, T0)
    survivor.absorb(absorbed, T0)
    assert survivor.consents == {("marketing", "sms"): False, ("marketing", "email"): True}


def test_unsubscribe_tokens_round_trip_and_refuse_forgeries():
    key, other = consent.unsubscribe_key(b"k" * 32), consent.unsubscribe_key(b"j" * 32)
    customer_id = uuid.uuid4()
    token = consent.sign_unsubscribe(key, customer_id, "sms")
    assert consent.verify_unsubscribe(key, token) == (customer_id, "sms", "marketing")
    for bad in (consent.sign_unsubscribe(other, customer_id, "sms"), "x" * 80, "é", token[:-2], ""):
        with pytest.raises(consent.BadUnsubscribeToken):
            consent.verify_unsubscribe(key, bad)
    assert consent.unsubscribe_headers(None, key, customer_id) == {}


def test_a_snapshot_keeps_consent_and_the_channels_written_on():
    from services.core import snapshots  # noqa: PLC0415

    c = Customer.register(uuid.uuid4(), T0)
    c.record(_sms("hola", channel="whatsapp"), None)
    c.change_consent("sms", False, T0, source="keyword:STOP")
    c.change_consent("email", True, T0, source="api:ana")
    again = snapshots.customer_from(c.id, c.version, snapshots.state_of(c))
    assert again.consents == c.consents and again.inbound_channels == {"whatsapp"}
    assert again.marketing_allowed("whatsapp", "implied") and not again.marketing_allowed("sms", "implied")
