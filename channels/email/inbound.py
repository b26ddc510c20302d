"""One inbound email, from either door (the SMTP listener or the raw-MIME webhook), into Switchboard.

Parse (in a worker process, within the message's budget), check that the interaction fits in one
NATS message, keep the attachment bytes, publish: the caller answers success only when this returns.

Every refusal is an `EmailRefused` that carries both doors' answers, so the SMTP listener and the
webhook tell a sender the same thing: permanent for what will never be accepted (SMTP 5xx, HTTP
4xx: the sending MTA bounces instead of retrying for days), temporary for what may be accepted
later (SMTP 4xx, HTTP 503 with Retry-After).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from channels.blobs import BlobStoreFull, BlobTooLarge, blob_ref, blobs_of
from channels.email.parse import EmailBudget, MalformedEmail, OverBudget
from channels.email.pool import ParserBusy, ParserFailed, parser_of
from channels.email.trust import SenderTrust
from events.interactions import Interaction
from services.platform.logs import get_logger

__all__ = ["EmailRefused", "MalformedEmail", "interaction_size", "receive_email"]

log = get_logger(__name__)
_encode = msgspec.json.Encoder().encode

# Room for the NATS headers the publisher adds (Nats-Msg-Id, tracing) beside the JSON body.
_HEADER_ALLOWANCE = 1024


class EmailRefused(Exception):
    """An email refused at the door, with the answer each door gives; nothing of it was recorded."""

    def __init__(self, code: str, detail: str, *, http_status: int, smtp_reply: str, retry_after: int | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.http_status = http_status
        self.smtp_reply = smtp_reply
        self.retry_after = retry_after

    @property
    def permanent(self) -> bool:
        return self.http_status < 500


def too_large(detail: str) -> EmailRefused:
    return EmailRefused(
        "too_large", detail, http_status=413, smtp_reply=f"552 5.3.4 Message too big for system: {detail}"
    )


def _over_budget(exc: OverBudget) -> EmailRefused:
    if exc.structural:
        return EmailRefused(
            "too_complex",
            exc.detail,
            http_status=422,
            smtp_reply=f"552 5.3.4 Message too complex for system: {exc.detail}",
        )
    return too_large(exc.detail)


def _busy(detail: str, smtp_code: str = "451 4.3.2") -> EmailRefused:
    return EmailRefused(
        "unavailable",
        detail,
        http_status=503,
        retry_after=30,
        smtp_reply=f"{smtp_code} {detail}, please try again later",
    )


def interaction_size(interaction: Interaction) -> int:
    """Bytes the interaction takes as a NATS message body (exactly what the publisher sends)."""
    return len(_encode(interaction))


async def receive_email(
    services, raw: bytes, received_at: datetime | None = None, trust: SenderTrust | None = None
) -> tuple[Interaction, bool]:
    """Records one raw RFC 5322 message; returns the interaction and whether it was new.

    Raises `MalformedEmail` (nothing stored) for input that is not a usable message and
    `EmailRefused` for one refused for its size, its cost or a full store (nothing stored either).
    Attachment bytes are stored before the interaction is published, so a recorded `blob:` ref
    always resolves. `trust` is what the door vouches for (None: nothing, From is a claim).
    """
    settings = services.settings
    try:
        parsed = await parser_of(services).parse(
            bytes(raw), received_at or datetime.now(UTC), EmailBudget.from_settings(settings), trust or SenderTrust()
        )
    except OverBudget as exc:
        raise _over_budget(exc) from None
    except ParserBusy:
        raise _busy("Too many messages at once") from None
    except ParserFailed:
        raise _busy("Temporary failure reading the message") from None
    interaction = parsed.interaction
    changes: dict = {}
    blobs = None
    if interaction.attachments:
        blobs = await blobs_of(services)
        try:
            for data in parsed.attachment_bytes:
                blobs.check_size(len(data))
        except BlobTooLarge as exc:
            raise too_large(str(exc)) from None
        # The digests are known before anything is stored: the interaction is built (and its size
        # checked) first, so a message refused for its size leaves no bytes behind.
        changes["attachments"] = [msgspec.structs.replace(a, ref=blob_ref(a.sha256)) for a in interaction.attachments]
    meta = dict(interaction.meta)
    # Where a reply goes: the sender of this very message (a customer may have several).
    meta["from"] = interaction.identities[0].value
    if parsed.full_text and parsed.full_text != interaction.text:
        # The quoted conversation the customer's text was cut from, for an agent who wants it.
        meta["full_text"] = parsed.full_text
    changes["meta"] = meta
    interaction = msgspec.structs.replace(interaction, **changes)
    limit = services.nc.max_payload - _HEADER_ALLOWANCE
    size = interaction_size(interaction)
    if size > limit:
        # Without this check JetStream's own refusal looked like an outage: a temporary failure
        # the sending MTA retried for days. It is not temporary: the same message never fits.
        log.info("email_refused_too_large_for_nats", size=size, limit=limit)
        raise too_large(f"the message text is {size} bytes, more than the {limit} one interaction may hold")
    if blobs is not None:
        try:
            for data in parsed.attachment_bytes:
                await blobs.put(data)
        except BlobTooLarge as exc:
            raise too_large(str(exc)) from None
        except BlobStoreFull:
            log.error("email_refused_blob_store_full")
            raise _busy("Insufficient system storage", smtp_code="452 4.3.1") from None
    is_new = await services.publisher.publish(interaction)
    return interaction, is_new
