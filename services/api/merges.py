"""Agent API, merges (supervisors and admins): the suggested merges waiting for a verdict, accepting
or rejecting one, and merging two customers by hand. A suggestion's id is derived from its pair of
customers (`projections.merge_suggestions.merge_suggestion_id`)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK
from psycopg.rows import dict_row

from services.api import queries
from services.api.auth import SUPERVISE
from services.api.context import now, page_limit, require, svc
from services.api.views import IdentityView
from services.core import merging
from services.core.commands import NotFound


class SuggestedCustomer(msgspec.Struct):
    """One side of a suggested merge, as it stands now (after any merges since)."""

    id: str
    name: str | None
    identities: list[IdentityView]


class MergeSuggestion(msgspec.Struct):
    id: str
    customers: list[SuggestedCustomer]  # the two, in the order of their ids
    reason: str
    suggested_at: datetime


class MergeSuggestionList(msgspec.Struct):
    items: list[MergeSuggestion]
    next_cursor: str | None


class MergeResult(msgspec.Struct):
    """What a verdict or a merge did; `position` reads it back (Sb-Min-Position)."""

    status: str  # "merged", "rejected", or "unchanged" (one customer already)
    position: int
    survivor_id: str | None = None
    absorbed_id: str | None = None
    suggestion_id: str | None = None


class MergeBody(msgspec.Struct, forbid_unknown_fields=True):
    other_id: UUID


@get("/api/v1/merge-suggestions", summary="Suggested merges waiting for a supervisor, newest first")
async def list_merge_suggestions(
    request: Request, limit: FromQuery[int] = 50, cursor: FromQuery[str | None] = None
) -> MergeSuggestionList:
    await require(request, SUPERVISE)
    limit = page_limit(limit)
    clauses, params = ["status = 'pending'"], []
    if cursor:
        c = queries.decode_cursor(cursor)
        clauses.append("(suggested_at, id) < (%s, %s)")
        params += [c.at, c.id]
    items: list[MergeSuggestion] = []
    async with svc(request).pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        # Suggestions whose two customers were merged since (through a third, say) are skipped, so a
        # page may hold fewer than `limit`; `next_cursor` still leads on.
        await cur.execute(
            "SELECT id, customer_a, customer_b, reason, suggested_at FROM proj_merge_suggestions "
            f"WHERE {' AND '.join(clauses)} ORDER BY suggested_at DESC, id DESC LIMIT %s",
            [*params, limit + 1],
        )
        rows = await cur.fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            a = await queries.survivor_of(conn, row["customer_a"])
            b = await queries.survivor_of(conn, row["customer_b"])
            if a is None or b is None or a == b:
                continue
            items.append(
                MergeSuggestion(
                    id=str(row["id"]),
                    customers=[await _side(cur, a), await _side(cur, b)],
                    reason=row["reason"],
                    suggested_at=row["suggested_at"],
                )
            )
    next_cursor = queries.encode_cursor(rows[-1]["suggested_at"], rows[-1]["id"]) if more else None
    return MergeSuggestionList(items=items, next_cursor=next_cursor)


async def _side(cur, customer_id: UUID) -> SuggestedCustomer:
    await cur.execute("SELECT name FROM proj_customers WHERE id = %s", (customer_id,))
    row = await cur.fetchone()
    await cur.execute(
        "SELECT kind, value FROM proj_identities WHERE customer_id = %s AND verified ORDER BY kind, value",
        (customer_id,),
    )
    identities = [IdentityView(r["kind"], r["value"]) for r in await cur.fetchall()]
    return SuggestedCustomer(id=str(customer_id), name=row["name"] if row else None, identities=identities)


async def _pair(request: Request, suggestion_id: UUID) -> tuple[UUID, UUID]:
    async with svc(request).pool.connection() as conn:
        cur = await conn.execute(
            "SELECT customer_a, customer_b FROM proj_merge_suggestions WHERE id = %s", (suggestion_id,)
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"merge suggestion {suggestion_id} not found")
    return row[0], row[1]


async def _verdict(request: Request, suggestion_id: UUID, accepted: bool) -> MergeResult:
    principal = await require(request, SUPERVISE)
    one, other = await _pair(request, suggestion_id)
    done = await asyncio.to_thread(
        merging.resolve_suggestion, svc(request).store, one, other, accepted, principal.name, now()
    )
    return _result(done, "rejected" if not accepted else None, suggestion_id)


def _result(done: merging.MergeDone, status: str | None, suggestion_id: UUID | None = None) -> MergeResult:
    return MergeResult(
        status=status or ("merged" if done.absorbed_id else "unchanged"),
        position=done.position,
        survivor_id=str(done.survivor_id) if done.survivor_id else None,
        absorbed_id=str(done.absorbed_id) if done.absorbed_id else None,
        suggestion_id=str(suggestion_id) if suggestion_id else None,
    )


@post(
    "/api/v1/merge-suggestions/{suggestion_id:uuid}/accept",
    status_code=HTTP_200_OK,
    summary="Accept a suggested merge: the two customers become one",
)
async def accept_merge_suggestion(request: Request, suggestion_id: FromPath[UUID]) -> MergeResult:
    return await _verdict(request, suggestion_id, True)


@post(
    "/api/v1/merge-suggestions/{suggestion_id:uuid}/reject",
    status_code=HTTP_200_OK,
    summary="Reject a suggested merge: the customers stay apart",
)
async def reject_merge_suggestion(request: Request, suggestion_id: FromPath[UUID]) -> MergeResult:
    return await _verdict(request, suggestion_id, False)


@post(
    "/api/v1/customers/{customer_id:uuid}/merge",
    status_code=HTTP_200_OK,
    summary="Merge another customer into this one, by hand",
)
async def merge_customers(request: Request, customer_id: FromPath[UUID], data: JSONBody[MergeBody]) -> MergeResult:
    principal = await require(request, SUPERVISE)
    done = await asyncio.to_thread(
        merging.merge_by_hand, svc(request).store, customer_id, data.other_id, principal.name, now()
    )
    return _result(done, None)
