"""A campaign: one message to every member of a segment on one channel, each member at most once.

Pure domain: no I/O, no clock. Status: `draft` → `running` (start; sending waits for `send_at`)
⇄ `paused` → `completed` (every targeted member has an outcome). Each recipient's outcome is
recorded once: a second outcome for the same member records nothing, so a retried or duplicated
send step is harmless. Quiet hours are checked here too (`quiet_until`), on a local time the
caller works out from the recipient's time zone.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any
from uuid import UUID

from events.campaign import (
    CAMPAIGN_CHANNELS,
    CAMPAIGN_EVENTS,
    CampaignCompleted,
    CampaignCreated,
    CampaignMessageFailed,
    CampaignMessageSent,
    CampaignPaused,
    CampaignRecipientSkipped,
    CampaignStarted,
    CampaignTargeted,
    SkipReason,
)
from services.domain.aggregate import Aggregate, DomainError

MAX_NAME = 200
MAX_TEXT = 1600
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def parse_quiet_hours(raw: dict[str, str] | None) -> tuple[time, time] | None:
    """{"start": "21:00", "end": "08:00"} → (21:00, 08:00); a DomainError names what is wrong."""
    if raw is None:
        return None
    if set(raw) != {"start", "end"}:
        raise DomainError('quiet_hours needs exactly "start" and "end" ("HH:MM")')
    out = []
    for key in ("start", "end"):
        match = _CLOCK.match(str(raw[key]))
        if match is None:
            raise DomainError(f"quiet_hours.{key} must be HH:MM (24 h)")
        out.append(time(int(match.group(1)), int(match.group(2))))
    if out[0] == out[1]:
        raise DomainError("quiet_hours.start and quiet_hours.end must differ")
    return out[0], out[1]


def quiet_until(local_now: datetime, quiet: tuple[time, time] | None) -> datetime | None:
    """When a send at `local_now` (the recipient's local time, aware) may go, if it falls inside the
    quiet hours: their end, local; None when it may go now. A window may span midnight (21:00-08:00)."""
    if quiet is None:
        return None
    start, end = quiet
    t = local_now.timetz().replace(tzinfo=None)
    if start < end:
        inside = start <= t < end
        end_day = local_now.date()
    else:
        inside = t >= start or t < end
        end_day = local_now.date() + timedelta(days=1) if t >= start else local_now.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=local_now.tzinfo)


class Campaign(Aggregate):
    EVENTS = CAMPAIGN_EVENTS

    def __init__(self, id: UUID):
        super().__init__(id)
        self.definition: CampaignCreated | None = None
        self.status = "draft"
        self.targeted: int | None = None
        self.outcomes: dict[UUID, str] = {}  # recipient → sent | failed | no_consent | no_address

    @property
    def owner_id(self) -> UUID:
        return self.id

    # -- commands ---------------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        segment_id: UUID,
        channel: str,
        text: str | None,
        whatsapp_template: dict[str, Any] | None,
        send_at: datetime | None,
        quiet_hours: dict[str, str] | None,
        by: str,
        at: datetime,
    ) -> None:
        if self.definition is not None:
            return
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise DomainError(f"a campaign needs a name of 1 to {MAX_NAME} characters")
        if channel not in CAMPAIGN_CHANNELS:
            raise DomainError(f"channel must be one of {', '.join(CAMPAIGN_CHANNELS)}")
        if whatsapp_template is not None:
            if channel != "whatsapp":
                raise DomainError("whatsapp_template is for the whatsapp channel only")
            if text is not None:
                raise DomainError('give "text" or "whatsapp_template", not both')
            if not isinstance(whatsapp_template.get("name"), str) or not whatsapp_template["name"].strip():
                raise DomainError("whatsapp_template needs a name")
            if not isinstance(whatsapp_template.get("language"), str) or not whatsapp_template["language"].strip():
                raise DomainError("whatsapp_template needs a language (e.g. en_US)")
        elif text is None or not text.strip():
            raise DomainError('a campaign needs "text" (or "whatsapp_template" on whatsapp)')
        elif len(text) > MAX_TEXT:
            raise DomainError(f"text is longer than {MAX_TEXT} characters")
        if send_at is not None and send_at.tzinfo is None:
            raise DomainError("send_at needs a time zone")
        parse_quiet_hours(quiet_hours)
        self._trigger(
            CampaignCreated,
            at,
            name=name,
            segment_id=segment_id,
            channel=channel,
            text=text,
            whatsapp_template=whatsapp_template,
            send_at=send_at,
            quiet_hours=quiet_hours,
            by=by,
        )

    def start(self, by: str, at: datetime) -> None:
        if self.status == "completed":
            raise DomainError("the campaign is completed")
        if self.status != "running":
            self._trigger(CampaignStarted, at, by=by)

    def pause(self, by: str, at: datetime) -> None:
        if self.status == "completed":
            raise DomainError("the campaign is completed")
        if self.status == "running":
            self._trigger(CampaignPaused, at, by=by)

    def target(self, count: int, at: datetime) -> None:
        if self.targeted is None:
            self._trigger(CampaignTargeted, at, count=count)

    def skipped(self, recipient_id: UUID, reason: SkipReason, at: datetime) -> None:
        if recipient_id not in self.outcomes:
            self._trigger(CampaignRecipientSkipped, at, recipient_id=recipient_id, reason=reason)

    def sent(self, recipient_id: UUID, at: datetime) -> None:
        if recipient_id not in self.outcomes:
            self._trigger(CampaignMessageSent, at, recipient_id=recipient_id)

    def failed(self, recipient_id: UUID, reason: str, at: datetime) -> None:
        if recipient_id not in self.outcomes:
            self._trigger(CampaignMessageFailed, at, recipient_id=recipient_id, reason=reason[:300])

    def complete(self, at: datetime) -> None:
        if self.status != "completed" and self.targeted is not None and len(self.outcomes) >= self.targeted:
            self._trigger(CampaignCompleted, at)

    # -- reads --------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        values = list(self.outcomes.values())
        return {
            "targeted": self.targeted or 0,
            "skipped_no_consent": values.count("no_consent"),
            "skipped_no_address": values.count("no_address"),
            "sent": values.count("sent"),
            "failed": values.count("failed"),
        }

    # -- state --------------------------------------------------------------------------------------

    def when_Created(self, e: CampaignCreated) -> None:
        self.definition = e

    def when_Started(self, e: CampaignStarted) -> None:
        self.status = "running"

    def when_Paused(self, e: CampaignPaused) -> None:
        self.status = "paused"

    def when_Targeted(self, e: CampaignTargeted) -> None:
        self.targeted = e.count

    def when_RecipientSkipped(self, e: CampaignRecipientSkipped) -> None:
        self.outcomes[e.recipient_id] = e.reason

    def when_MessageSent(self, e: CampaignMessageSent) -> None:
        self.outcomes[e.recipient_id] = "sent"

    def when_MessageFailed(self, e: CampaignMessageFailed) -> None:
        self.outcomes[e.recipient_id] = "failed"

    def when_Completed(self, e: CampaignCompleted) -> None:
        self.status = "completed"
