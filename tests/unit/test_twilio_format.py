"""Twilio's formats: the signature (checked against Twilio's own library), the messaging webhook
and the status callback."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from channels.errors import Malformed
from channels.phone import normalize_phone, phone_from_wa_id
from channels.sms.twilio import (
    HMAC_SHA256,
    parse_twilio_message,
    parse_twilio_status,
    signature_algorithm,
    twilio_signature,
    validate_twilio_signature,
)
from events.interactions import ENCODER, INTERACTION_DECODER, Interaction, interaction_id

pytestmark = pytest.mark.unit

TOKEN = "12345678901234567890123456789012"
URL = "https://switchboard.example.com/channels/sms/twilio"
RECEIVED = datetime(2025, 6, 8, 12, 0, tzinfo=UTC)

SMS_FORM = {
    "ToCountry": "US",
    "ToState": "CA",
    "SmsMessageSid": "SM1f2e3d4c5b6a79881726354453627181",
    "NumMedia": "0",
    "ToCity": "SAN FRANCISCO",
    "FromZip": "94105",
    "SmsSid": "SM1f2e3d4c5b6a79881726354453627181",
    "FromState": "CA",
    "SmsStatus": "received",
    "FromCity": "SAN FRANCISCO",
    "Body": "Hi, my parcel has not arrived yet",
    "FromCountry": "US",
    "To": "+14155552671",
    "MessagingServiceSid": "MG9752274e9e519418a7406176694466fa",
    "ToZip": "94105",
    "NumSegments": "1",
    "MessageSid": "SM1f2e3d4c5b6a79881726354453627181",
    "AccountSid": "ACae0e1f5d3b4c2a1908f7e6d5c4b3a291",
    "From": "+1 (415) 555-0100",
    "ApiVersion": "2010-04-01",
}

MMS_FORM = {
    **SMS_FORM,
    "MessageSid": "MMc781610ec0b3400c9e0cab8e757da937",
    "SmsMessageSid": "MMc781610ec0b3400c9e0cab8e757da937",
    "SmsSid": "MMc781610ec0b3400c9e0cab8e757da937",
    "Body": "Two photos of the damage",
    "NumMedia": "2",
    "MediaContentType0": "image/jpeg",
    "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/ACae0e1f5d3b4c2a1908f7e6d5c4b3a291/"
    "Messages/MMc781610ec0b3400c9e0cab8e757da937/Media/ME27be8a1c5e5fb0a7f3b3a3e8e9d0c0b1",
    "MediaContentType1": "image/png",
    "MediaUrl1": "https://api.twilio.com/2010-04-01/Accounts/ACae0e1f5d3b4c2a1908f7e6d5c4b3a291/"
    "Messages/MMc781610ec0b3400c9e0cab8e757da937/Media/ME8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e",
}

WHATSAPP_FORM = {
    "SmsMessageSid": "SMb7a9c7e2f7b94c4e8d2e4f6a1b3c5d7e",
    "NumMedia": "0",
    "ProfileName": "Grace Hopper",
    "MessageType": "text",
    "SmsSid": "SMb7a9c7e2f7b94c4e8d2e4f6a1b3c5d7e",
    "WaId": "447700900123",
    "SmsStatus": "received",
    "Body": "Can I change my delivery address?",
    "To": "whatsapp:+14155238886",
    "NumSegments": "1",
    "ReferralNumMedia": "0",
    "MessageSid": "SMb7a9c7e2f7b94c4e8d2e4f6a1b3c5d7e",
    "AccountSid": "ACae0e1f5d3b4c2a1908f7e6d5c4b3a291",
    "From": "whatsapp:+447700900123",
    "ApiVersion": "2010-04-01",
}

STATUS_FORM = {
    "SmsSid": "SM8f2c1e5a0b9d4c7e6f3a2b1c0d9e8f7a",
    "SmsStatus": "delivered",
    "MessageStatus": "delivered",
    "To": "+14155550100",
    "MessagingServiceSid": "MG9752274e9e519418a7406176694466fa",
    "MessageSid": "SM8f2c1e5a0b9d4c7e6f3a2b1c0d9e8f7a",
    "AccountSid": "ACae0e1f5d3b4c2a1908f7e6d5c4b3a291",
    "From": "+14155552671",
    "ApiVersion": "2010-04-01",
}


def round_trips(interaction: Interaction) -> None:
    assert INTERACTION_DECODER.decode(ENCODER.encode(interaction)) == interaction


# -- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "https://switchboard.example.com:443/channels/sms/twilio",
        "http://localhost:8000/channels/sms/twilio?tenant=acme&x=1",
        "http://switchboard.example.com/channels/sms/twilio",
        "https://user:pass@switchboard.example.com/channels/sms/twilio",
    ],
)
def test_signatures_agree_with_twilio_library_both_ways(url):
    validator = RequestValidator(TOKEN)

    theirs = validator.compute_signature(url, SMS_FORM)
    ours = twilio_signature(TOKEN, url, SMS_FORM)

    assert ours == theirs
    assert validate_twilio_signature(TOKEN, url, SMS_FORM, theirs)
    assert validator.validate(url, SMS_FORM, ours)


def test_url_signed_with_or_without_default_port_is_accepted():
    with_port = "https://switchboard.example.com:443/channels/sms/twilio"
    signed_without = RequestValidator(TOKEN).compute_signature(URL, SMS_FORM)
    signed_with = RequestValidator(TOKEN).compute_signature(with_port, SMS_FORM)

    assert validate_twilio_signature(TOKEN, with_port, SMS_FORM, signed_without)
    assert validate_twilio_signature(TOKEN, URL, SMS_FORM, signed_with)
    http_url = "http://switchboard.example.com/hook"
    signed_http_port = RequestValidator(TOKEN).compute_signature("http://switchboard.example.com:80/hook", {})
    assert validate_twilio_signature(TOKEN, http_url, {}, signed_http_port)


def test_json_body_is_signed_through_its_hash_in_the_url():
    body = '{"MessageSid": "SM1", "Body": "hello"}'
    url = f"{URL}?{urlencode({'bodySHA256': hashlib.sha256(body.encode()).hexdigest()})}"
    signature = RequestValidator(TOKEN).compute_signature(url, {})

    assert RequestValidator(TOKEN).validate(url, body, signature)
    assert validate_twilio_signature(TOKEN, url, body, signature)
    assert validate_twilio_signature(TOKEN, url, body.encode(), signature)
    assert not validate_twilio_signature(TOKEN, url, body.replace("hello", "hellO"), signature)
    # A raw body without its hash in the URL is not covered by any signature.
    assert not validate_twilio_signature(TOKEN, URL, body, twilio_signature(TOKEN, URL, {}))


def test_repeated_parameters_are_signed_like_the_library_does():
    class MultiDict(dict):
        def getall(self, name):
            return self[name]

    params = {"Body": ["b", "a", "a"], "To": ["+1"]}
    theirs = RequestValidator(TOKEN).compute_signature(URL, MultiDict(params))

    assert twilio_signature(TOKEN, URL, params) == theirs
    assert twilio_signature(TOKEN, URL, MultiDict(params)) == theirs


def test_shared_key_sha256_signatures():
    header = "key=webhooks_sharedkey_123,algorithm=HMAC_SHA256"
    algorithm = signature_algorithm(header)
    theirs = RequestValidator(TOKEN).compute_signature(URL, SMS_FORM, algorithm)

    assert algorithm == HMAC_SHA256
    assert signature_algorithm(None) == "HMAC_SHA1"
    assert twilio_signature(TOKEN, URL, SMS_FORM, algorithm=algorithm) == theirs
    assert validate_twilio_signature(TOKEN, URL, SMS_FORM, theirs, algorithm=algorithm)
    assert not validate_twilio_signature(TOKEN, URL, SMS_FORM, theirs)
    assert not validate_twilio_signature(TOKEN, URL, SMS_FORM, theirs, algorithm="HMAC_MD5")


def test_tampering_is_rejected():
    signature = RequestValidator(TOKEN).compute_signature(URL, SMS_FORM)

    assert not validate_twilio_signature(TOKEN, URL, {**SMS_FORM, "Body": "Send me money"}, signature)
    assert not validate_twilio_signature(TOKEN, URL, {**SMS_FORM, "Extra": "1"}, signature)
    without_body = {k: v for k, v in SMS_FORM.items() if k != "Body"}
    assert not validate_twilio_signature(TOKEN, URL, without_body, signature)
    assert not validate_twilio_signature(TOKEN, URL + "/other", SMS_FORM, signature)
    assert not validate_twilio_signature(TOKEN, URL.replace("https", "http"), SMS_FORM, signature)
    assert not validate_twilio_signature("0" * 32, URL, SMS_FORM, signature)
    assert not validate_twilio_signature(TOKEN, URL, SMS_FORM, None)
    assert not validate_twilio_signature(TOKEN, URL, SMS_FORM, "")
    assert not validate_twilio_signature(TOKEN, URL, SMS_FORM, signature[:-2] + "é=")
    assert not validate_twilio_signature("", URL, SMS_FORM, twilio_signature("", URL, SMS_FORM))


_urls = st.sampled_from([URL, "https://a.example:8443/x?y=1", "http://127.0.0.1:8000/channels/sms/twilio", "http://b/"])


@settings(max_examples=60, deadline=None)
@given(
    params=st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=8),
    url=_urls,
    token=st.text(min_size=1, max_size=40),
)
def test_fuzzed_signatures_agree_with_twilio_library(params, url, token):
    validator = RequestValidator(token)
    theirs = validator.compute_signature(url, params)

    assert twilio_signature(token, url, params) == theirs
    assert validate_twilio_signature(token, url, params, theirs)
    assert validator.validate(url, params, twilio_signature(token, url, params))


# -- messaging webhook -------------------------------------------------------------------------


def test_sms_becomes_an_inbound_sms_interaction():
    interaction = parse_twilio_message(SMS_FORM, received_at=RECEIVED)

    assert interaction.id == interaction_id("sms", "SM1f2e3d4c5b6a79881726354453627181")
    assert interaction.channel == "sms"
    assert interaction.direction == "inbound"
    assert interaction.kind == "message"
    assert interaction.occurred_at == RECEIVED
    assert [(i.kind, i.value, i.verified) for i in interaction.identities] == [("phone", "+14155550100", True)]
    assert interaction.text == "Hi, my parcel has not arrived yet"
    assert interaction.thread_key == "sms:+14155552671:+14155550100"
    assert interaction.provider_message_id == "SM1f2e3d4c5b6a79881726354453627181"
    assert interaction.attachments == []
    assert interaction.profile == {}
    assert interaction.meta["provider"] == "twilio"
    assert interaction.meta["to"] == "+14155552671"
    round_trips(interaction)


def test_a_retried_webhook_gets_the_same_id():
    first = parse_twilio_message(SMS_FORM)
    again = parse_twilio_message(dict(SMS_FORM))

    assert first.id == again.id


def test_mms_media_become_attachments_referencing_twilio():
    interaction = parse_twilio_message(MMS_FORM, received_at=RECEIVED)

    assert interaction.kind == "media"
    assert interaction.text == "Two photos of the damage"
    assert [(a.name, a.content_type, a.ref, a.size, a.sha256) for a in interaction.attachments] == [
        ("ME27be8a1c5e5fb0a7f3b3a3e8e9d0c0b1.jpg", "image/jpeg", MMS_FORM["MediaUrl0"], 0, ""),
        ("ME8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e.png", "image/png", MMS_FORM["MediaUrl1"], 0, ""),
    ]
    round_trips(interaction)


def test_whatsapp_through_twilio_is_recorded_on_whatsapp_with_the_phone_identity():
    interaction = parse_twilio_message(WHATSAPP_FORM, received_at=RECEIVED)

    assert interaction.channel == "whatsapp"
    assert interaction.id == interaction_id("whatsapp", WHATSAPP_FORM["MessageSid"])
    assert [(i.kind, i.value) for i in interaction.identities] == [("phone", "+447700900123")]
    assert interaction.profile == {"name": "Grace Hopper"}
    assert interaction.thread_key == "whatsapp:+14155238886:+447700900123"
    assert interaction.text == "Can I change my delivery address?"
    assert phone_from_wa_id(WHATSAPP_FORM["WaId"]) == interaction.identities[0].value
    round_trips(interaction)


def test_whatsapp_location_through_twilio():
    form = {
        **WHATSAPP_FORM,
        "Body": "",
        "MessageType": "location",
        "Latitude": "51.5033635",
        "Longitude": "-0.1276248",
        "Label": "10 Downing Street",
    }
    interaction = parse_twilio_message(form)

    assert interaction.kind == "location"
    assert interaction.text == "Location: 51.5033635,-0.1276248 10 Downing Street"
    assert interaction.meta["latitude"] == "51.5033635"


@pytest.mark.parametrize(
    "change",
    [
        {"MessageSid": None, "SmsMessageSid": None, "SmsSid": None},
        {"From": None},
        {"From": "not a number"},
        {"From": "+1234"},
        {"MessageSid": "SM 1; DROP TABLE"},
    ],
)
def test_missing_or_invalid_sid_or_sender_is_malformed(change):
    form = {k: v for k, v in {**SMS_FORM, **change}.items() if v is not None}

    with pytest.raises(Malformed) as raised:
        parse_twilio_message(form)
    assert raised.value.status == 400
    assert raised.value.code == "malformed"
    assert "0100" not in raised.value.detail  # no personal data in errors


# -- status callback ---------------------------------------------------------------------------


def test_status_callback_becomes_a_status_interaction():
    interaction = parse_twilio_status(STATUS_FORM, received_at=RECEIVED)

    assert interaction.kind == "status"
    assert interaction.status == "delivered"
    assert interaction.channel == "sms"
    assert interaction.direction == "outbound"
    assert interaction.provider_message_id == "SM8f2c1e5a0b9d4c7e6f3a2b1c0d9e8f7a"
    assert interaction.id == interaction_id("sms", "SM8f2c1e5a0b9d4c7e6f3a2b1c0d9e8f7a:status:delivered")
    assert [(i.kind, i.value) for i in interaction.identities] == [("phone", "+14155550100")]
    assert interaction.thread_key == "sms:+14155552671:+14155550100"
    round_trips(interaction)


def test_each_status_of_a_message_is_its_own_interaction_with_error_code():
    failed = parse_twilio_status({**STATUS_FORM, "MessageStatus": "undelivered", "ErrorCode": "30003"})
    delivered = parse_twilio_status(STATUS_FORM)

    assert failed.id != delivered.id
    assert failed.status == "undelivered"
    assert failed.meta["error_code"] == "30003"
    assert failed.meta["error"] == "twilio error 30003"


def test_status_without_status_or_sid_is_malformed():
    with pytest.raises(Malformed):
        parse_twilio_status({"MessageSid": "SM1"})
    with pytest.raises(Malformed):
        parse_twilio_status({"MessageStatus": "sent"})


# -- phone numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("14155550100", None, "+14155550100"),
        ("whatsapp:+447700900123", None, "+447700900123"),
        ("07700 900123", "GB", "+447700900123"),
        ("+15558675310", None, "+15558675310"),
    ],
)
def test_phone_numbers_are_normalized_to_e164(raw, region, e164):
    assert normalize_phone(raw, region) == e164
    assert normalize_phone(e164) == e164


@pytest.mark.parametrize("raw", ["", "   ", "hello", "+1234", "+999123456789", "07700 900123"])
def test_impossible_phone_numbers_are_malformed(raw):
    with pytest.raises(Malformed):
        normalize_phone(raw)


# -- fuzzing -----------------------------------------------------------------------------------

_KEYS = sorted(
    set(SMS_FORM)
    | set(MMS_FORM)
    | set(WHATSAPP_FORM)
    | set(STATUS_FORM)
    | {"Latitude", "Longitude", "ButtonText", "ErrorCode", "MediaUrl9", "MediaUrl007"}
)
_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["+14155550100", "whatsapp:+447700900123", "SM123", "delivered", "2", "1e9"]),
)
_forms = st.one_of(
    st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=10),
    st.dictionaries(st.sampled_from(_KEYS), _values, max_size=25),
    st.builds(
        lambda base, changes: {**base, **changes},
        st.sampled_from([SMS_FORM, MMS_FORM, WHATSAPP_FORM, STATUS_FORM]),
        st.dictionaries(st.sampled_from(_KEYS), _values, max_size=4),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(form=_forms)
def test_fuzzed_forms_parse_or_are_malformed(form):
    for parse in (parse_twilio_message, parse_twilio_status):
        try:
            interaction = parse(form)
        except Malformed:
            continue
        assert isinstance(interaction, Interaction)
        round_trips(interaction)
        for identity in interaction.identities:
            assert normalize_phone(identity.value) == identity.value
