"""Publishing a normalized interaction: the one way every channel hands a message to Switchboard.

The call returns only after JetStream acknowledged the message (so a 2xx means durable), with
`Nats-Msg-Id` = the interaction id (so a provider's retry is stored once). Every string of the
interaction passes the one sanitiser (`events.sanitize`) here, so no channel parser has to.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import msgspec
import nats.errors
import nats.js.errors
import structlog

from channels.errors import Unavailable
from events.interactions import Interaction
from events.sanitize import sanitized_json
from services.platform.logs import get_logger
from services.platform.streams import Names

log = get_logger(__name__)
_encode = msgspec.json.Encoder().encode

# JetStream's "maximum bytes/messages exceeded": the stream is full and its discard policy is "new".
_STREAM_FULL = {10077}
# Seconds a client is asked to wait: a full stream needs the core to catch up and purge; an outage
# (no quorum, no responders, a timeout) usually passes sooner.
RETRY_AFTER_FULL = 30
RETRY_AFTER_OUTAGE = 5
REFUSAL_REMEMBERED = 30.0


class _Ack(msgspec.Struct):
    """JetStream's answer to a publish: `{"stream", "seq", "duplicate"?}` or `{"error": {...}}`."""

    seq: int = 0
    duplicate: bool = False
    error: dict | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class _AckInbox:
    """JetStream publishes of one connection, each awaited to its ack through one wildcard inbox.

    Why not `js.publish`: per message it draws random bytes from the OS for its reply token, wraps
    the wait in `asyncio.wait_for`, parses the ack with `json` into a dataclass; on the webhook path
    (measured by tests/benchmarks/webhooks.py) that was a tenth of the gateway's CPU per request.
    Here a counter makes the token, one timer bounds the wait, msgspec reads the ack. Errors are
    nats-py's own (`APIError` and its kinds, `NoStreamResponseError`, `TimeoutError`), so callers
    handle either path alike. Only public nats-py calls: `new_inbox`, `subscribe`, `publish`.
    """

    def __init__(self, nc):
        self.nc = nc
        self.prefix = ""
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future] = {}
        self._lock = asyncio.Lock()

    async def _open(self) -> None:
        async with self._lock:
            if not self.prefix:
                prefix = self.nc.new_inbox() + "."
                await self.nc.subscribe(prefix + "*", cb=self._on_ack)
                self.prefix = prefix

    async def publish(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> _Ack:
        if not self.prefix:
            await self._open()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future = self._waiting[token] = loop.create_future()
        timer = loop.call_later(timeout, self._expire, future)
        try:
            await self.nc.publish(subject, data, reply=self.prefix + token, headers=headers)
            return await future
        finally:
            timer.cancel()
            del self._waiting[token]

    @staticmethod
    def _expire(future: asyncio.Future) -> None:
        if not future.done():
            future.set_exception(nats.errors.TimeoutError())

    async def _on_ack(self, msg) -> None:
        future = self._waiting.get(msg.subject[len(self.prefix) :])
        if future is None or future.done():
            return  # answered after its timeout, or not ours
        if msg.headers and msg.headers.get("Status") == "503":  # no responders: no stream takes the subject
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            ack = _decode_ack(msg.data)
            if ack.error is not None:
                nats.js.errors.APIError.from_error(ack.error)  # raises the error's kind
        except Exception as exc:  # noqa: BLE001 — a refusal, or an answer we cannot read: the caller's error
            future.set_exception(exc if isinstance(exc, nats.errors.Error) else nats.errors.Error(str(exc)))
            return
        future.set_result(ack)


class Publisher:
    def __init__(self, js, names: Names, timeout: float = 10.0):
        self.js = js
        self.names = names
        self.timeout = timeout
        # The last refusal, until a publish succeeds again or it is `REFUSAL_REMEMBERED` seconds old:
        # `/ready` reports it ("stream full", "insufficient resources", ...), since a full server
        # store shows in no stream's limits. It fades, so a balancer that stops sending traffic on a
        # 503 from /ready does not keep the gateway out for good.
        self._refusal: tuple[str, float] | None = None
        nc = getattr(js, "_nc", None)
        self._acks = _AckInbox(nc) if nc is not None else None

    @property
    def refusing(self) -> str | None:
        if self._refusal is None or time.monotonic() - self._refusal[1] > REFUSAL_REMEMBERED:
            return None
        return self._refusal[0]

    def _refuse(self, reason: str, retry_after: int) -> Unavailable:
        self._refusal = (reason, time.monotonic())
        return Unavailable(retry_after=retry_after)

    async def publish(self, interaction: Interaction) -> bool:
        """Stores the interaction, sanitised, in SB_INTERACTIONS; returns False when it was a duplicate.

        Raises `Unavailable` (503 + Retry-After) when JetStream did not store it: the stream is full,
        has no quorum, or NATS does not answer in time.
        """
        interaction, data = sanitized_json(interaction, _encode)
        structlog.contextvars.bind_contextvars(correlation_id=str(interaction.id))
        nc = getattr(self.js, "_nc", None)
        if nc is not None and not nc.is_connected:
            # Reconnecting: a publish would wait in nats-py's buffer for the whole timeout. Answer now.
            log.error("interaction_not_stored", channel=interaction.channel, reason="nats_disconnected")
            raise self._refuse("NATS is not connected", RETRY_AFTER_OUTAGE) from None
        subject = self.names.interaction_subject(interaction.channel, interaction.direction)
        headers = {"Nats-Msg-Id": str(interaction.id)}
        try:
            if self._acks is not None:
                ack = await self._acks.publish(subject, data, headers, self.timeout)
            else:
                ack = await self.js.publish(subject, data, timeout=self.timeout, headers=headers)
        except nats.js.errors.APIError as exc:
            full = exc.err_code in _STREAM_FULL
            log.error(
                "interaction_not_stored",
                channel=interaction.channel,
                reason="stream_full" if full else "jetstream_refused",
                code=exc.code,
                err_code=exc.err_code,
            )
            reason = "stream full" if full else f"JetStream refused: {exc.description or exc.err_code}"
            raise self._refuse(reason[:200], RETRY_AFTER_FULL if full else RETRY_AFTER_OUTAGE) from None
        except (TimeoutError, nats.errors.Error) as exc:
            log.error("interaction_not_stored", channel=interaction.channel, reason=type(exc).__name__)
            raise self._refuse(f"JetStream did not answer: {type(exc).__name__}", RETRY_AFTER_OUTAGE) from None
        self._refusal = None
        log.info(
            "interaction_published",
            channel=interaction.channel,
            direction=interaction.direction,
            kind=interaction.kind,
            seq=ack.seq,
            duplicate=bool(ack.duplicate),
        )
        return not ack.duplicate
