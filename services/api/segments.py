"""Agent API, segments: saved filters over the customers (`{"all" | "any": [{"field", "op", "value"}]}`,
services/domain/filters.py), defined by supervisors and admins as events (`segment.Defined`), and
their members, found when asked (services/segments/members.py): a page at a time by a stable cursor,
or all of them as CSV, streamed.

A filter that does not parse is a 400 `{"error": "invalid_filter", "detail": "filter.all[2].op: ..."}`
naming the path of what is wrong; nothing is recorded then.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from litestar import MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Stream
from litestar.status_codes import HTTP_201_CREATED
from psycopg.rows import dict_row

from events.sanitize import sanitize
from services.api.auth import READ, SUPERVISE
from services.api.context import now, page_limit, require, svc
from services.api.errors import error_body
from services.core.commands import NotFound, run_command
from services.domain.config import Segment
from services.domain.filters import SEGMENT_FIELDS, FilterError, Group, parse
from services.segments import members

CSV_PAGE = 1000
# A segment's query runs over every customer; a filter that would run longer is stopped (a 400).
STATEMENT_TIMEOUT = "15s"
CSV_COLUMNS = ("id", "name", "channels", "first_seen", "last_seen", "interaction_count", "open_cases")


class SegmentBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    filter: Any  # {"all" | "any": [...]}: checked by the filter parser, which names the path of an error


class SegmentView(msgspec.Struct):
    id: str
    name: str
    filter: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class SegmentSaved(msgspec.Struct):
    id: str
    name: str
    filter: dict[str, Any]
    position: int


class SegmentList(msgspec.Struct):
    items: list[SegmentView]


class Member(msgspec.Struct):
    id: str
    name: str | None
    channels: list[str]
    first_seen: datetime
    last_seen: datetime
    interaction_count: int
    open_cases: int


class MemberPage(msgspec.Struct):
    items: list[Member]
    next_cursor: str | None


def invalid_filter(request: Request, exc: FilterError) -> Response:
    return Response(error_body("invalid_filter", str(exc)), status_code=400, media_type=MediaType.JSON)


_FILTER_ERRORS = {FilterError: invalid_filter}


@post(
    "/api/v1/segments",
    status_code=HTTP_201_CREATED,
    summary="Define a segment (a saved filter over the customers)",
    exception_handlers=_FILTER_ERRORS,
)
async def define_segment(request: Request, data: JSONBody[SegmentBody]) -> SegmentSaved:
    principal = await require(request, SUPERVISE)
    data = sanitize(data)
    name = data.name.strip()
    if not name or len(name) > Segment.MAX_NAME:
        raise HTTPException(status_code=400, detail=f"name: 1 to {Segment.MAX_NAME} characters")
    tree = parse(data.filter, SEGMENT_FIELDS)
    services = svc(request)
    async with services.pool.connection() as conn:
        await members.check(conn, tree, now(request))
    at = now(request)
    done = await asyncio.to_thread(
        run_command,
        services.store,
        Segment,
        Segment.stream_id(name),
        lambda s: s.define(name, data.filter, principal.name, at),
        create=True,
    )
    return SegmentSaved(id=str(done.aggregate.id), name=name, filter=data.filter, position=done.position)


@get("/api/v1/segments", summary="Segments, by name")
async def list_segments(request: Request) -> SegmentList:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT * FROM proj_segments ORDER BY lower(name), id")
        return SegmentList(items=[_view(r) for r in await cur.fetchall()])


@get("/api/v1/segments/{segment_id:uuid}", summary="A segment")
async def get_segment(request: Request, segment_id: FromPath[UUID]) -> SegmentView:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        return _view(await _segment_row(conn, segment_id))


@get(
    "/api/v1/segments/{segment_id:uuid}/members",
    summary="A page of a segment's members, by id (next_cursor: the following page)",
    exception_handlers=_FILTER_ERRORS,
)
async def segment_members(
    request: Request, segment_id: FromPath[UUID], cursor: FromQuery[str | None] = None, limit: FromQuery[int] = 100
) -> MemberPage:
    await require(request, READ)
    limit = page_limit(limit)
    after = _cursor(cursor)
    services = svc(request)
    async with services.pool.connection() as conn:
        tree = _tree(await _segment_row(conn, segment_id))
        rows = await _members(conn, tree, after, limit, now(request), _policy(request))
    items = [Member(**{**r, "id": str(r["id"]), "channels": list(r["channels"])}) for r in rows]
    return MemberPage(items=items, next_cursor=items[-1].id if len(items) == limit else None)


@get(
    "/api/v1/segments/{segment_id:uuid}/members.csv",
    summary="All of a segment's members as CSV (streamed)",
    media_type="text/csv",
    exception_handlers=_FILTER_ERRORS,
    responses={200: ResponseSpec(data_container=str, media_type="text/csv", description="id,name,channels,...")},
)
async def segment_members_csv(request: Request, segment_id: FromPath[UUID]) -> Stream:
    await require(request, READ)
    services = svc(request)
    async with services.pool.connection() as conn:
        row = await _segment_row(conn, segment_id)
        tree = _tree(row)
        at, policy = now(request), _policy(request)
        first = await _members(conn, tree, None, CSV_PAGE, at, policy)  # a bad filter is a 400, not a cut stream

    async def lines() -> AsyncIterator[str]:
        yield _csv_line(CSV_COLUMNS)
        page = first
        while True:
            for r in page:
                yield _csv_line(
                    (
                        str(r["id"]),
                        r["name"] or "",
                        " ".join(r["channels"]),
                        r["first_seen"].isoformat(),
                        r["last_seen"].isoformat(),
                        str(r["interaction_count"]),
                        str(r["open_cases"]),
                    )
                )
            if len(page) < CSV_PAGE:
                return
            async with services.pool.connection() as conn:
                page = await _members(conn, tree, page[-1]["id"], CSV_PAGE, at, policy)

    filename = "".join(ch for ch in row["name"] if ch.isalnum() or ch in "-_")[:60] or "segment"
    return Stream(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}-members.csv"'},
    )


# ---------------------------------------------------------------------------------------------------


async def _segment_row(conn, segment_id: UUID) -> dict:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM proj_segments WHERE id = %s", (segment_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"segment {segment_id} not found")
    return row


def _view(row: dict) -> SegmentView:
    return SegmentView(
        id=str(row["id"]),
        name=row["name"],
        filter=row["filter"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


def _tree(row: dict) -> Group:
    return parse(row["filter"], SEGMENT_FIELDS)


def _cursor(cursor: str | None) -> UUID | None:
    if not cursor:
        return None
    try:
        return UUID(cursor)
    except ValueError:
        raise HTTPException(status_code=400, detail="invalid cursor") from None


def _policy(request: Request) -> members.ConsentPolicy:
    """The consent policy (`SWITCHBOARD_MARKETING_CONSENT`): `implied` unless set to `explicit`."""
    return "explicit" if getattr(svc(request).settings, "marketing_consent", "implied") == "explicit" else "implied"


async def _members(conn, tree: Group, after: UUID | None, limit: int, at: datetime, policy) -> list[dict]:
    query, params = members.members_query(tree, after=after, limit=limit, now=at, consent_policy=policy)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            return await cur.fetchall()
    except psycopg.errors.QueryCanceled:
        raise HTTPException(status_code=400, detail="the segment's filter ran too long; narrow it") from None
    except psycopg.errors.InvalidRegularExpression as exc:
        raise FilterError("filter", f"a pattern PostgreSQL cannot run: {exc.diag.message_primary}") from None


def _csv_line(cells: tuple[str, ...]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([_neutral(c) for c in cells])
    return out.getvalue()


def _neutral(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula: one starting with = + - @ (or a tab or CR,
    which some spreadsheets skip before looking) gets a leading apostrophe (OWASP's advice)."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


HANDLERS = [define_segment, list_segments, get_segment, segment_members, segment_members_csv]
