"""Dead letters: list them, and publish them again to the subject they came from."""

from __future__ import annotations

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.settings import Settings
from services.streams import Names


async def _all(settings: Settings, names: Names):
    nc = await nats.connect(settings.nats_url.split(","))
    js = nc.jetstream()
    out = []
    try:
        info = await js.stream_info(names.deadletters)
        if info.state.messages:
            sub = await js.pull_subscribe(names.deadletter_subject("interactions"), stream=names.deadletters,
                                          config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
            while len(out) < info.state.messages:
                try:
                    msgs = await sub.fetch(min(500, info.state.messages - len(out)), timeout=2.0)
                except TimeoutError:
                    break
                out.extend(msgs)
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def list_dead_letters(settings: Settings, names: Names | None = None) -> list[tuple[int, str, str]]:
    msgs = await _all(settings, names or Names())
    return [(m.metadata.sequence.stream, (m.headers or {}).get("Sb-Original-Subject", "?"),
             (m.headers or {}).get("Sb-Reason", "?")) for m in msgs]


async def redrive(settings: Settings, sequences: set[int] | None, names: Names | None = None) -> int:
    names = names or Names()
    msgs = await _all(settings, names)
    nc = await nats.connect(settings.nats_url.split(","))
    js = nc.jetstream()
    n = 0
    try:
        for m in msgs:
            seq = m.metadata.sequence.stream
            if sequences is not None and seq not in sequences:
                continue
            headers = m.headers or {}
            # A fresh message id: the original id is still in the duplicate window.
            await js.publish(headers["Sb-Original-Subject"], m.data,
                             headers={"Nats-Msg-Id": f"redrive:{seq}:{headers.get('Nats-Msg-Id', '')}"})
            await js.delete_msg(names.deadletters, seq)
            n += 1
    finally:
        await nc.close()
    return n
