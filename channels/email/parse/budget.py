"""What one message may cost to read, and the meter that spends that budget while the message is read."""

from __future__ import annotations

from email.message import Message

import msgspec

from channels.email.parse.errors import OverBudget
from channels.email.parse.parts import _children
from events.interactions import Attachment


class EmailBudget(msgspec.Struct, frozen=True, kw_only=True):
    """What one message may cost to read. Real mail stays far below every limit; abuse does not."""

    max_parts: int = 100
    max_attachments: int = 50
    max_decoded_bytes: int = 20 * 1024 * 1024
    max_html_tags: int = 50_000
    max_mime_depth: int = 24
    max_html_depth: int = 1_000

    @classmethod
    def from_settings(cls, settings) -> EmailBudget:
        return cls(
            max_parts=settings.email_max_parts,
            max_attachments=settings.email_max_attachments,
            max_decoded_bytes=settings.email_max_decoded_bytes,
            max_html_tags=settings.email_max_html_tags,
            max_mime_depth=settings.email_max_mime_depth,
            max_html_depth=settings.email_max_html_depth,
        )


class _Meter:
    """Spends a message's budget as it is read, so an abusive message stops early."""

    def __init__(self, budget: EmailBudget):
        self.budget = budget
        self.decoded_bytes = 0
        self.html_tags = 0

    def decoded(self, data: bytes) -> bytes:
        self.decoded_bytes += len(data)
        if self.decoded_bytes > self.budget.max_decoded_bytes:
            raise OverBudget("decoded_bytes", f"more than {self.budget.max_decoded_bytes} decoded bytes")
        return data

    def html(self, html: str) -> None:
        self.html_tags += html.count("<")
        if self.html_tags > self.budget.max_html_tags:
            raise OverBudget("html_tags", f"more than {self.budget.max_html_tags} HTML tags", structural=True)

    def check_structure(self, message: Message) -> None:
        """Counts the MIME parts and their nesting before any of them is decoded."""
        parts = 0
        stack = [(message, 0)]
        while stack:
            part, depth = stack.pop()
            parts += 1
            if parts > self.budget.max_parts:
                raise OverBudget("mime_parts", f"more than {self.budget.max_parts} MIME parts")
            if depth > self.budget.max_mime_depth:
                raise OverBudget(
                    "mime_depth", f"MIME parts nested deeper than {self.budget.max_mime_depth}", structural=True
                )
            stack.extend((child, depth + 1) for child in _children(part))

    def check_attachments(self, attachments: list[Attachment]) -> None:
        if len(attachments) > self.budget.max_attachments:
            raise OverBudget("attachments", f"more than {self.budget.max_attachments} attachments")
