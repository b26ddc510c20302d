"""GDPR: an access request (everything held about a customer) and erasure (the right to be forgotten).

Erasure is crypto-shredding plus clean-up. The event log stays append-only and its hash chain
intact: a `CustomerErased` event is appended and the data keys of the customer and of everyone
merged into them are destroyed, so every personal field of every event they ever had reads as
redacted, forever, in every copy and backup of the log. What was derived from those fields outside
the log is removed in the same command:

- PostgreSQL: the identity index (`sb_identities`), the keyed hashes of the provider ids of the
  replies sent to them (`sb_outbound`), and the read models (timeline text and attachments, profile
  name and attributes, identities, case notes and tags) — here and now, and again by the
  projections when they reach `CustomerErased` (so a rebuild or a lagging projector stays clean);
- NATS: the chat sessions in the KV bucket, the agent replies waiting in each session's outbox, the
  attachment bytes in the object store (unless another customer sent the same file), the
  customer's messages in SB_INTERACTIONS (found by the stream sequence the core recorded) and the
  delivery statuses and bounces about their replies (found by case), the customer's events in
  SB_EVENTS (found by the `Sb-Position` header; the relay published them with the fields
  decrypted), dead letters carrying the customer's identities and their attachments. Deleted
  JetStream messages are erased (overwritten) by the server. Attachments nobody's timeline refers
  to and older than the NATS retention (left by interactions never recorded) are swept as well.

Provider message ids (a wamid encodes the phone number, a Telegram id the user's chat id, a chat id
the visitor's `client_id`, an email Message-ID the sender's host) and tags are sealed in the log like
any personal field (events stored before they were, at version 1, keep them in clear in their bytes:
the log is never rewritten; they read redacted). Interaction ids stay in clear: they are uuid5
hashes of the provider id, one-way, but not keyed, so someone who already suspects a Telegram chat
id can confirm it by hashing it with likely message numbers.

What only the keys can tell (the chat session ids, the identities) is read before the keys go and
kept in `sb_erasures` until the NATS clean-up is done, so an interrupted erasure completes when the
command is run again.

Not reachable from here: copies already delivered to downstream subscribers, messages in NATS that
the core never recorded (a provider's retry after the duplicate window), PostgreSQL's WAL, dead row
versions until VACUUM, and backups (the log's ciphertext in them is unreadable once the key is gone;
read models in them are not). NATS streams keep anything missed at most for
`SWITCHBOARD_NATS_RETENTION_SECONDS`.
"""

from __future__ import annotations

from services.gdpr.erase import Deployment, ErasureReport, erase_customer, scrub_read_models
from services.gdpr.export import export_customer
from services.gdpr.scope import CustomerNotFound, erasure_scope

__all__ = [
    "CustomerNotFound",
    "Deployment",
    "ErasureReport",
    "erase_customer",
    "erasure_scope",
    "export_customer",
    "scrub_read_models",
]
