"""The messages of one case, oldest first, as the agent sees the conversation: what the customer
wrote, what we answered and where each of our replies stands (requested, sent, delivered, failed).

Two indexed reads: the case's timeline rows (proj_timeline by case_id) and its replies (proj_replies
by case_id). A reply joins its timeline row by the row's id, which the relay derives from the reply
id (`outbound_interaction_id`); a reply with no row yet (on its way, or failed before a provider took
it) is listed on its own, without text (the read models keep a reply's text only once it was sent).
"""

from __future__ import annotations

from uuid import UUID

from psycopg.rows import dict_row

from services.relay.outbound import outbound_interaction_id


def attachment_views(attachments: list[dict] | None) -> list[dict]:
    """Timeline attachments with the URL that serves their bytes (None when we do not hold them: an
    MMS's media stay with the provider)."""
    return [{**a, "url": f"/api/v1/attachments/{a['sha256']}" if a.get("sha256") else None} for a in attachments or ()]


async def case_messages(conn, case_id: UUID, channel: str | None = None) -> list[dict]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT interaction_id, occurred_at, channel, direction, kind, text, attachments FROM proj_timeline "
        "WHERE case_id = %s ORDER BY occurred_at, interaction_id",
        (case_id,),
    )
    rows = await cur.fetchall()
    await cur.execute("SELECT reply_id, status, reason, updated_at FROM proj_replies WHERE case_id = %s", (case_id,))
    replies = {outbound_interaction_id(r["reply_id"]): r for r in await cur.fetchall()}
    messages = []
    for row in rows:
        reply = replies.pop(row["interaction_id"], None)
        messages.append(
            {
                "id": str(row["interaction_id"]),
                "occurred_at": row["occurred_at"],
                "direction": row["direction"],
                "kind": row["kind"],
                "text": row["text"],
                "channel": row["channel"],
                "attachments": attachment_views(row["attachments"]),
                **(_reply(reply) if reply else {}),
            }
        )
    pending = [
        {
            "id": str(interaction_id),
            "occurred_at": reply["updated_at"],
            "direction": "outbound",
            "kind": "message",
            "text": None,
            "channel": channel,
            "attachments": [],
            **_reply(reply),
        }
        for interaction_id, reply in replies.items()
    ]
    if pending:
        messages = sorted(messages + pending, key=lambda m: (m["occurred_at"], m["id"]))
    return messages


def _reply(reply: dict) -> dict:
    return {
        "reply_id": str(reply["reply_id"]),
        "delivery": {"status": reply["status"], "updated_at": reply["updated_at"], "reason": reply["reason"]},
    }
