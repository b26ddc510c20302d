"""What a message that cannot be read raises: malformed input, or a message over its budget."""

from __future__ import annotations


class MalformedEmail(ValueError):
    """Input that is not a usable email: empty, unreadable, or without a sender address.

    The HTTP and SMTP adapters answer it as "malformed" (400 / 5xx reply) and record nothing. The
    message names the problem, never the content.
    """


class OverBudget(ValueError):
    """A message over its budget (parts, attachments, decoded bytes, HTML tags or nesting).

    Permanent: the same bytes will always be over it. `structural` tells a message too intricate
    (nesting, tag floods: HTTP 422) from one too big (HTTP 413); SMTP answers 552 5.3.4 for both.
    The detail names the limit, never the content.
    """

    def __init__(self, limit: str, detail: str, structural: bool = False):
        super().__init__(detail)
        self.limit = limit
        self.detail = detail
        self.structural = structural

    def __reduce__(self):  # crosses the parser pool's process boundary
        return (type(self), (self.limit, self.detail, self.structural))
