"""Campaign rules (pure): definition checks, start/pause/complete, one outcome per recipient, quiet
hours across midnight, per-channel rates and the recipient's time zone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from services.campaigns.campaigner import customer_zone, rates
from services.domain.aggregate import DomainError
from services.domain.campaign import Campaign, graph_template, parse_quiet_hours, quiet_until, template_label
from services.domain.customer import Customer

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SEGMENT = uuid.UUID("11111111-2222-4333-8444-555555555555")


def created(**overrides) -> Campaign:
    c = Campaign(uuid.uuid4())
    fields = {
        "name": "Spring sale",
        "segment_id": SEGMENT,
        "channel": "sms",
        "text": "20% off",
        "whatsapp_template": None,
        "send_at": None,
        "quiet_hours": None,
        "by": "sup",
        "at": AT,
    }
    c.create(**{**fields, **overrides})
    return c


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": " "}, "name"),
        ({"channel": "fax"}, "channel"),
        ({"text": None}, "text"),
        ({"text": "x" * 1601}, "longer"),
        ({"whatsapp_template": {"name": "promo", "language": "en"}}, "whatsapp channel only"),
        ({"channel": "whatsapp", "text": None, "whatsapp_template": {"name": "promo"}}, "language"),
        ({"channel": "whatsapp", "text": None, "whatsapp_template": "promo"}, "must be an object"),
        (
            {"channel": "whatsapp", "text": None, "whatsapp_template": {"name": "Promo Spring", "language": "en"}},
            "name",
        ),
        ({"channel": "whatsapp", "text": None, "whatsapp_template": {"name": "promo", "language": "english"}}, "code"),
        (
            {"channel": "whatsapp", "text": None, "whatsapp_template": {"name": "p", "language": "en", "x": 1}},
            "unknown field",
        ),
        (
            {
                "channel": "whatsapp",
                "text": None,
                "whatsapp_template": {"name": "p", "language": "en", "components": []},
            },
            "non-empty list",
        ),
        (
            {
                "channel": "whatsapp",
                "text": None,
                "whatsapp_template": {"name": "p", "language": "en", "components": [{"type": "middle"}]},
            },
            r"components\[0\]\.type",
        ),
        (
            {
                "channel": "whatsapp",
                "text": None,
                "whatsapp_template": {
                    "name": "p",
                    "language": "en",
                    "components": [{"type": "body", "parameters": ["Ana"]}],
                },
            },
            r"components\[0\]\.parameters",
        ),
        ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "21:00"}}, "exactly"),
        ({"send_at": datetime(2026, 3, 1, 9, 0)}, "time zone"),
    ],
)
def test_a_bad_definition_is_refused_naming_what_is_wrong(overrides, message):
    with pytest.raises(DomainError, match=message):
        created(**overrides)


def test_a_whatsapp_template_campaign_needs_no_text():
    c = created(channel="whatsapp", text=None, whatsapp_template={"name": "promo", "language": "en_US"})
    assert c.definition is not None and c.definition.whatsapp_template == {"name": "promo", "language": "en_US"}
    assert graph_template(c.definition.whatsapp_template) == {"name": "promo", "language": {"code": "en_US"}}
    assert template_label(c.definition.whatsapp_template) == "template promo (en_US)"
    components = [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]
    given = {"name": "promo", "language": {"code": "pt_BR"}, "components": components}
    assert graph_template(given) == given


def test_delivery_and_replies_count_once_per_recipient_and_only_for_sent_messages():
    c = created()
    c.start("sup", AT)
    a, b, d, e = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    c.target(4, AT)
    c.sent(a, AT, message_id=uuid.uuid4(), channel="sms", text="20% off")
    c.sent(b, AT)
    c.failed(d, "twilio answered HTTP 400", AT)
    c.delivered(a, AT)
    c.delivered(a, AT)  # the provider repeated its callback
    c.undelivered(a, "twilio error 30003", AT)  # a later word changes nothing
    c.undelivered(b, "twilio error 30003", AT)
    c.delivered(d, AT)  # never sent: nothing to deliver
    c.delivered(e, AT)  # no outcome at all
    c.reply_received(a, AT)
    c.reply_received(a, AT)  # first reply only
    c.reply_received(e, AT)
    events = c.collect()
    assert [x.NAME for x in events].count("campaign.MessageDelivered") == 1
    assert [x.NAME for x in events].count("campaign.MessageUndelivered") == 1
    assert [x.NAME for x in events].count("campaign.MessageReplied") == 1
    assert c.counts() == {
        "targeted": 4,
        "skipped_no_consent": 0,
        "skipped_no_address": 0,
        "sent": 2,
        "delivered": 1,
        "failed": 2,  # d never taken, b undelivered
        "replied": 1,
    }
    assert Campaign.replay(c.id, events).counts() == c.counts()


def test_start_pause_resume_complete_and_each_recipient_counted_once():
    c = created()
    c.start("sup", AT)
    c.start("sup", AT)  # already running: nothing
    c.pause("sup", AT)
    c.start("sup", AT)  # resume
    history = c.collect()
    assert [e.NAME for e in history] == [
        "campaign.Created",
        "campaign.Started",
        "campaign.Paused",
        "campaign.Started",
    ]
    a, b, d = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    c.target(3, AT)
    c.target(5, AT)  # once
    c.sent(a, AT)
    c.sent(a, AT)
    c.failed(a, "late duplicate", AT)  # a recipient has one outcome
    c.skipped(b, "no_consent", AT)
    c.complete(AT)  # d has no outcome yet
    assert c.status == "running"
    c.failed(d, "twilio answered HTTP 400", AT)
    c.complete(AT)
    assert c.status == "completed"
    replayed = Campaign.replay(c.id, [*history, *c.collect()])  # the log rebuilds the same state
    assert (replayed.status, replayed.counts()) == (c.status, c.counts())
    assert c.counts() == {
        "targeted": 3,
        "skipped_no_consent": 1,
        "skipped_no_address": 0,
        "sent": 1,
        "delivered": 0,
        "failed": 1,
        "replied": 0,
    }
    with pytest.raises(DomainError):
        c.start("sup", AT)


def test_quiet_hours_defer_to_their_end_in_local_time_across_midnight():
    quiet = parse_quiet_hours({"start": "21:00", "end": "08:00"})
    assert quiet == (time(21), time(8))
    madrid = ZoneInfo("Europe/Madrid")
    assert quiet_until(datetime(2026, 3, 1, 12, 0, tzinfo=madrid), quiet) is None
    assert quiet_until(datetime(2026, 3, 1, 22, 30, tzinfo=madrid), quiet) == datetime(2026, 3, 2, 8, 0, tzinfo=madrid)
    assert quiet_until(datetime(2026, 3, 2, 6, 0, tzinfo=madrid), quiet) == datetime(2026, 3, 2, 8, 0, tzinfo=madrid)
    assert quiet_until(datetime(2026, 3, 2, 8, 0, tzinfo=madrid), quiet) is None
    lunch = parse_quiet_hours({"start": "13:00", "end": "15:00"})
    assert quiet_until(datetime(2026, 3, 2, 14, 0, tzinfo=madrid), lunch) == datetime(2026, 3, 2, 15, 0, tzinfo=madrid)
    assert quiet_until(datetime(2026, 3, 2, 14, 0, tzinfo=madrid), None) is None


def test_rates_per_channel():
    assert rates("sms=10, whatsapp=2.5,email=50") == {"sms": 10.0, "whatsapp": 2.5, "email": 50.0}


def test_the_customers_zone_from_the_attribute_else_the_phone_number_else_the_default():
    customer = Customer(uuid.uuid4())
    assert customer_zone(customer, "Europe/Lisbon") == ZoneInfo("Europe/Lisbon")
    customer.identities.add(("phone", "+34600000000"))  # a mobile: Madrid or the Canaries, no guess
    assert customer_zone(customer, "UTC") == ZoneInfo("UTC")
    customer.identities = {("phone", "+34912345678")}  # a Madrid landline
    assert customer_zone(customer, "UTC") == ZoneInfo("Europe/Madrid")
    customer.attributes["timezone"] = "America/New_York"
    assert customer_zone(customer, "UTC") == ZoneInfo("America/New_York")
    customer.attributes["timezone"] = "Not/AZone"
    assert customer_zone(customer, "UTC") == ZoneInfo("Europe/Madrid")


def test_a_failed_campaign_says_why_once_and_cannot_be_started_or_paused() -> None:
    from services.domain.aggregate import DomainError
    from tests.fixtures.campaigns import running_campaign

    at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    campaign = running_campaign(2, at)
    campaign.collect()
    campaign.fail("segment x: filter refused", at)
    campaign.fail("again", at)
    [failed] = campaign.collect()
    assert failed.NAME == "campaign.Failed" and failed.reason == "segment x: filter refused"
    assert campaign.status == "failed" and campaign.failure == "segment x: filter refused"
    for command in (campaign.start, campaign.pause):
        with pytest.raises(DomainError, match="failed"):
            command("supervisor", at)
