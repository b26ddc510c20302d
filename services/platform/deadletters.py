"""Dead letters: interactions the core could not record, kept with their reason until re-driven.

The core publishes them to `sb.deadletter.interactions` (stream SB_DEADLETTER) with headers
`Sb-Reason`, `Sb-Original-Subject`, `Sb-Original-Sequence` and `Sb-Deliveries`. `list` shows them;
`redrive` publishes each again to the subject it came from (with a fresh `Nats-Msg-Id`, since the
original is still in the interactions stream's duplicate window) and removes it from the dead-letter
stream. A re-driven interaction that was in fact recorded meanwhile is recognised and recorded once;
one that still cannot be recorded comes back here with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.errors import NotFoundError

from services.platform import nats_client
from services.platform.settings import Settings
from services.platform.streams import Names


@dataclass(frozen=True)
class DeadLetter:
    seq: int  # in the dead-letter stream
    subject: str  # where it came from
    reason: str
    deliveries: int
    headers: dict
    data: bytes


async def _connect(settings: Settings):
    return await nats_client.connect(settings)


async def _read_all(js, names: Names) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(
                names.deadletters, seq=seq, subject=names.deadletter_subject("interactions"), next=True
            )
        except NotFoundError:
            return out
        headers = dict(msg.headers or {})
        out.append(
            DeadLetter(
                seq=msg.seq,
                subject=headers.get("Sb-Original-Subject", "?"),
                reason=headers.get("Sb-Reason", "?"),
                deliveries=int(headers.get("Sb-Deliveries", 0) or 0),
                headers=headers,
                data=msg.data or b"",
            )
        )
        seq = msg.seq + 1


async def list_dead_letters(settings: Settings, names: Names | None = None) -> list[DeadLetter]:
    nc = await _connect(settings)
    try:
        return await _read_all(nc.jetstream(), names or Names())
    finally:
        await nc.close()


async def redrive(settings: Settings, sequences: set[int] | None, names: Names | None = None) -> int:
    """Re-publishes the named dead letters (all when `sequences` is None); returns how many."""
    names = names or Names()
    nc = await _connect(settings)
    js = nc.jetstream()
    n = 0
    try:
        for letter in await _read_all(js, names):
            if sequences is not None and letter.seq not in sequences:
                continue
            original_id = letter.headers.get("Nats-Msg-Id", "").removeprefix("dl:")
            await js.publish(
                letter.subject,
                letter.data,
                headers={"Nats-Msg-Id": f"redrive:{letter.seq}:{original_id}", "Sb-Redriven-From": str(letter.seq)},
            )
            await js.delete_msg(names.deadletters, letter.seq)
            n += 1
    finally:
        await nc.close()
    return n
