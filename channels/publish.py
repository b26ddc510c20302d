"""Publishing a normalized interaction: the one way every channel hands a message to Switchboard.

The call returns only after JetStream acknowledged the message (so a 2xx means durable), with
`Nats-Msg-Id` = the interaction id (so a provider's retry is stored once). Every string of the
interaction passes the one sanitiser (`events.sanitize`) here, so no channel parser has to.
"""

from __future__ import annotations

import msgspec
import structlog

from events.interactions import Interaction
from events.sanitize import sanitize
from services.platform.logs import get_logger
from services.platform.streams import Names

log = get_logger(__name__)
_encode = msgspec.json.Encoder().encode


class Publisher:
    def __init__(self, js, names: Names, timeout: float = 10.0):
        self.js = js
        self.names = names
        self.timeout = timeout

    async def publish(self, interaction: Interaction) -> bool:
        """Stores the interaction, sanitised, in SB_INTERACTIONS; returns False when it was a duplicate."""
        interaction = sanitize(interaction)
        structlog.contextvars.bind_contextvars(correlation_id=str(interaction.id))
        ack = await self.js.publish(
            self.names.interaction_subject(interaction.channel, interaction.direction),
            _encode(interaction),
            timeout=self.timeout,
            headers={"Nats-Msg-Id": str(interaction.id)},
        )
        log.info(
            "interaction_published",
            channel=interaction.channel,
            direction=interaction.direction,
            kind=interaction.kind,
            seq=ack.seq,
            duplicate=bool(ack.duplicate),
        )
        return not ack.duplicate
