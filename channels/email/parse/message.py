"""The message as a whole: raw bytes in, the `ParsedEmail` (normalized interaction, full text, files) out."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

import msgspec

from channels.email.parse.addresses import _address_list, _sender
from channels.email.parse.budget import EmailBudget, _Meter
from channels.email.parse.dates import _occurred_at
from channels.email.parse.errors import MalformedEmail, OverBudget
from channels.email.parse.headers import _header_text, _raw_header
from channels.email.parse.kinds import _kind
from channels.email.parse.message_ids import _first, _message_ids, _own_message_id, _unique
from channels.email.parse.mime_tree import _Body, _collect
from channels.email.parse.quotes import _cut_quoted_reply
from channels.email.parse.text import _tidy_text
from channels.email.trust import SenderTrust, from_is_verified
from events.interactions import Identity, Interaction, interaction_id


class ParsedEmail(msgspec.Struct, frozen=True, kw_only=True):
    """One inbound email, normalized.

    `interaction.text` is what the customer wrote in this message (earlier quoted replies cut away);
    `full_text` is the whole readable body, quotes included, for an agent who wants the context;
    `attachment_bytes[i]` holds the content of `interaction.attachments[i]`, for the blob store.
    """

    interaction: Interaction
    full_text: str
    attachment_bytes: list[bytes] = []


def parse_email(
    raw: bytes, *, received_at: datetime, budget: EmailBudget | None = None, trust: SenderTrust | None = None
) -> ParsedEmail:
    """Read one raw RFC 5322 message received at `received_at` (the fallback for a missing or bogus Date).

    Raises `MalformedEmail` for input that is not a usable message, `OverBudget` for one that costs
    more than `budget` allows (None: no budget), and nothing else for any bytes. The sender address
    is verified when `trust` vouches for it (None: the caller asserts it, as before doors had trust).
    """
    received_at = _as_utc(received_at)
    if not isinstance(raw, bytes | bytearray | memoryview) or not bytes(raw).strip():
        raise MalformedEmail("empty message")
    try:
        return _parse(bytes(raw), received_at, budget, trust)
    except (MalformedEmail, OverBudget):
        raise
    except Exception as exc:
        # Why: a message we cannot read must get a "malformed" answer, never crash the channel; the
        # fuzz tests hunt for whatever ends up here.
        raise MalformedEmail("unreadable message") from exc


def _parse(raw: bytes, received_at: datetime, budget: EmailBudget | None, trust: SenderTrust | None) -> ParsedEmail:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    meter = _Meter(budget) if budget is not None else None
    if meter is not None:
        meter.check_structure(message)
    sender_name, sender_address = _sender(message)
    verified = trust is None or from_is_verified(message, sender_address, trust)
    message_id = _own_message_id(message, raw)
    in_reply_to = _first(_message_ids(_raw_header(message, "In-Reply-To")))
    references = _message_ids(_raw_header(message, "References"))
    subject = _header_text(message, "Subject")
    body = _Body(meter=meter)
    _collect(message, body, depth=0)
    if meter is not None:
        meter.check_attachments(body.attachments)
    full_text = _tidy_text("\n\n".join(body.texts))
    meta = {
        "subject": subject,
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": " ".join(references),
        "thread_ids": " ".join(_unique([message_id, in_reply_to, *references])),
        "to": _address_list(message, "To"),
        **body.report,
    }
    # Contact forms send as themselves with the customer in Reply-To; the core may want to know.
    reply_to = _address_list(message, "Reply-To")
    if reply_to:
        meta["reply_to"] = reply_to
    interaction = Interaction(
        id=interaction_id("email", message_id),
        channel="email",
        direction="inbound",
        occurred_at=_occurred_at(message, received_at),
        identities=[Identity("email", sender_address, verified=verified)],
        kind=_kind(message, sender_address, subject),
        text=_cut_quoted_reply(full_text),
        profile=_profile(sender_name, sender_address),
        thread_key=_first(references) or in_reply_to or message_id,
        provider_message_id=message_id,
        attachments=body.attachments,
        meta=meta,
    )
    return ParsedEmail(interaction=interaction, full_text=full_text, attachment_bytes=body.attachment_bytes)


def _as_utc(moment: datetime) -> datetime:
    # A naive time of receipt can only have come from a UTC clock in this service.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _profile(display_name: str, address: str) -> dict[str, str]:
    """What the sender calls themselves; a display name that only repeats the address says nothing."""
    name = display_name.strip().strip("\"'").strip()
    if not name or name.lower() == address:
        return {}
    return {"name": name}
