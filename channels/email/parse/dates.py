"""When it was written: the Date header within plausible bounds, else the time of receipt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import parsedate_to_datetime

from channels.email.parse.headers import _raw_header
from channels.email.parse.text import _clean_line

# A Date outside these bounds is a broken clock or spam trickery: it would pin the message at the
# wrong end of the customer's timeline, so the time of receipt is used instead.
_EARLIEST_PLAUSIBLE_DATE = datetime(1990, 1, 1, tzinfo=UTC)
_ALLOWED_CLOCK_SKEW = timedelta(days=1)


def _occurred_at(message: Message, received_at: datetime) -> datetime:
    raw = _raw_header(message, "Date")
    if not raw:
        return received_at
    try:
        written = parsedate_to_datetime(_clean_line(raw)[:200])
        # "-0000" means "local time unknown" (RFC 5322): UTC is the honest reading.
        written = written.replace(tzinfo=UTC) if written.tzinfo is None else written.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return received_at
    if not _EARLIEST_PLAUSIBLE_DATE <= written <= received_at + _ALLOWED_CLOCK_SKEW:
        return received_at
    return written
