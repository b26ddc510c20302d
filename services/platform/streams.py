"""JetStream streams and subjects: created idempotently at start, names fixed by the contract.

`namespace` prefixes every subject and stream; it is empty in production and lets tests share one
NATS server without seeing each other's messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError


@dataclass(frozen=True)
class Names:
    namespace: str = ""

    def subject(self, s: str) -> str:
        return f"{self.namespace}{s}"

    def stream(self, s: str) -> str:
        return f"{self.namespace.replace('.', '_').upper()}{s}"

    @property
    def interactions(self) -> str:
        return self.stream("SB_INTERACTIONS")

    @property
    def events(self) -> str:
        return self.stream("SB_EVENTS")

    @property
    def deadletters(self) -> str:
        return self.stream("SB_DEADLETTER")

    @property
    def chat_outbox(self) -> str:
        return self.stream("SB_CHAT_OUTBOX")

    @property
    def chat_sessions_bucket(self) -> str:
        return self.stream("SB_CHAT_SESSIONS")

    def interaction_subject(self, channel: str, direction: str) -> str:
        return self.subject(f"sb.interactions.{channel}.{direction}")

    def event_subject(self, aggregate: str, event_type: str) -> str:
        return self.subject(f"sb.events.{aggregate}.{event_type}")

    def deadletter_subject(self, source: str) -> str:
        return self.subject(f"sb.deadletter.{source}")

    def chat_outbox_subject(self, session_id: str) -> str:
        return self.subject(f"sb.chat.outbox.{session_id}")

    @property
    def chat_control_subject(self) -> str:
        """Core NATS (not stored): tells every gateway process to close the sockets of chat sessions."""
        return self.subject("sb.chat.control.close")

    @property
    def live_subject(self) -> str:
        return self.subject("sb.live")


def stream_configs(names: Names, retention_seconds: int, replicas: int = 1) -> list[StreamConfig]:
    common = dict(
        storage=StorageType.FILE,
        num_replicas=replicas,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=float(retention_seconds),
    )
    return [
        # Interactions: Nats-Msg-Id is the interaction id; a provider retry within the window is
        # dropped by JetStream itself, and after it by the core's processed-interaction records.
        StreamConfig(
            name=names.interactions,
            subjects=[names.subject("sb.interactions.>")],
            duplicate_window=float(min(retention_seconds, 24 * 3600)),
            **common,
        ),
        StreamConfig(
            name=names.events,
            subjects=[names.subject("sb.events.>")],
            duplicate_window=float(min(retention_seconds, 24 * 3600)),
            **common,
        ),
        StreamConfig(name=names.deadletters, subjects=[names.subject("sb.deadletter.>")], **common),
        StreamConfig(
            name=names.chat_outbox, subjects=[names.subject("sb.chat.outbox.>")], duplicate_window=120.0, **common
        ),
    ]


async def ensure_streams(
    js,
    names: Names,
    retention_seconds: int,
    replicas: int = 1,
    timeout: float = 120.0,
    *,
    chat_sessions: dict | None = None,
) -> None:
    """Creates or updates the streams; retries while a cluster is still electing or busy.

    Many processes start at once in a deployment, all asking for the same replicated streams; the
    JetStream API may time out or be unavailable until the cluster's meta leader settles.
    """
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    from nats.errors import NoRespondersError  # noqa: PLC0415
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import ServiceUnavailableError  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            await _ensure_streams_once(js, names, retention_seconds, replicas, chat_sessions)
            return
        except (TimeoutError, NatsTimeoutError, NoRespondersError, ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def _same_config(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether the stream already has every setting we ask for (what we leave unset, the server chose)."""
    import dataclasses  # noqa: PLC0415

    def norm(value):
        if isinstance(value, float):
            return round(value, 3)
        if isinstance(value, list):
            return sorted(value)
        return value

    for f in dataclasses.fields(wanted):
        value = getattr(wanted, f.name)
        if value is None or (f.name == "duplicate_window" and not value):  # 0: the server's default
            continue
        if norm(value) != norm(getattr(current, f.name)):
            return False
    return True


async def _ensure_streams_once(
    js, names: Names, retention_seconds: int, replicas: int, chat_sessions: dict | None = None
) -> None:
    for config in stream_configs(names, retention_seconds, replicas):
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                pass  # another process created it between our look and our add
            continue
        if not _same_config(info.config, config):
            # Only when something changed: many processes start at once, and a stream that is
            # already right needs no update permission (see deploy/nats/auth.conf).
            await js.update_stream(config)
    # Without limits given (a tool, a test) an existing bucket keeps the limits the service set.
    await ensure_chat_sessions_bucket(
        js, names, retention_seconds, replicas, update=chat_sessions is not None, **(chat_sessions or {})
    )


# A session record holds a few claims of at most 320 characters each: 4 KiB is plenty.
CHAT_SESSION_MAX_VALUE = 4096


async def ensure_chat_sessions_bucket(
    js,
    names: Names,
    retention_seconds: int,
    replicas: int = 1,
    *,
    max_bytes: int = -1,
    ttl_seconds: int | None = None,
    update: bool = True,
) -> None:
    """The chat sessions' key-value bucket, bounded in size, value size and age.

    A full bucket refuses new sessions (the KV's discard policy is "new") rather than evicting live
    ones. An existing bucket gets the limits of the current settings.
    """
    from nats.js.api import KeyValueConfig  # noqa: PLC0415

    ttl = float(min(ttl_seconds or retention_seconds, retention_seconds))
    stream = f"KV_{names.chat_sessions_bucket}"
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        try:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=names.chat_sessions_bucket,
                    ttl=ttl,
                    replicas=replicas,
                    history=1,
                    max_bytes=max_bytes,
                    max_value_size=CHAT_SESSION_MAX_VALUE,
                )
            )
            return
        except BadRequestError:  # another process created it between our look and our add
            info = await js.stream_info(stream)
    config = info.config
    if update and (config.max_bytes, config.max_msg_size, config.max_age) != (max_bytes, CHAT_SESSION_MAX_VALUE, ttl):
        config.max_bytes = max_bytes
        config.max_msg_size = CHAT_SESSION_MAX_VALUE
        config.max_age = ttl
        await js.update_stream(config)
