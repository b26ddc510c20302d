"""Agent API, canned responses: saved replies with placeholders (`services.domain.templates`), listed
for every signed-in user, created and deleted by supervisors and admins, and used in a reply
(`POST /api/v1/cases/{id}/reply {"canned": ID}`), filled for that case when it is sent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from uuid import UUID

import msgspec
from litestar import Request, delete, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from psycopg.rows import dict_row

from events.sanitize import sanitize
from services.api import queries
from services.api.auth import READ, SUPERVISE, Principal
from services.api.context import now, require, svc
from services.core.commands import NotFound, append_new, load, run_command
from services.domain.agent import Agent
from services.domain.config import CannedResponse
from services.domain.templates import fill

MAX_SHORTCUT = 64
MAX_TEXT = 64 * 1024


class CannedBody(msgspec.Struct, forbid_unknown_fields=True):
    shortcut: str
    text: str


class Canned(msgspec.Struct):
    id: str
    shortcut: str
    text: str
    created_by: str
    created_at: datetime


class CannedCreated(msgspec.Struct):
    id: str
    shortcut: str
    text: str
    position: int


class CannedList(msgspec.Struct):
    items: list[Canned]


class CannedDeleted(msgspec.Struct):
    id: str
    deleted: bool
    position: int


@get("/api/v1/canned-responses", summary="Canned responses, by shortcut")
async def list_canned(request: Request) -> CannedList:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT id, shortcut, text, created_by, created_at FROM proj_canned_responses ORDER BY shortcut, created_at"
        )
        rows = await cur.fetchall()
    return CannedList(items=[Canned(**{**r, "id": str(r["id"])}) for r in rows])


@post("/api/v1/canned-responses", status_code=HTTP_201_CREATED, summary="A new canned response")
async def create_canned(request: Request, data: JSONBody[CannedBody]) -> CannedCreated:
    principal = await require(request, SUPERVISE)
    data = sanitize(data)
    shortcut, text = data.shortcut.strip(), data.text
    if not shortcut or not text.strip():
        raise HTTPException(status_code=400, detail="a canned response needs a shortcut and a text")
    if len(shortcut) > MAX_SHORTCUT or len(text) > MAX_TEXT:
        raise HTTPException(
            status_code=400, detail=f"shortcut at most {MAX_SHORTCUT}, text at most {MAX_TEXT} characters"
        )
    canned = CannedResponse.create(uuid.uuid4(), shortcut, text, principal.name, now())
    position = await asyncio.to_thread(append_new, svc(request).store, canned)
    return CannedCreated(id=str(canned.id), shortcut=canned.shortcut, text=canned.text, position=position)


@delete("/api/v1/canned-responses/{canned_id:uuid}", status_code=HTTP_200_OK, summary="Delete a canned response")
async def delete_canned(request: Request, canned_id: FromPath[UUID]) -> CannedDeleted:
    principal = await require(request, SUPERVISE)
    done = await asyncio.to_thread(
        run_command,
        svc(request).store,
        CannedResponse,
        canned_id,
        lambda c: c.delete(principal.name, now()),
        first="canned.Created",
    )
    return CannedDeleted(id=str(canned_id), deleted=True, position=done.position)


async def reply_text(
    request: Request, case_id: UUID, text: str | None, canned_id: UUID | None, principal: Principal
) -> str:
    """The text of a reply: as written, or the canned response filled for this case. Exactly one of
    the two (400 otherwise); an unknown or deleted canned response is a 400 naming it."""
    if (text is None) == (canned_id is None):
        raise HTTPException(status_code=400, detail='a reply takes exactly one of "text" and "canned"')
    if text is not None:
        return text
    assert canned_id is not None
    services = svc(request)
    try:
        canned = await asyncio.to_thread(load, services.store, CannedResponse, canned_id, "canned.Created")
    except NotFound:
        raise HTTPException(status_code=400, detail=f"no canned response {canned_id}") from None
    if canned.deleted:
        raise HTTPException(status_code=400, detail=f"canned response {canned_id} was deleted")
    customer_name = None
    async with services.pool.connection() as conn:
        cur = await conn.execute("SELECT customer_id FROM proj_cases WHERE id = %s", (case_id,))
        row = await cur.fetchone()
        if row is not None:
            profile = await queries.customer_profile(conn, row[0])
            customer_name = profile["name"] if profile else None
    # agent.name: the signed-in agent's name, from their record (an API token's name otherwise).
    agent_name = principal.name
    if principal.agent_id is not None:
        try:
            agent = await asyncio.to_thread(load, services.store, Agent, uuid.UUID(principal.agent_id), "agent.Created")
            agent_name = agent.name
        except NotFound:
            pass
    return fill(canned.text, {"customer.name": customer_name, "agent.name": agent_name, "case.id": str(case_id)})


HANDLERS = [list_canned, create_canned, delete_canned]
