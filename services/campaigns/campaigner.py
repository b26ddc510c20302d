"""The campaigner role: sends running campaigns, each segment member at most once, also across crashes.

A `Follower` of the event log (one active per database; others stand by). Its handler keeps
`sb_campaign_runs` (which campaigns run, since when may they send) in step with the campaign events,
exactly once with its position. Its tick, for each running campaign whose `send_at` has come:

1. the first time, targets the segment: its members now (services.segments.members) go into
   `sb_campaign_recipients`, and `campaign.Targeted` records how many;
2. then sends to a few of them per tick (`campaign_rate_per_second`, per channel: the provider's
   throttle), each through the outbound ledger (services.relay.ledger, key
   `campaign:<campaign>:<customer>`): consent is checked at that moment, from the log
   (`marketing_allowed`), a member without it or without an address on the channel is skipped with
   the reason; a send that falls in the quiet hours of the member's time zone (customer attribute
   `timezone`, else the phone number's zone, else `campaign_default_timezone`) is deferred to their end;
3. records each outcome on the campaign (`campaign.MessageSent` / `MessageFailed` /
   `RecipientSkipped`) in the tick's transaction, with the recipient's row marked done, and
   `campaign.Completed` when no one is left.

What became of the messages sent (delivered, undelivered, replied to) is recorded here too, from
the provider's status callbacks and the recipients' messages: see services.campaigns.attribution.
An email carries the recipient's unsubscribe link (`List-Unsubscribe`, one-click, and in the body)
under the campaign's name as its subject; a WhatsApp campaign may send a message template.

A crash after the provider took a message and before the tick committed: the ledger row says `sent`
(or, killed before even that, the attempt is in doubt and Twilio is asked), so the next tick records
the outcome without sending again.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone

from channels.errors import ProviderError
from channels.outbound.port import Delivery, Sender
from channels.outbound.registry import RESEND_SAFE, provider_lookup, provider_senders
from events.campaign import (
    CampaignCompleted,
    CampaignCreated,
    CampaignFailed,
    CampaignPaused,
    CampaignStarted,
)
from events.customer import InteractionRecorded
from services.campaigns import attribution
from services.core.commands import NotFound, merged_customers
from services.domain import consent
from services.domain.campaign import Campaign, graph_template, parse_quiet_hours, quiet_until, template_label
from services.domain.config import Segment
from services.domain.customer import Customer
from services.domain.filters import SEGMENT_FIELDS, FilterError, parse
from services.platform.eventstore.store import EventStore, Transaction
from services.platform.follower import Follower
from services.platform.logs import get_logger
from services.platform.settings import Settings
from services.relay.ledger import OutboundLedger, deliver
from services.segments.members import segment_member_ids_sync

log = get_logger(__name__)

NAME = "campaigner"
TARGET_PAGE = 1000
_MESSAGE_NS = uuid.UUID("3c0d6a57-92b1-4d0e-8f55-6b1f0f2e9a41")
_RUN_STATUS: dict[type, str] = {
    CampaignStarted: "running",
    CampaignPaused: "paused",
    CampaignCompleted: "completed",
    CampaignFailed: "failed",
}
ADDRESS_KIND = {"sms": "phone", "whatsapp": "phone", "email": "email"}


def ledger_key(campaign_id: UUID, customer_id: UUID) -> str:
    return f"campaign:{campaign_id}:{customer_id}"


def message_id(campaign_id: UUID, customer_id: UUID) -> UUID:
    """The id of a campaign's message to one recipient: its outbound id (an email's Message-ID) and
    its timeline item's id."""
    return uuid.uuid5(_MESSAGE_NS, ledger_key(campaign_id, customer_id))


class _Loaded:
    """The campaigns one transaction changes, each loaded once: what it appends is in step with what
    it decided (two loads of one stream in one transaction would conflict with each other)."""

    def __init__(self, store: EventStore):
        self.store = store
        self.campaigns: dict[UUID, Campaign] = {}

    def __call__(self, campaign_id: UUID) -> Campaign:
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            campaign = self.campaigns[campaign_id] = Campaign.replay(campaign_id, self.store.load(campaign_id))
        return campaign

    def append_to(self, tx: Transaction) -> None:
        events = [e for c in self.campaigns.values() for e in c.collect()]
        if events:
            tx.append(events)


def rates(spec: str) -> dict[str, float]:
    """ "sms=10,whatsapp=20,email=50" → {"sms": 10.0, ...} (messages per second per channel)."""
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        if name.strip() and value.strip():
            out[name.strip()] = float(value)
    return out


def marketing_allowed(store: EventStore, settings: Settings, customer_id: UUID, channel: str) -> bool:
    """Consent at send time, from the log (never a read model that may lag a STOP): the survivor's
    recorded word on marketing by `channel` decides (a merge carries a withdrawal over); without one,
    the policy `SWITCHBOARD_MARKETING_CONSENT` does, `implied` counting every channel the customer
    (or anyone merged into them) wrote to us on. See services/domain/consent.py."""
    try:
        family = merged_customers(store, customer_id)
    except NotFound:
        return False
    survivor = family[0]
    if survivor.erased:
        return False
    recorded = survivor.consents.get(("marketing", channel))
    wrote = any(channel in c.inbound_channels for c in family)
    return consent.allowed(recorded, wrote, settings.marketing_consent)


def customer_zone(customer: Customer, default: str) -> ZoneInfo:
    """The customer's time zone: attribute `timezone`, else their phone number's (when it has one
    zone), else `default`."""
    candidates: list[str] = []
    attribute = customer.attributes.get("timezone")
    if isinstance(attribute, str):
        candidates.append(attribute)
    for kind, value in sorted(customer.identities):
        if kind == "phone":
            try:
                zones = phone_timezone.time_zones_for_number(phonenumbers.parse(value, None))
            except phonenumbers.NumberParseException:
                continue
            if len(set(zones)) == 1 and zones[0] != phone_timezone.UNKNOWN_TIMEZONE:
                candidates.append(zones[0])
    for name in [*candidates, default]:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


class Campaigner:
    def __init__(self, store: EventStore, settings: Settings, senders: dict[str, Sender] | None = None):
        self.store = store
        self.settings = settings
        self.senders = senders if senders is not None else provider_senders(settings)
        self.ledger = OutboundLedger(store, _conninfo(settings))
        self.rates = rates(settings.campaign_rate_per_second)

    def follower(self, clock: Callable[[], datetime] | None = None) -> Follower:
        return Follower(
            self.store, NAME, self.handle, tick=self.tick, tick_every=self.settings.campaign_tick_seconds, clock=clock
        )

    def run_forever(self, stop: threading.Event) -> None:
        self.ledger.hold_owner_lock()
        try:
            self.follower().run_forever(stop)
        finally:
            self.ledger.release_owner_lock()

    # -- the log --------------------------------------------------------------------------------------

    def handle(self, tx: Transaction, items: Sequence[tuple[int, Any, bool]]) -> None:
        campaigns = _Loaded(self.store)
        window = timedelta(seconds=self.settings.campaign_reply_window_seconds)
        for _position, event, _redacted in items:
            kind = type(event)
            if kind is InteractionRecorded:
                attribution.record_reply(tx, campaigns, event, window)
            elif kind is CampaignCreated:
                tx.execute(
                    "INSERT INTO sb_campaign_runs (campaign_id, status, send_at) VALUES (%s, 'draft', %s) "
                    "ON CONFLICT DO NOTHING",
                    (event.stream_id, event.send_at),
                )
            elif kind in _RUN_STATUS:
                status = _RUN_STATUS[kind]
                tx.execute("UPDATE sb_campaign_runs SET status = %s WHERE campaign_id = %s", (status, event.stream_id))
        campaigns.append_to(tx)

    # -- the clock ------------------------------------------------------------------------------------

    def tick(self, tx: Transaction, now: datetime) -> None:
        runs = tx.execute(
            "SELECT campaign_id, targeted FROM sb_campaign_runs WHERE status = 'running' "
            "AND (send_at IS NULL OR send_at <= %s) ORDER BY campaign_id",
            (now,),
        ).fetchall()
        budget = {
            channel: max(1, int(rate * self.settings.campaign_tick_seconds)) for channel, rate in self.rates.items()
        }
        campaigns = _Loaded(self.store)
        attribution.record_reported(tx, campaigns, now)
        for run in runs:
            campaign = campaigns(run["campaign_id"])
            if campaign.status != "running" or campaign.definition is None:
                continue
            if not run["targeted"]:
                self._target(tx, campaign, now)
            else:
                channel = campaign.definition.channel
                left = budget.setdefault(channel, 1)
                budget[channel] = left - self._send_some(tx, campaign, now, left)
            if not self._remaining(tx, campaign.id):
                campaign.complete(now)
        campaigns.append_to(tx)

    def _target(self, tx: Transaction, campaign: Campaign, now: datetime) -> None:
        definition = campaign.definition
        assert definition is not None
        try:
            segment = Segment.replay(definition.segment_id, self.store.load(definition.segment_id))
        except Exception:  # noqa: BLE001 — an unknown stream: no members
            segment = None
        members: list[UUID] = []
        if segment is not None and segment.definition is not None:
            try:
                tree = parse(segment.definition.filter, SEGMENT_FIELDS)
            except FilterError as exc:
                # Stored by an earlier release, refused by this one (a pattern outside the RE2 subset,
                # say): the campaign fails with the reason instead of stalling every tick.
                campaign.fail(f"segment {definition.segment_id}: {exc}", now)
                log.warning("campaign_failed", campaign_id=str(campaign.id), reason="segment filter refused")
                return
            after: UUID | None = None
            while True:
                page = segment_member_ids_sync(tx.curs, tree, after=after, limit=TARGET_PAGE, now=now)
                members.extend(page)
                if len(page) < TARGET_PAGE:
                    break
                after = page[-1]
        for member in members:
            tx.execute(
                "INSERT INTO sb_campaign_recipients (campaign_id, customer_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (campaign.id, member),
            )
        tx.execute("UPDATE sb_campaign_runs SET targeted = true WHERE campaign_id = %s", (campaign.id,))
        campaign.target(len(members), now)
        log.info("campaign_targeted", campaign_id=str(campaign.id), count=len(members))

    def _remaining(self, tx: Transaction, campaign_id: UUID) -> int:
        row = tx.execute(
            "SELECT count(*) AS n FROM sb_campaign_recipients WHERE campaign_id = %s AND NOT done", (campaign_id,)
        ).fetchone()
        return int(row["n"])

    def _send_some(self, tx: Transaction, campaign: Campaign, now: datetime, budget: int) -> int:
        rows = tx.execute(
            "SELECT customer_id FROM sb_campaign_recipients WHERE campaign_id = %s AND NOT done "
            "AND (not_before IS NULL OR not_before <= %s) ORDER BY customer_id LIMIT %s",
            (campaign.id, now, budget),
        ).fetchall()
        for row in rows:
            customer_id = row["customer_id"]
            deferred = self._one(campaign, customer_id, now)
            if deferred is not None:
                tx.execute(
                    "UPDATE sb_campaign_recipients SET not_before = %s WHERE campaign_id = %s AND customer_id = %s",
                    (deferred, campaign.id, customer_id),
                )
            else:
                tx.execute(
                    "UPDATE sb_campaign_recipients SET done = true WHERE campaign_id = %s AND customer_id = %s",
                    (campaign.id, customer_id),
                )
        return len(rows)

    def _one(self, campaign: Campaign, customer_id: UUID, now: datetime) -> datetime | None:
        """Sends to one member (or records why not); returns when to try again if deferred."""
        definition = campaign.definition
        assert definition is not None
        if customer_id in campaign.outcomes:
            return None
        channel = definition.channel
        key = ledger_key(campaign.id, customer_id)
        in_ledger = self.ledger.state(key)
        if in_ledger is None:  # nothing tried yet: consent, address and quiet hours decide
            try:
                family = merged_customers(self.store, customer_id)
            except NotFound:
                campaign.skipped(customer_id, "no_address", now)
                return None
            if not marketing_allowed(self.store, self.settings, customer_id, channel):
                campaign.skipped(customer_id, "no_consent", now)
                return None
            identities = frozenset(i for c in family for i in c.identities)
            if not any(kind == ADDRESS_KIND[channel] for kind, _ in identities):
                campaign.skipped(customer_id, "no_address", now)
                return None
            quiet = parse_quiet_hours(definition.quiet_hours)
            zone = customer_zone(family[0], self.settings.campaign_default_timezone)
            later = quiet_until(now.astimezone(zone), quiet)
            if later is not None:
                return later.astimezone(UTC)
        else:
            family = merged_customers(self.store, customer_id)
            identities = frozenset(i for c in family for i in c.identities)
        delivery = self._delivery(campaign, customer_id, family, identities)
        sender = self.senders.get(channel)
        if sender is None:
            campaign.failed(customer_id, f"outbound {channel} is not configured", now)
            return None
        result = asyncio.run(
            deliver(
                self.ledger,
                key,
                channel,
                lambda: sender(delivery),
                lookup=provider_lookup(self.settings, delivery),
                resend_safe=channel in RESEND_SAFE,
            )
        )
        if result.status == "sent":
            attribution.remember_message(self.store, campaign.id, customer_id, channel, result.provider_message_id, now)
            text = template_label(definition.whatsapp_template) if definition.whatsapp_template else delivery.text
            campaign.sent(customer_id, now, message_id=delivery.reply_id, channel=channel, text=text)
            self.ledger.forget_provider_id(key)
        elif result.status == "failed":
            campaign.failed(customer_id, result.reason or "failed", now)
        else:  # an outage: this member again on a later tick
            error = result.error or ProviderError(True, "not settled")
            log.warning("campaign_send_retry", campaign_id=str(campaign.id), reason=error.detail)
            return now + _retry_delay(error)
        return None

    def _delivery(
        self, campaign: Campaign, customer_id: UUID, family: list[Customer], identities: frozenset[tuple[str, str]]
    ) -> Delivery:
        """The message to one recipient: the campaign's text or template; an email under the
        campaign's name with the recipient's unsubscribe link (none without `public_url`: the link
        must reach us from the reader's mail client); a WhatsApp message from the business number the
        customer last wrote to (their latest WhatsApp thread: the Cloud API's or Twilio's), else
        Twilio's configured number. A template goes through the Cloud API only."""
        definition = campaign.definition
        assert definition is not None
        channel = definition.channel
        survivor = family[0]
        thread_key = None
        if channel == "whatsapp":
            threads = [k for c in family for k in c.threads if k.startswith("whatsapp:")]
            thread_key = threads[-1] if threads else None
        unsubscribe = None
        if channel == "email":
            headers = consent.unsubscribe_headers(
                self.settings.public_url, consent.unsubscribe_key(self.settings.master_key_bytes), survivor.id, channel
            )
            unsubscribe = headers.get("List-Unsubscribe", "").strip("<>") or None
        return Delivery(
            reply_id=message_id(campaign.id, customer_id),
            case_id=campaign.id,
            customer_id=survivor.id,
            channel=channel,
            thread_key=thread_key,
            text=definition.text or "",
            identities=identities,
            thread_meta={"subject": definition.name} if channel == "email" else {},
            campaign=True,
            template=graph_template(definition.whatsapp_template) if definition.whatsapp_template else None,
            unsubscribe_url=unsubscribe,
        )


def _retry_delay(error: ProviderError) -> timedelta:
    return timedelta(seconds=min(error.retry_after or 5.0, 300.0))


def _conninfo(settings: Settings) -> str | None:
    if not settings.database_url:
        return None
    from services.platform.database import parse_database_url  # noqa: PLC0415

    return parse_database_url(settings.database_url).conninfo


def campaign_view(campaign: Campaign) -> dict[str, Any]:
    d = campaign.definition
    assert d is not None
    return {
        "id": str(campaign.id),
        "name": d.name,
        "segment_id": str(d.segment_id),
        "channel": d.channel,
        "text": d.text,
        "whatsapp_template": d.whatsapp_template,
        "send_at": d.send_at,
        "quiet_hours": d.quiet_hours,
        "status": campaign.status,
        "created_at": d.occurred_at,
        "counts": campaign.counts(),
        "failure": campaign.failure,
    }
