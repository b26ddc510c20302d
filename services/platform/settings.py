"""Settings: environment variables `SWITCHBOARD_*`, or the same keys lower-cased in `switchboard.toml`.

The environment wins over the file. Secrets that `switchboard up` must have but nobody set are
generated once and kept in the data dir, so a restart on the same dir keeps working tokens and keys.
"""

from __future__ import annotations

import base64
import os
import secrets
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

PREFIX = "SWITCHBOARD_"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    data_dir: Path = Path(".switchboard")
    nats_url: str | None = None
    database_url: str | None = None
    # A NATS credentials file (.creds with user JWT and nkey seed, or an nkey seed); see services.nats_client.
    nats_creds: str | None = None
    admin_token: str | None = None
    master_key: str | None = None
    ingest_token: str | None = None
    twilio_auth_token: str | None = None
    twilio_account_sid: str | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    meta_app_secret: str | None = None
    meta_verify_token: str | None = None
    meta_access_token: str | None = None
    meta_graph_base: str = "https://graph.facebook.com/v21.0"
    telegram_secret_token: str | None = None
    telegram_bot_token: str | None = None
    telegram_api_base: str = "https://api.telegram.org"
    chat_identity_secret: str | None = None
    # Signs automation webhooks: X-Switchboard-Signature is sha256=HMAC-SHA256(this, body) in hex.
    webhook_secret: str | None = None
    # Automation webhooks: first delay before a failed call is tried again (doubled each time, at
    # most 300 s), calls in all before the delivery is dead-lettered, and each call's timeout.
    webhook_retry_base_seconds: float = 2.0
    webhook_max_attempts: int = 8
    webhook_timeout_seconds: float = 10.0
    smtp_relay: str | None = None
    email_from: str | None = None
    # The gateway's public base URL (https://switchboard.example.com); when set, outbound SMS asks
    # Twilio for status callbacks at its /channels/sms/twilio/status, and X-Twilio-Signature is
    # checked against it + path + query (never against the Host a request came with).
    public_url: str | None = None
    # Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For/-Proto/-Host are
    # believed; from any other peer those headers are ignored.
    trusted_proxies: str | list[str] | None = None
    # How often an open Server-Sent Events stream re-checks its token; a revoked one ends it.
    sse_recheck_seconds: float = 5.0
    # Agents' sign-in sessions end after this long without a request, and this long after sign-in.
    agent_session_idle_seconds: float = 8 * 3600.0
    agent_session_max_seconds: float = 24 * 3600.0
    # Failed sign-ins allowed per email, and per client address, within the window; past that: 429.
    login_max_failures_per_email: int = 5
    login_max_failures_per_ip: int = 30
    login_failure_window_seconds: float = 900.0
    # First delay, in seconds, before an outbound reply a provider could not take is tried again;
    # doubled on every attempt, at most 60 s.
    outbound_retry_base_seconds: float = 1.0
    # How long a relay has to settle an outbound reply before NATS hands it to another (or, after a
    # crash, back to the restarted one); the outbound ledger keeps that from sending it twice.
    outbound_ack_wait_seconds: float = 60.0
    # Campaign messages per second, per channel (each provider's throttle): "sms=10,whatsapp=10,email=20".
    campaign_rate_per_second: str = "sms=10,whatsapp=10,email=20"
    # How often the campaigner sends its next few messages, in seconds.
    campaign_tick_seconds: float = 1.0
    # Quiet hours apply in this zone to a customer with no `timezone` attribute and no phone zone.
    campaign_default_timezone: str = "UTC"
    # A recipient's message on a campaign's channel within this long after its send counts as their
    # reply to it (the campaign's `replied`, first reply only), in seconds: 7 days.
    campaign_reply_window_seconds: float = 7 * 24 * 3600.0
    # How long the NATS streams keep messages (and so the personal data in them), in seconds.
    nats_retention_seconds: int = 7 * 24 * 3600
    # JetStream replicas for the streams Switchboard creates (3 on a three-node cluster).
    nats_replicas: int = 1
    # Size limits of the streams, in bytes; JetStream reserves them on the server's disk when a stream
    # is made, so the defaults fit the embedded server on one machine (with SB_BLOBS and the chat
    # sessions, 3.5 GiB in all). SB_INTERACTIONS full: channels answer 503 + Retry-After until the
    # core has purged what it processed. SB_EVENTS full: its oldest events go (the event log keeps
    # them all). SB_DEADLETTER full: the interaction stays, redelivered, in SB_INTERACTIONS.
    # An operator's own change to a stream's limits is kept across restarts (services.platform.streams).
    nats_interactions_max_bytes: int = 1024 * 1024 * 1024
    nats_events_max_bytes: int = 1024 * 1024 * 1024
    nats_deadletter_max_bytes: int = 256 * 1024 * 1024
    # How long a dead letter is kept, in seconds; 0: until it is handled (redriven or deleted), the
    # default, so an interaction nobody could process is never lost by age. An erasure deletes a
    # customer's dead letters either way; set this to bound how long personal data may wait there.
    nats_deadletter_max_age_seconds: int = 0
    # How often the embedded NATS server flushes JetStream's files to disk: "always" (every message,
    # before it is acknowledged) or a duration such as "1s" or "2m" (nats-server's default is 2m).
    # With a duration, a power loss or kernel crash (not a crash of a process) loses the messages
    # acknowledged in the last interval. Applies to the embedded server only; an external server
    # has its own `jetstream { sync_interval }`.
    nats_sync_interval: str = "1s"
    # Deliveries of one interaction before it is dead-lettered.
    max_deliveries: int = 5
    # For tests and demos only: a file holding an ISO 8601 instant that the SLA timer and the API's
    # commands take as the time (services.platform.clock); unset, they read the real clock.
    clock_file: str | None = None
    # The classifier role's training file (JSONL rows {"text", "intent", "sentiment"?}): its intents
    # replace the shipped label set (services.intelligence.classify); unset: the shipped data.
    classifier_data: str | None = None
    # Niceness of the classifier's worker process (0-19): 19 leaves the CPU to ingest first.
    classifier_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 19
    # Seconds JetStream waits for the core to ack a delivered interaction before delivering it again
    # (to another core, or to this one after a restart).
    core_ack_wait_seconds: float = 30.0
    # Memory the core's aggregate cache may take, in bytes (an estimate of the cached customers'
    # and cases' size): 256 MiB holds roughly 100k typical customers with their open cases.
    core_cache_max_bytes: int = 256 * 1024 * 1024
    # Memory for the events this process committed lately, which a projector or relay in the same
    # process reads instead of the table (services.platform.eventstore.store.RecentEvents), in bytes.
    recent_events_max_bytes: int = 64 * 1024 * 1024
    # Largest accepted request body on channel endpoints, in bytes.
    max_body_bytes: int = 10 * 1024 * 1024
    # Largest chat message text, in characters.
    max_chat_text: int = 16 * 1024
    # -- email hardening: parsing off the event loop, a budget per message, who vouches for From --
    # Processes that parse inbound email (HTML parsing holds the GIL: threads would stall the loop).
    email_parse_workers: int = 2
    # Messages that may wait for a parser beyond those being parsed; past that: SMTP 451 / HTTP 503.
    email_parse_queue: int = 8
    # Seconds one message may take to parse; past that it is refused permanently like any over budget.
    email_parse_seconds: float = 20.0
    # A message over any of these is refused permanently (SMTP 552 5.3.4, HTTP 413 or 422).
    email_max_parts: int = 100
    email_max_attachments: int = 50
    email_max_decoded_bytes: int = 20 * 1024 * 1024
    email_max_html_tags: int = 50_000
    email_max_mime_depth: int = 24
    email_max_html_depth: int = 1_000
    # Comma-separated IPs/CIDRs of relays (the company's MX) whose SMTP connections' From is verified.
    # Unset: nobody (`switchboard up` trusts loopback, where only local processes connect).
    smtp_trusted_relays: str | None = None
    # Comma-separated authserv-ids whose `Authentication-Results: ...; dmarc=pass header.from=D`
    # verifies a From in domain D, on a message from a trusted relay or the authenticated webhook.
    email_trust_auth_results: str = ""
    # Whether the poster of /channels/email/inbound (holder of INGEST_TOKEN) vouches for From.
    # Unset: no (`switchboard up`: yes, the token is generated into its own data dir).
    email_webhook_trusted: bool | None = None
    # SB_BLOBS (attachment bytes): total size of the bucket and largest single object, in bytes.
    # JetStream reserves max_bytes from the server's store when the bucket is made (and refuses a bucket
    # larger than what is free), so the default stays modest; raise it where the disk allows.
    blobs_max_bytes: int = 1024 * 1024 * 1024
    blobs_max_object_bytes: int = 10 * 1024 * 1024
    # Chat abuse limits. Connections and rates are counted per gateway process.
    # Largest WebSocket message a chat visitor may send, in bytes; a larger one closes the socket (1009).
    chat_max_frame_bytes: int = 128 * 1024
    # Open chat WebSockets at most, in all and per client address; more are refused (503 / 429).
    chat_max_connections: int = 10_000
    chat_max_connections_per_ip: int = 50
    # New chat sessions per client address: a token bucket of `burst`, refilled at `per_minute`.
    chat_sessions_per_minute_per_ip: float = 60.0
    chat_session_burst: int = 30
    # Chat messages per session: a token bucket of `burst`, refilled at `per_minute`.
    chat_messages_per_minute: float = 60.0
    chat_message_burst: int = 20
    # The chat session store (a JetStream key-value bucket): its size and how long a session lives
    # (never longer than the streams' retention).
    chat_session_store_max_bytes: int = 256 * 1024 * 1024
    chat_session_ttl_seconds: int = 7 * 24 * 3600
    # Origins (comma-separated, e.g. https://www.example.com) whose pages may embed the chat widget: CORS
    # of POST /channels/chat/sessions and the WebSocket's Origin check. `*`: any (these use no cookies).
    chat_allowed_origins: str | list[str] = "*"
    # Seconds between refreshes of the audit anchor in NATS KV by the relay role (0: never).
    audit_anchor_seconds: float = 60.0
    log_format: str = "auto"  # auto | json | console
    # Who may receive marketing (campaigns) on a channel without a recorded yes or no: "implied"
    # (customers who wrote to us there, until they opt out: Twilio's model) or "explicit" (only after
    # a recorded grant). A recorded STOP or unsubscribe always wins. See services/domain/consent.py.
    marketing_consent: Literal["implied", "explicit"] = "implied"
    log_level: str = "info"

    def with_(self, **changes: object) -> Settings:
        return msgspec.structs.replace(self, **changes)

    @property
    def master_key_bytes(self) -> bytes:
        if not self.master_key:
            raise RuntimeError("SWITCHBOARD_MASTER_KEY is not set")
        key = base64.b64decode(self.master_key)
        if len(key) != 32:
            raise ValueError("SWITCHBOARD_MASTER_KEY must be 32 bytes, base64-encoded")
        return key


_FIELDS = set(Settings.__struct_fields__)


def load_settings(environ: dict[str, str] | None = None, cwd: Path | None = None, **overrides: object) -> Settings:
    """Reads `switchboard.toml` (if present), then the environment, then explicit overrides."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    toml_path = (cwd or Path.cwd()) / "switchboard.toml"
    if toml_path.exists():
        for key, value in tomllib.loads(toml_path.read_text()).items():
            if key in _FIELDS:
                values[key] = value
    for name, value in environ.items():
        if name.startswith(PREFIX):
            key = name[len(PREFIX) :].lower()
            if key in _FIELDS:
                values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return msgspec.convert(values, Settings, strict=False)


# Secrets generated for the embedded default, with the file each one lives in (None: kept in
# secrets.json under the data dir).
_GENERATED = {
    "admin_token": "admin.token",
    "master_key": "master.key",
    "ingest_token": "ingest.token",
    "twilio_auth_token": None,
    "meta_app_secret": None,
    "meta_verify_token": None,
    "telegram_secret_token": None,
    "chat_identity_secret": None,
    "webhook_secret": None,
}


def _new_secret(name: str) -> str:
    if name == "master_key":
        return base64.b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(32)


def ensure_secrets(settings: Settings) -> Settings:
    """Fills every unset secret from the data dir, generating and saving it on first use."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store_path = data_dir / "secrets.json"
    stored: dict[str, str] = msgspec.json.decode(store_path.read_bytes()) if store_path.exists() else {}
    changes: dict[str, str] = {}
    dirty = False
    for name, filename in _GENERATED.items():
        if getattr(settings, name):
            continue
        path = data_dir / filename if filename else None
        if path is not None and path.exists():
            value = path.read_text().strip()
        elif path is None and name in stored:
            value = stored[name]
        else:
            value = _new_secret(name)
            if path is not None:
                _write_private(path, value + "\n")
            else:
                stored[name] = value
                dirty = True
        changes[name] = value
    if dirty:
        _write_private(store_path, msgspec.json.encode(stored).decode())
    return settings.with_(**changes) if changes else settings


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
