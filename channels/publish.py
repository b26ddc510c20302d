"""Publishing a normalized interaction: the one way every channel hands a message to Switchboard.

The call returns only after JetStream acknowledged the message (so a 2xx means durable), with
`Nats-Msg-Id` = the interaction id (so a provider's retry is stored once). Every string of the
interaction passes the one sanitiser (`events.sanitize`) here, so no channel parser has to.
"""

from __future__ import annotations

import time

import msgspec
import nats.errors
import nats.js.errors
import structlog

from channels.errors import Unavailable
from events.interactions import Interaction
from events.sanitize import sanitize
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
        interaction = sanitize(interaction)
        structlog.contextvars.bind_contextvars(correlation_id=str(interaction.id))
        nc = getattr(self.js, "_nc", None)
        if nc is not None and not nc.is_connected:
            # Reconnecting: a publish would wait in nats-py's buffer for the whole timeout. Answer now.
            log.error("interaction_not_stored", channel=interaction.channel, reason="nats_disconnected")
            raise self._refuse("NATS is not connected", RETRY_AFTER_OUTAGE) from None
        try:
            ack = await self.js.publish(
                self.names.interaction_subject(interaction.channel, interaction.direction),
                _encode(interaction),
                timeout=self.timeout,
                headers={"Nats-Msg-Id": str(interaction.id)},
            )
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
