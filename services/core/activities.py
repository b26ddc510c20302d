"""Business activities published on NATS (`sb.activities.<source>`, stream SB_ACTIVITIES) handed on to
the core as interactions on channel "activity" (services/domain/activities.py).

The body is the one of `POST /api/v1/activities`; `<source>` names the system. The hand-on publishes
with `Nats-Msg-Id` = the activity's id (type + reference), then acks: a crash between the two
publishes it again, and the core records it once (JetStream's duplicate window, then the core's
processed-interaction records). A body that is not an activity is copied to SB_DEADLETTER with its
reason, then acked: it never holds up the ones behind it. Nothing of a body reaches a log line.
"""

from __future__ import annotations

import asyncio
import threading

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig

from channels.errors import Unavailable
from channels.publish import Publisher
from services.domain import activities
from services.platform.logs import get_logger
from services.platform.streams import Names

log = get_logger(__name__)

DURABLE = "sb-activities"
MAX_BODY = 64 * 1024
_decode = msgspec.json.Decoder(activities.ActivityBody).decode


def handed_on(data: bytes, subject: str, names: Names):
    """The interaction a message of `sb.activities.<source>` carries; BadActivity if none."""
    if len(data) > MAX_BODY:
        raise activities.BadActivity(f"larger than {MAX_BODY} bytes")
    source = subject[len(names.subject("sb.activities.")) :]
    try:
        body = _decode(data)
    except msgspec.DecodeError as exc:
        raise activities.BadActivity(str(exc)) from None
    return activities.checked(body, source=source)


async def _dead_letter(js, names: Names, msg, reason: str) -> None:
    headers = {"Sb-Reason": reason[:500], "Sb-Original-Subject": msg.subject}
    await js.publish(names.deadletter_subject("activities"), msg.data, headers=headers)


async def hand_on_forever(js, names: Names, stop: threading.Event | None = None, batch: int = 100) -> None:
    """The core role's loop: every activity on SB_ACTIVITIES becomes an interaction, once."""
    publisher = Publisher(js, names)
    sub = await js.pull_subscribe(
        names.subject("sb.activities.>"),
        durable=DURABLE,
        stream=names.activities,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0),
    )
    while stop is None or not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except TimeoutError:
            continue
        except Exception as exc:  # noqa: BLE001 — NATS away for a while: try again
            log.warning("activities_fetch_failed", error=type(exc).__name__)
            await asyncio.sleep(1.0)
            continue
        for msg in msgs:
            try:
                try:
                    interaction = handed_on(msg.data, msg.subject, names)
                except activities.BadActivity as exc:
                    log.warning("activity_refused", subject=msg.subject, reason=str(exc)[:200])
                    await _dead_letter(js, names, msg, str(exc))
                else:
                    await publisher.publish(interaction)
                await msg.ack()
            except Unavailable:
                await msg.nak(delay=5.0)  # SB_INTERACTIONS cannot take it now: later, not lost
            except Exception as exc:  # noqa: BLE001 — one message never stops the others
                log.warning("activity_hand_on_failed", error=type(exc).__name__)
                await msg.nak(delay=5.0)
