"""Reads for the agent API, straight from the read models (async psycopg)."""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID

import msgspec
from psycopg.rows import dict_row

from services.api.case_messages import attachment_views, case_messages
from services.domain.merges import survivor_of_async


class Cursor(msgspec.Struct, array_like=True):
    at: datetime
    id: UUID


def encode_cursor(at: datetime, item_id: UUID) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(Cursor(at, item_id))).decode().rstrip("=")


class InvalidCursor(ValueError):
    """A `cursor` we did not hand out: the client's mistake (400), never ours (500)."""


def decode_cursor(text: str) -> Cursor:
    if not text.isascii() or len(text) > 256:
        raise InvalidCursor(text)
    padded = text + "=" * (-len(text) % 4)
    try:
        return msgspec.msgpack.decode(base64.urlsafe_b64decode(padded), type=Cursor)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):  # binascii.Error is a ValueError
        raise InvalidCursor(text) from None


async def survivor_of(conn, customer_id: UUID) -> UUID | None:
    """The customer holding this id's history now (the end of its merge chain); None if not projected."""
    cur = await conn.execute("SELECT 1 FROM proj_customers WHERE id = %s", (customer_id,))
    if await cur.fetchone() is None:
        return None

    async def merged_into(i: UUID) -> UUID | None:
        cur = await conn.execute("SELECT merged_into FROM proj_customers WHERE id = %s", (i,))
        row = await cur.fetchone()
        return row[0] if row else None

    return await survivor_of_async(customer_id, merged_into)


# A profile in one round trip: the customer's row with its identities, open cases, consent and activities. `merged_into`
# comes along, so that an absorbed customer's id costs a walk to its survivor (services/domain/merges)
# and the survivor's profile, and every other id one indexed statement.
_PROFILE = (
    "SELECT c.id, c.merged_into, c.name, c.first_seen, c.last_seen, c.interaction_count, c.channels, c.erased, "
    "c.custom_attributes, "
    "(SELECT json_agg(json_build_array(i.kind, i.value, i.verified) ORDER BY i.kind, i.value) "
    " FROM proj_identities i WHERE i.customer_id = c.id) AS identities, "
    "(SELECT count(*) FROM proj_cases k WHERE k.customer_id = c.id AND k.status <> 'resolved') AS open_cases, "
    "(SELECT json_agg(json_build_array(purpose, channel, granted)) FROM proj_consent "
    " WHERE customer_id = c.id) AS consent, "
    "(SELECT json_agg(json_build_array(type, count, amount_sum::text, last_at) ORDER BY type) "
    " FROM proj_activity_totals WHERE customer_id = c.id) AS totals, "
    # per currency: the lifetime-value read model (projections/customer_activity.py), which keeps the
    # figures of the past when a customer is erased: an erased profile shows none
    "(SELECT json_agg(json_build_array(currency, amount_sum::text) ORDER BY currency) "
    " FROM proj_customer_value WHERE customer_id = c.id AND currency <> '' AND NOT c.erased) AS amounts "
    "FROM proj_customers c WHERE c.id = %s"
)


async def customer_profile(conn, customer_id: UUID) -> dict | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_PROFILE, (customer_id,))
    row = await cur.fetchone()
    if row is not None and row["merged_into"] is not None:
        survivor = await survivor_of(conn, customer_id)
        await cur.execute(_PROFILE, (survivor,))
        row = await cur.fetchone()
    if row is None:
        return None
    identities = row["identities"] or []
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "identities": [{"kind": kind, "value": value} for kind, value, verified in identities if verified],
        "claims": [{"kind": kind, "value": value} for kind, value, verified in identities if not verified],
        "channels": list(row["channels"]),
        "first_seen": row["first_seen"],
        "last_seen": row["last_seen"],
        "open_cases": row["open_cases"],
        "interaction_count": row["interaction_count"],
        "erased": row["erased"],
        "merged_ids": [],
        "attributes": row["custom_attributes"],
        **customer_data(row),
    }


def customer_data(row: dict) -> dict:
    """The profile's consent ({purpose: {channel: given}}) and business activities."""
    consent: dict[str, dict[str, bool]] = {}
    for purpose, channel, granted in row["consent"] or []:
        consent.setdefault(purpose, {})[channel] = granted
    by_type = {
        kind: {"count": count, "amount": amount, "last_at": datetime.fromisoformat(last_at) if last_at else None}
        for kind, count, amount, last_at in row["totals"] or []
    }
    amounts = {currency: amount for currency, amount in row["amounts"] or []}
    orders = by_type.get("order.placed")
    return {
        "consent": consent,
        "activities": {
            "by_type": by_type,
            "amounts": amounts,
            "orders": orders["count"] if orders else 0,
            "last_purchase_at": orders["last_at"] if orders else None,
        },
    }


# A timeline page: the items with what the classifier said of each (language, sentiment, intent).
_TIMELINE_PAGE = (
    "SELECT t.interaction_id, t.occurred_at, t.channel, t.direction, t.kind, t.text, t.case_id, t.attachments, "
    "k.language, k.sentiment, k.intent FROM proj_timeline t "
    "LEFT JOIN proj_timeline_classes k ON k.interaction_id = t.interaction_id "
    "WHERE t.customer_id = {customer}{clauses} ORDER BY t.occurred_at DESC, t.interaction_id DESC LIMIT %s"
)


async def timeline_of(conn, customer_id: UUID, limit: int, cursor: str | None, channel: str | None) -> dict | None:
    """A page of the timeline of whoever holds `customer_id`'s history now; None: no such customer.

    One round trip for a customer never absorbed: the customer's row (is it there, was it merged?)
    with the page beside it. An absorbed id costs the walk to its survivor and the survivor's page.
    """
    clauses, params = _timeline_filter(cursor, channel)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT c.merged_into, p.* FROM proj_customers c LEFT JOIN LATERAL "
        f"({_TIMELINE_PAGE.format(customer='c.id', clauses=clauses)}) p ON true WHERE c.id = %s",
        [*params, limit + 1, customer_id],
    )
    rows = await cur.fetchall()
    if not rows:
        return None
    if rows[0]["merged_into"] is not None:
        survivor = await survivor_of(conn, customer_id)
        if survivor is None:
            return None
        return await timeline(conn, survivor, limit, cursor, channel)
    return _timeline_page([r for r in rows if r["interaction_id"] is not None], limit)


def _timeline_filter(cursor: str | None, channel: str | None) -> tuple[str, list]:
    clauses, params = "", []
    if channel:
        clauses += " AND t.channel = %s"
        params.append(channel)
    if cursor:
        c = decode_cursor(cursor)
        clauses += " AND (t.occurred_at, t.interaction_id) < (%s, %s)"
        params += [c.at, c.id]
    return clauses, params


async def timeline(conn, customer_id: UUID, limit: int, cursor: str | None, channel: str | None) -> dict:
    clauses, params = _timeline_filter(cursor, channel)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _TIMELINE_PAGE.format(customer="%s", clauses=clauses),
        [customer_id, *params, limit + 1],
    )
    return _timeline_page(await cur.fetchall(), limit)


def _timeline_page(rows: list[dict], limit: int) -> dict:
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": str(r["interaction_id"]),
            "occurred_at": r["occurred_at"],
            "channel": r["channel"],
            "direction": r["direction"],
            "kind": r["kind"],
            "text": r["text"],
            "case_id": str(r["case_id"]) if r["case_id"] else None,
            "attachments": attachment_views(r["attachments"]),
            "language": r["language"],
            "sentiment": r["sentiment"],
            "intent": r["intent"],
        }
        for r in rows
    ]
    next_cursor = encode_cursor(rows[-1]["occurred_at"], rows[-1]["interaction_id"]) if more else None
    return {"items": items, "next_cursor": next_cursor}


async def search_customers(conn, q: str, limit: int, cursor: str | None) -> dict:
    """Customers whose name or an identity holds `q`, accents and case ignored (the same folding as
    `GET /api/v1/search`: sb_search_fold, services/platform/schema.py), most recently seen first."""
    folded = (await (await conn.execute("SELECT sb_search_fold(%s)", (q,))).fetchone())[0]
    pattern = "%" + folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    params: list = [pattern, pattern]
    extra = ""
    if cursor:
        c = decode_cursor(cursor)
        extra = "AND (c.last_seen, c.id) < (%s, %s)"
        params += [c.at, c.id]
    params.append(limit + 1)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        # Candidates through the trigram indexes of either table (projections/profile.py), then the page.
        "SELECT c.id, c.name, c.last_seen FROM proj_customers c WHERE c.id IN ("
        "SELECT n.id FROM proj_customers n WHERE sb_search_fold(n.name) LIKE %s "
        "UNION SELECT i.customer_id FROM proj_identities i WHERE sb_search_fold(i.value) LIKE %s) "
        f"AND c.merged_into IS NULL AND NOT c.erased {extra} ORDER BY c.last_seen DESC, c.id DESC LIMIT %s",
        params,
    )
    rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{"id": str(r["id"]), "name": r["name"], "last_seen": r["last_seen"]} for r in rows]
    return {"items": items, "next_cursor": encode_cursor(rows[-1]["last_seen"], rows[-1]["id"]) if more else None}


async def case_view(conn, case_id: UUID) -> dict | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT c.*, p.name AS customer_name FROM proj_cases c LEFT JOIN proj_customers p ON p.id = c.customer_id "
        "WHERE c.id = %s",
        (case_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    messages = await case_messages(conn, case_id, row["channel"])
    await cur.execute(
        "SELECT note_id, text, author, created_at FROM proj_case_notes WHERE case_id = %s ORDER BY created_at",
        (case_id,),
    )
    notes = await cur.fetchall()
    out = _case_json(row, messages, notes)
    out["customer_name"] = row["customer_name"]
    # The classification of the case's latest classified message (the classifier role's).
    await cur.execute(
        "SELECT c.language, c.sentiment, c.intent FROM proj_timeline t JOIN proj_timeline_classes c "
        "ON c.interaction_id = t.interaction_id WHERE t.case_id = %s ORDER BY t.occurred_at DESC, t.position DESC LIMIT 1",
        (case_id,),
    )
    latest = await cur.fetchone()
    if latest is not None:
        out.update(latest)
    return out


def _case_json(row: dict, messages: list | None = None, notes: list | None = None) -> dict:
    out = {
        "id": str(row["id"]),
        "customer_id": str(row["customer_id"]),
        "channel": row["channel"],
        "status": row["status"],
        "priority": row["priority"],
        "assignee": row["assignee"],
        "queue": row["queue"],
        "tags": list(row["tags"]),
        "sla_due_at": row["sla_due_at"],
        # The SLA clock's summary (the timer's): running, paused, met or breached; None without one.
        "sla_state": row.get("sla_state"),
        "sla_breached": bool(row.get("sla_breached")),
        "opened_at": row["opened_at"],
        "updated_at": row["updated_at"],
        "first_response_at": row["first_response_at"],
        "resolved_at": row["resolved_at"],
        "message_count": row["message_count"],
        "csat": row["csat"],
        "attributes": row["attributes"],
    }
    if messages is not None:
        out["messages"] = messages
    if notes is not None:
        out["notes"] = [
            {"id": str(n["note_id"]), "text": n["text"], "author": n["author"], "created_at": n["created_at"]}
            for n in notes
        ]
    return out


async def list_cases(
    conn, queue: str | None, statuses: list[str] | None, assignee: str | None, limit: int, cursor: str | None
) -> dict:
    """A page of cases, newest change first. `statuses`: any of them; `assignee` "none": unassigned.
    Each row carries what an agent triages by: the customer's name, the last message (a preview),
    and since when the customer has been waiting for us (their last message after our last one)."""
    clauses, params = [], []
    if queue:
        clauses.append("c.queue = %s")
        params.append(queue)
    if assignee == "none":
        clauses.append("c.assignee IS NULL")
    elif assignee:
        clauses.append("c.assignee = %s")
        params.append(assignee)
    if cursor:
        c = decode_cursor(cursor)
        clauses.append("(c.updated_at, c.id) < (%s, %s)")
        params += [c.at, c.id]
    # The page's cases first, newest change first, through an index (proj_cases_updated_idx, or per
    # status proj_cases_status_idx, merged: one ordered index scan per status asked for), and only
    # then, for those few rows, the customer's name, the last message and the waiting time.
    order = "ORDER BY c.updated_at DESC, c.id DESC LIMIT %s"
    if statuses:
        parts, page_params = [], []
        for status in dict.fromkeys(statuses):
            where = " AND ".join(["c.status = %s", *clauses])
            parts.append(f"(SELECT * FROM proj_cases c WHERE {where} {order})")
            page_params += [status, *params, limit + 1]
        page = f"SELECT * FROM ({' UNION ALL '.join(parts)}) c {order}"
        page_params.append(limit + 1)
    else:
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        page = f"SELECT * FROM proj_cases c {where} {order}"
        page_params = [*params, limit + 1]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT c.*, p.name AS customer_name, m.text AS last_text, m.direction AS last_direction, "
        "m.occurred_at AS last_at, "
        "(SELECT min(t.occurred_at) FROM proj_timeline t WHERE t.case_id = c.id AND t.direction = 'inbound' "
        " AND t.occurred_at > COALESCE((SELECT max(o.occurred_at) FROM proj_timeline o WHERE o.case_id = c.id "
        " AND o.direction = 'outbound'), '-infinity')) AS waiting_since "
        f"FROM ({page}) c LEFT JOIN proj_customers p ON p.id = c.customer_id "
        "LEFT JOIN LATERAL (SELECT text, direction, occurred_at FROM proj_timeline t WHERE t.case_id = c.id "
        "ORDER BY t.occurred_at DESC LIMIT 1) m ON true "
        "ORDER BY c.updated_at DESC, c.id DESC",
        page_params,
    )
    rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        item = _case_json(r)
        item["customer_name"] = r["customer_name"]
        item["waiting_since"] = r["waiting_since"]
        if r["last_at"] is not None:
            text = r["last_text"] or ""
            item["last_message"] = {
                "text": text[:140] + ("…" if len(text) > 140 else ""),
                "direction": r["last_direction"],
                "occurred_at": r["last_at"],
            }
        items.append(item)
    return {
        "items": items,
        "next_cursor": encode_cursor(rows[-1]["updated_at"], rows[-1]["id"]) if more else None,
    }


async def metrics(conn, start: datetime, end: datetime) -> dict:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT count(*) AS cases, "
        "avg(extract(epoch FROM first_response_at - opened_at)) AS first_response_s, "
        "avg(extract(epoch FROM resolved_at - opened_at)) FILTER (WHERE resolved_at IS NOT NULL) AS resolution_s, "
        # SLA attainment: the first-response clock's outcome (the timer's); cases opened before the
        # timer carry a fixed first-response due time instead.
        "count(*) FILTER (WHERE s.state = 'fulfilled' OR (s.state IS NULL AND first_response_at IS NOT NULL "
        "AND first_response_at <= sla_due_at)) AS sla_met, "
        "count(*) FILTER (WHERE s.state IN ('fulfilled', 'breached') OR (s.state IS NULL "
        "AND (first_response_at IS NOT NULL OR sla_due_at < now()))) AS sla_due, "
        "avg(csat) AS csat, count(csat) AS csat_responses "
        "FROM proj_cases c LEFT JOIN proj_case_sla s ON s.case_id = c.id AND s.target = 'first_response' "
        "WHERE opened_at >= %s AND opened_at < %s",
        (start, end),
    )
    row = await cur.fetchone()
    await cur.execute(
        "SELECT channel, direction, count(*) AS n FROM proj_timeline WHERE occurred_at >= %s AND occurred_at < %s "
        "GROUP BY channel, direction ORDER BY channel, direction",
        (start, end),
    )
    volume: dict[str, dict[str, int]] = {}
    for r in await cur.fetchall():
        volume.setdefault(r["channel"], {"inbound": 0, "outbound": 0})[r["direction"]] = r["n"]
    return {
        "from": start,
        "to": end,
        "cases_opened": row["cases"],
        "first_response_time_s": _num(row["first_response_s"]),
        "resolution_time_s": _num(row["resolution_s"]),
        "sla_attainment": (row["sla_met"] / row["sla_due"]) if row["sla_due"] else None,
        "csat": _num(row["csat"]),
        "csat_responses": row["csat_responses"],
        "volume_per_channel": volume,
    }


def _num(value) -> float | None:
    return None if value is None else round(float(value), 3)
