"""A raw email (RFC 5322 bytes) as the normalized inbound `Interaction` of the email channel.

Pure: no network, no NATS, no database, no clock (the time of receipt comes in as an argument).
Lenient on purpose: real mail arrives with wrong charsets, broken base64 and headers no parser
accepts, and a customer's message must not be lost over that. Only input with no sender address at
all is refused, with `MalformedEmail`; every other input gives a best-effort `ParsedEmail`.

Parsing uses the standard library's `email` package with `email.policy.default`; where that policy's
structured header parser gives up, the compat32-era helpers (`getaddresses`, a compat32 `Message`)
read the raw header instead.

One module per step, in reading order: `message` (the whole message, `parse_email`), `addresses`,
`headers`, `message_ids` (threading), `dates`, `kinds` (auto-reply, bounce), `mime_tree` (text and
files), `parts` (one MIME part), `charsets`, `html_text`, `text` (plain text), `quotes` (the quoted
earlier conversation); `errors` and `budget` say what may fail and what a message may cost.
"""

from channels.email.parse.budget import EmailBudget
from channels.email.parse.errors import MalformedEmail, OverBudget
from channels.email.parse.message import ParsedEmail, parse_email

__all__ = ["EmailBudget", "MalformedEmail", "OverBudget", "ParsedEmail", "parse_email"]
