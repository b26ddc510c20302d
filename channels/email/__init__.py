"""The email channel: raw RFC 5322 messages (from the SMTP listener or the HTTP ingest endpoint) in,
normalized `Interaction`s out.

`parse` is the pure part: bytes to interaction, no network, no NATS, no database.
"""

from channels.email.parse import MalformedEmail, ParsedEmail, parse_email

__all__ = ["MalformedEmail", "ParsedEmail", "parse_email"]
