"""Keeps the audit anchor in NATS KV fresh: the relay role writes the chain's signed head every so often.

An anchor is only as recent as its last refresh: rows written after it can still be removed without
`audit verify --anchor-kv` noticing. The relay role refreshes it every
`SWITCHBOARD_AUDIT_ANCHOR_SECONDS` (0: never), which costs a few single-row reads and one KV write.
A refresh never moves the anchor backwards or onto another chain (see `eventstore.anchor`): a log
found truncated or rolled back is logged as `audit_anchor_refused` and the anchor stays as evidence.
Several relay processes may refresh at once; the KV write is a compare-and-set, so one of them wins.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.platform.eventstore import anchor as anchors
from services.platform.logs import get_logger

log = get_logger(__name__)


async def refresh_kv_anchor(sb, bucket: str, at: datetime) -> tuple[anchors.Anchor | None, anchors.Anchor | None]:
    """Writes the next anchor to the bucket; (new anchor or None if unchanged, previous anchor).

    AnchorError when the log no longer holds the previous anchor, or the previous one is forged.
    """
    store = sb.open_store()
    master = store.master
    kv = await anchors.open_bucket(sb.js, bucket, sb.settings.nats_replicas)
    previous, revision = await anchors.read_kv(kv, master.anchor_key)

    def decide():
        with store.datastore.get_connection() as conn:
            return anchors.next_anchor(conn, master.chain_key, master.anchor_key, previous, at)

    new = await asyncio.to_thread(decide)
    if new is not None and not await anchors.write_kv(kv, new, revision):
        return None, previous  # another process moved it meanwhile: its anchor is as good
    return new, previous


async def run_anchor_refresh(sb, interval: float) -> None:
    bucket = sb.names.stream(anchors.ANCHOR_BUCKET)
    refused = None
    while not sb.stop_event.is_set():
        try:
            new, _ = await refresh_kv_anchor(sb, bucket, datetime.now(UTC))
            refused = None
            if new is not None:
                log.debug("audit_anchor_written", position=new.position)
        except asyncio.CancelledError:
            raise
        except anchors.AnchorError as exc:
            if str(exc) != refused:  # once per finding, not every interval
                log.error("audit_anchor_refused", reason=str(exc))
                refused = str(exc)
        except Exception as exc:  # noqa: BLE001 — NATS or PostgreSQL away: try again next time
            log.warning("audit_anchor_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)


def start_anchor_refresh(sb) -> None:
    interval = float(getattr(sb.settings, "audit_anchor_seconds", 0) or 0)
    if interval > 0:
        sb.tasks.append(asyncio.create_task(run_anchor_refresh(sb, interval), name="audit-anchor"))
