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
    def activities(self) -> str:
        return self.stream("SB_ACTIVITIES")

    def activity_subject(self, source: str) -> str:
        return self.subject(f"sb.activities.{source}")

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


@dataclass(frozen=True)
class StreamLimits:
    """Size limits of Switchboard's streams, in bytes (-1: none). From the settings
    `nats_interactions_max_bytes`, `nats_events_max_bytes`, `nats_deadletter_max_bytes`."""

    interactions_max_bytes: int = -1
    events_max_bytes: int = -1
    deadletter_max_bytes: int = -1
    # 0: dead letters are kept until handled.
    deadletter_max_age_seconds: int = 0

    @classmethod
    def of(cls, settings) -> StreamLimits:
        return cls(
            interactions_max_bytes=settings.nats_interactions_max_bytes,
            events_max_bytes=settings.nats_events_max_bytes,
            deadletter_max_bytes=settings.nats_deadletter_max_bytes,
            deadletter_max_age_seconds=settings.nats_deadletter_max_age_seconds,
        )


def stream_configs(
    names: Names, retention_seconds: int, replicas: int = 1, limits: StreamLimits | None = None
) -> list[StreamConfig]:
    """What Switchboard asks of each stream. Discard policies are chosen per stream:

    - SB_INTERACTIONS: discard NEW. A full stream refuses a publish, so the gateway answers 503 with
      Retry-After and the provider retries: an interaction nobody processed yet is never dropped to
      make room. The core makes room by purging what it has processed (`purge_processed`).
    - SB_EVENTS: discard OLD, within `retention_seconds` and its size. It is a copy of the event log,
      which keeps everything: a consumer further behind re-reads with `switchboard replay`.
    - SB_DEADLETTER: discard NEW and, unless `deadletter_max_age_seconds` says otherwise, no age
      limit: a dead letter stays until it is handled (redriven or deleted). A full one refuses the core's copy, so the interaction stays unacked
      in SB_INTERACTIONS, where it is redelivered, not lost.
    - SB_CHAT_OUTBOX: discard OLD within `retention_seconds` (replies are in the timeline too).
    - SB_ACTIVITIES: business activities published by other systems on `sb.activities.<source>`; a
      work queue (a message goes once the core has handed it on as an interaction) that discards
      NEW: full, it refuses the publisher, never drops what nobody handed on.
    """
    limits = limits or StreamLimits()
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
            **{**common, "discard": DiscardPolicy.NEW},
            max_bytes=limits.interactions_max_bytes,
        ),
        StreamConfig(
            name=names.events,
            subjects=[names.subject("sb.events.>")],
            duplicate_window=float(min(retention_seconds, 24 * 3600)),
            **common,
            max_bytes=limits.events_max_bytes,
        ),
        StreamConfig(
            name=names.deadletters,
            subjects=[names.subject("sb.deadletter.>")],
            **{**common, "discard": DiscardPolicy.NEW, "max_age": float(limits.deadletter_max_age_seconds)},
            max_bytes=limits.deadletter_max_bytes,
        ),
        StreamConfig(
            name=names.chat_outbox, subjects=[names.subject("sb.chat.outbox.>")], duplicate_window=120.0, **common
        ),
        StreamConfig(
            name=names.activities,
            subjects=[names.subject("sb.activities.>")],
            duplicate_window=120.0,
            **{**common, "discard": DiscardPolicy.NEW, "retention": RetentionPolicy.WORK_QUEUE},
            max_bytes=limits.interactions_max_bytes,
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
    limits: StreamLimits | None = None,
) -> None:
    """Creates the streams that are missing and reconciles existing ones (see `reconcile`);
    retries while a cluster is still electing or busy.

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
            await _ensure_streams_once(js, names, retention_seconds, replicas, chat_sessions, limits)
            return
        except (TimeoutError, NatsTimeoutError, NoRespondersError, ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def _same_config(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether the stream already has every setting we ask for (what we leave unset, the server chose)."""
    return not _differences(current, wanted)


# Settings Switchboard chooses but an operator may change on a running stream (`nats stream edit`).
MANAGED = ("max_bytes", "max_age", "discard", "num_replicas", "duplicate_window")
# Where Switchboard keeps, in the stream's own metadata, the values it last asked for: a current value
# that differs from it was changed by someone else, and is kept.
APPLIED_KEY = "switchboard.applied"


def _norm(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return sorted(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def _differences(current: StreamConfig, wanted: StreamConfig) -> dict[str, tuple]:
    import dataclasses  # noqa: PLC0415

    found = {}
    for f in dataclasses.fields(wanted):
        value = getattr(wanted, f.name)
        if value is None or f.name == "metadata" or (f.name == "duplicate_window" and not value):
            continue  # None: the server's choice; a duplicate window of 0: the server's default
        if _norm(value) != _norm(getattr(current, f.name)):
            found[f.name] = (getattr(current, f.name), value)
    return found


def _applied(config: StreamConfig) -> dict | None:
    import json  # noqa: PLC0415

    raw = (config.metadata or {}).get(APPLIED_KEY)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _applied_record(wanted: StreamConfig) -> str:
    import json  # noqa: PLC0415

    return json.dumps({name: _norm(getattr(wanted, name)) for name in MANAGED}, sort_keys=True)


def reconcile(current: StreamConfig, wanted: StreamConfig) -> tuple[StreamConfig | None, dict[str, tuple]]:
    """The update an existing stream needs (None: none), and the operator's changes kept.

    Nothing an operator changed is overwritten: a managed setting whose current value differs from
    what Switchboard last asked for (kept in the stream's metadata) stays as it is. One that still
    has Switchboard's last value follows the settings. Subjects Switchboard needs and the stream
    lacks are added (never removed). A stream without that record (made by an older Switchboard or
    by hand) keeps its values too, except a size limit it has none of: that is added, together with
    the stream's discard policy, so a full SB_INTERACTIONS refuses rather than drops.
    """
    import dataclasses  # noqa: PLC0415

    applied = _applied(current)
    changes: dict = {}
    kept: dict[str, tuple] = {}
    for name, (have, want) in _differences(current, wanted).items():
        if name == "subjects":
            missing = [s for s in want if s not in (have or [])]
            if missing:
                changes["subjects"] = [*(have or []), *missing]
        elif name not in MANAGED:
            kept[name] = (have, want)  # not editable (storage, retention) or not ours to change
        elif applied is not None and name in applied and _norm(have) == applied[name]:
            changes[name] = want  # still Switchboard's own value: the setting changed
        elif applied is None and name == "max_bytes" and have == -1:
            changes["max_bytes"] = want
            changes["discard"] = wanted.discard
        else:
            kept[name] = (have, want)
    if "discard" in changes:
        kept.pop("discard", None)
    record = _applied_record(wanted)
    if not changes and (current.metadata or {}).get(APPLIED_KEY) == record:
        return None, kept
    metadata = {**(current.metadata or {}), APPLIED_KEY: record}
    return dataclasses.replace(current, metadata=metadata, **changes), kept


async def _ensure_streams_once(
    js,
    names: Names,
    retention_seconds: int,
    replicas: int,
    chat_sessions: dict | None = None,
    limits: StreamLimits | None = None,
) -> None:
    from services.platform.logs import get_logger  # noqa: PLC0415

    log = get_logger(__name__)
    for config in stream_configs(names, retention_seconds, replicas, limits):
        config.metadata = {APPLIED_KEY: _applied_record(config)}
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                pass  # another process created it between our look and our add
            continue
        update, kept = reconcile(info.config, config)
        for setting, (have, want) in kept.items():
            # Said on every start, so the difference is seen; the operator's value stays.
            log.warning(
                "stream_setting_kept", stream=config.name, setting=setting, current=str(have), switchboard=str(want)
            )
        if update is not None:
            # Only when something changed: many processes start at once, and a stream that is
            # already right needs no update permission (see deploy/nats/auth.conf).
            await js.update_stream(update)
            log.info("stream_updated", stream=config.name)
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
