"""What kind of message: a person's, an auto-reply, a bounce."""

from __future__ import annotations

import re
from email.message import Message

from channels.email.parse.headers import _header_token, _raw_header
from channels.email.parse.parts import _content_type, _param
from events.interactions import InteractionKind

_DELIVERY_FAILURE_SUBJECT = re.compile(
    r"undeliver|not be delivered|delivery (?:status notification|failure|failed|has failed|incomplete)"
    r"|mail delivery (?:failed|failure|subsystem)|returned mail|failure notice|non remis"
    r"|unzustellbar|nicht zugestellt|zustellung fehlgeschlagen|no se pudo entregar",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|autoreply"
    r"|abwesenheit|automatische antwort|r[ée]ponse automatique|absence|respuesta autom[áa]tica"
    r"|risposta automatica|automatisch antwoord|vacation)",
    re.IGNORECASE,
)
_MAILER_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})
_NEGATIVE_VALUES = frozenset({"no", "false", "0"})


def _kind(message: Message, sender_address: str, subject: str) -> InteractionKind:
    """A bounce or auto-reply must not look like the customer answering (nor reopen a case as one)."""
    if _is_bounce(message, sender_address, subject):
        return "bounce"
    if _is_auto_reply(message, subject):
        return "auto_reply"
    return "message"


def _is_bounce(message: Message, sender_address: str, subject: str) -> bool:
    if _report_type(message) == "delivery-status":
        return True
    local_part = sender_address.split("@", 1)[0]
    return local_part in _MAILER_SENDERS and _DELIVERY_FAILURE_SUBJECT.search(subject) is not None


def _is_auto_reply(message: Message, subject: str) -> bool:
    auto_submitted = _header_token(message, "Auto-Submitted")
    if auto_submitted and auto_submitted != "no":
        return True
    for flag in ("X-Autoreply", "X-Autorespond"):
        if _raw_header(message, flag) is not None and _header_token(message, flag) not in _NEGATIVE_VALUES:
            return True
    if _header_token(message, "Precedence") in _AUTO_PRECEDENCE:
        return True
    # Exchange marks its out-of-office replies this way; the header alone is also on ordinary mail.
    if _raw_header(message, "X-Auto-Response-Suppress") is not None and _AUTO_REPLY_SUBJECT.search(subject):
        return True
    # A read receipt (RFC 8098) is a machine's answer too.
    return _report_type(message) == "disposition-notification"


def _report_type(message: Message) -> str:
    if _content_type(message) != "multipart/report":
        return ""
    return _param(message, "report-type").lower()
