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
    SkipReason,
)
from services.domain.aggregate import Aggregate, DomainError

MAX_NAME = 200
MAX_TEXT = 1600
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# Meta's rules for a message template: name lower-case letters, digits and underscores (up to 512),
# language a locale code such as `en`, `en_US`, `pt_BR`, `zh_Hant_HK`.
_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
_TEMPLATE_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z]{2,4}){0,2}$")
_TEMPLATE_COMPONENT_TYPES = ("header", "body", "button", "footer")
MAX_TEMPLATE_BYTES = 16_000


def check_whatsapp_template(raw: Any) -> dict[str, Any]:
    """A campaign's WhatsApp template as the Graph API's `template` object takes it: `{"name",
    "language", "components"?}`, `language` a code (or Graph's own `{"code"}`); `components` a list
    of `{"type": header|body|button|footer, "parameters"?: [...], ...}` passed through as given.
    Returns it as given; a DomainError names what is wrong."""
    if not isinstance(raw, dict):
        raise DomainError("whatsapp_template must be an object")
    unknown = set(raw) - {"name", "language", "components"}
    if unknown:
        raise DomainError(f"whatsapp_template: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    name = raw.get("name")
    if not isinstance(name, str) or not _TEMPLATE_NAME.match(name):
        raise DomainError("whatsapp_template.name must be a template name (lower-case letters, digits, _)")
    language = raw.get("language")
    if isinstance(language, dict) and set(language) <= {"code", "policy"}:
        language = language.get("code")
    if not isinstance(language, str) or not _TEMPLATE_LANGUAGE.match(language):
        raise DomainError("whatsapp_template.language must be a language code (e.g. en_US)")
    components = raw.get("components")
    if components is not None:
        if not isinstance(components, list) or not components:
            raise DomainError("whatsapp_template.components must be a non-empty list")
        for i, component in enumerate(components):
            if not isinstance(component, dict):
                raise DomainError(f"whatsapp_template.components[{i}] must be an object")
            if component.get("type") not in _TEMPLATE_COMPONENT_TYPES:
                raise DomainError(
                    f"whatsapp_template.components[{i}].type must be one of {', '.join(_TEMPLATE_COMPONENT_TYPES)}"
                )
            parameters = component.get("parameters")
            if parameters is not None and (
                not isinstance(parameters, list) or not all(isinstance(p, dict) and "type" in p for p in parameters)
            ):
                raise DomainError(
                    f'whatsapp_template.components[{i}].parameters must be a list of objects with a "type"'
                )
    if len(repr(raw).encode()) > MAX_TEMPLATE_BYTES:
        raise DomainError("whatsapp_template is too large")
    return raw


def graph_template(template: dict[str, Any]) -> dict[str, Any]:
    """The Graph API's `template` object of a campaign's (checked) template: `language` as `{"code"}`."""
    language = template["language"]
    out: dict[str, Any] = {
        "name": template["name"],
        "language": language if isinstance(language, dict) else {"code": language},
    }
    if template.get("components") is not None:
        out["components"] = template["components"]
    return out


def template_label(template: dict[str, Any]) -> str:
    """How a template message shows on a timeline: its name and language."""
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else language
    return f"template {template.get('name')} ({code})"


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
        self.failure: str | None = None  # why it failed, once it did
        self.targeted: int | None = None
        self.outcomes: dict[UUID, str] = {}  # recipient → sent | failed | no_consent | no_address
        # What became of a sent message, once each: delivered, or undelivered (counted as failed).
        self.deliveries: dict[UUID, str] = {}  # recipient → delivered | undelivered
        self.replied: set[UUID] = set()

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
            whatsapp_template = check_whatsapp_template(whatsapp_template)
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
        if self.status == "failed":
            raise DomainError(f"the campaign failed: {self.failure}")
        if self.status != "running":
            self._trigger(CampaignStarted, at, by=by)

    def pause(self, by: str, at: datetime) -> None:
        if self.status in ("completed", "failed"):
            raise DomainError(f"the campaign is {self.status}")
        if self.status == "running":
            self._trigger(CampaignPaused, at, by=by)

    def target(self, count: int, at: datetime) -> None:
        if self.targeted is None:
            self._trigger(CampaignTargeted, at, count=count)

    def skipped(self, recipient_id: UUID, reason: SkipReason, at: datetime) -> None:
        if recipient_id not in self.outcomes:
            self._trigger(CampaignRecipientSkipped, at, recipient_id=recipient_id, reason=reason)

    def sent(
        self, recipient_id: UUID, at: datetime, *, message_id: UUID | None = None, channel: str = "", text: str = ""
    ) -> None:
        if recipient_id not in self.outcomes:
            self._trigger(
                CampaignMessageSent, at, recipient_id=recipient_id, message_id=message_id, channel=channel, text=text
            )

    def delivered(self, recipient_id: UUID, at: datetime) -> None:
        """The provider's first word on a sent message counts; repeats and later words record nothing."""
        if self.outcomes.get(recipient_id) == "sent" and recipient_id not in self.deliveries:
            self._trigger(CampaignMessageDelivered, at, recipient_id=recipient_id)

    def undelivered(self, recipient_id: UUID, reason: str, at: datetime) -> None:
        if self.outcomes.get(recipient_id) == "sent" and recipient_id not in self.deliveries:
            self._trigger(CampaignMessageUndelivered, at, recipient_id=recipient_id, reason=reason[:300])

    def reply_received(self, recipient_id: UUID, at: datetime) -> None:
        """The recipient's first reply to the campaign's message; later ones record nothing."""
        if self.outcomes.get(recipient_id) == "sent" and recipient_id not in self.replied:
            self._trigger(CampaignMessageReplied, at, recipient_id=recipient_id)

    def failed(self, recipient_id: UUID, reason: str, at: datetime) -> None:
        if recipient_id not in self.outcomes:
            self._trigger(CampaignMessageFailed, at, recipient_id=recipient_id, reason=reason[:300])

    def fail(self, reason: str, at: datetime) -> None:
        """The campaign cannot run (its segment's filter is refused, say): it sends nothing more."""
        if self.status not in ("completed", "failed"):
            self._trigger(CampaignFailed, at, reason=reason[:300])

    def complete(self, at: datetime) -> None:
        if self.status != "completed" and self.targeted is not None and len(self.outcomes) >= self.targeted:
            self._trigger(CampaignCompleted, at)

    # -- reads --------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """`sent`: messages the provider took; of those, `delivered` as the provider reported, and
        `failed` also counts the ones it reported undelivered (beside those it never took);
        `replied`: recipients who wrote back within the reply window."""
        values = list(self.outcomes.values())
        reported = list(self.deliveries.values())
        return {
            "targeted": self.targeted or 0,
            "skipped_no_consent": values.count("no_consent"),
            "skipped_no_address": values.count("no_address"),
            "sent": values.count("sent"),
            "delivered": reported.count("delivered"),
            "failed": values.count("failed") + reported.count("undelivered"),
            "replied": len(self.replied),
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

    def when_Failed(self, e: CampaignFailed) -> None:
        self.status = "failed"
        self.failure = e.reason

    def when_MessageDelivered(self, e: CampaignMessageDelivered) -> None:
        self.deliveries[e.recipient_id] = "delivered"

    def when_MessageUndelivered(self, e: CampaignMessageUndelivered) -> None:
        self.deliveries[e.recipient_id] = "undelivered"

    def when_MessageReplied(self, e: CampaignMessageReplied) -> None:
        self.replied.add(e.recipient_id)
