"""NATS clean-up of an erasure: chat sessions and outboxes, interactions, dead letters, published events."""

from __future__ import annotations

from uuid import UUID

import msgspec

from events.interactions import INTERACTION_DECODER, Identity
from services.domain.identity import InvalidIdentity, normalize
from services.gdpr.blobs import blob_refs
from services.platform.eventstore.store import EventStore
from services.platform.streams import Names


async def stream_exists(js, name: str) -> bool:
    from nats.js.errors import NotFoundError  # noqa: PLC0415

    try:
        await js.stream_info(name)
        return True
    except NotFoundError:
        return False


async def purge_chat_sessions(js, names: Names, sessions: set[str]) -> int:
    if not sessions:
        return 0
    try:
        kv = await js.key_value(names.chat_sessions_bucket)
    except Exception:  # noqa: BLE001 — no bucket: nothing to purge
        return 0
    for session_id in sorted(sessions):
        await kv.purge(session_id)
    return len(sessions)


async def purge_outboxes(js, names: Names, sessions: set[str]) -> int:
    if not sessions or not await stream_exists(js, names.chat_outbox):
        return 0
    for session_id in sorted(sessions):
        await js.purge_stream(names.chat_outbox, subject=names.chat_outbox_subject(session_id))
    return len(sessions)


async def delete_message(js, stream: str, seq: int) -> bool:
    from nats.js.errors import NotFoundError  # noqa: PLC0415

    try:
        return bool(await js.delete_msg(stream, seq))
    except NotFoundError:
        return False  # gone already: expired by retention, or deleted by an earlier run
    except Exception as exc:  # noqa: BLE001 — JetStream answers "no message found" as an APIError
        if "no message found" in str(exc).lower() or getattr(exc, "err_code", None) == 10037:
            return False
        raise


async def delete_interactions(
    js, names: Names, store: EventStore, interaction_ids: set[UUID], case_ids: set[UUID] = frozenset()
) -> int:
    """The customer's interactions, and the delivery statuses and bounces about their cases' replies."""
    if not (interaction_ids or case_ids) or not await stream_exists(js, names.interactions):
        return 0
    with store.datastore.transaction(commit=False) as curs:
        curs.execute(
            "SELECT stream_seq FROM sb_processed WHERE (interaction_id = ANY(%s) OR case_id = ANY(%s)) "
            "AND stream_seq IS NOT NULL",
            (list(interaction_ids), list(case_ids)),
        )
        seqs = sorted(row["stream_seq"] for row in curs.fetchall())
    deleted = 0
    for seq in seqs:
        deleted += await delete_message(js, names.interactions, seq)
    return deleted


async def delete_dead_letters(
    js, names: Names, store: EventStore, interaction_ids: set[UUID], blinds: set[bytes], blobs: set[str] | None = None
) -> int:
    """Dead letters are interactions nobody could record: matched by id, or by one of the identities.

    Each goes with the original it was copied from, still in SB_INTERACTIONS (`Sb-Original-Sequence`).
    The `blob:` attachments of the matched ones are added to `blobs`.
    """
    if not await stream_exists(js, names.deadletters):
        return 0
    info = await js.stream_info(names.deadletters)
    if not info.state.messages:
        return 0
    matched: list[tuple[int, int | None]] = []
    seq = info.state.first_seq
    while seq and seq <= info.state.last_seq:
        try:
            msg = await js.get_msg(names.deadletters, seq=seq, subject=names.subject("sb.deadletter.>"), next=True)
        except Exception:  # noqa: BLE001 — nothing at or after seq
            break
        if dead_letter_matches(store, msg.data or b"", interaction_ids, blinds):
            if blobs is not None:
                blobs.update(blob_refs(msg.data or b""))
            original = (msg.headers or {}).get("Sb-Original-Sequence", "")
            matched.append((msg.seq, int(original) if original.isdigit() else None))
        seq = msg.seq + 1
    deleted = 0
    for dead_seq, original_seq in matched:
        deleted += await delete_message(js, names.deadletters, dead_seq)
        if original_seq is not None and await stream_exists(js, names.interactions):
            await delete_message(js, names.interactions, original_seq)
    return deleted


def dead_letter_matches(store: EventStore, data: bytes, interaction_ids: set[UUID], blinds: set[bytes]) -> bool:
    try:
        interaction = INTERACTION_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    if interaction.id in interaction_ids:
        return True
    for identity in interaction.identities:
        candidates = {identity.value.strip()}
        try:
            candidates.add(normalize(Identity(identity.kind, identity.value)).value)
        except InvalidIdentity:
            pass
        if any(store.master.blind_index(identity.kind, value) in blinds for value in candidates):
            return True
    return False


async def delete_events(js, names: Names, positions: list[int]) -> int:
    """SB_EVENTS is in log order, one message per position: each is found by a guess, else bisection."""
    if not positions or not await stream_exists(js, names.events):
        return 0
    info = await js.stream_info(names.events)
    first, last = info.state.first_seq, info.state.last_seq
    if not info.state.messages:
        return 0
    subject = names.subject("sb.events.>")

    async def at_or_after(seq: int):
        try:
            msg = await js.get_msg(names.events, seq=seq, subject=subject, next=True)
        except Exception:  # noqa: BLE001 — nothing at or after seq
            return None
        return msg if msg.seq <= last else None

    def position_of(msg) -> int:
        return int((msg.headers or {}).get("Sb-Position", "0"))

    offset = 0  # seq − position of the last message found: a good first guess for the next
    deleted = 0
    missing = 0
    for position in positions:
        found = None
        guess = position + offset
        if first <= guess <= last:
            msg = await at_or_after(guess)
            if msg is not None and position_of(msg) == position:
                found = msg
        lo, hi = first, last
        while found is None and lo <= hi:
            mid = (lo + hi) // 2
            msg = await at_or_after(mid)
            if msg is None or msg.seq > hi:
                hi = mid - 1
                continue
            p = position_of(msg)
            if p == position:
                found = msg
            elif p < position:
                lo = msg.seq + 1
            else:
                hi = mid - 1
        if found is None:
            missing += 1  # expired by retention, or deleted by an earlier run
            continue
        offset = found.seq - position
        deleted += await delete_message(js, names.events, found.seq)
    return deleted
