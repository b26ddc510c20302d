"""Agent API, cases: the queues and one case (reads from the read models), and the commands on a
case (reply, assign, resolve, reopen, notes, tags, priority, snooze), each answering the case after
the change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK

from events.case import CASE_STATUSES, Priority
from events.sanitize import sanitize
from services.api import canned, queries
from services.api.agents import assignee_of
from services.api.auth import READ, SUPERVISE, WRITE
from services.api.context import now, page_limit, require, svc
from services.api.views import CaseChanged, CaseList, CaseView, as_view
from services.core.commands import NotFound, case_state, run_case


@get("/api/v1/cases", summary="Case queues")
async def get_cases(
    request: Request,
    queue: FromQuery[str | None] = None,
    status: Annotated[
        str | None,
        Parameter(description="one status, or several separated by commas (open,pending)"),
    ] = None,
    assignee: Annotated[
        str | None, Parameter(description="an agent id, `me` (the signed-in agent) or `none` (unassigned)")
    ] = None,
    limit: FromQuery[int] = 50,
    cursor: FromQuery[str | None] = None,
) -> CaseList:
    principal = await require(request, READ)
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    if statuses is not None and (not statuses or any(s not in CASE_STATUSES for s in statuses)):
        raise HTTPException(status_code=400, detail=f"status must be one or more of {', '.join(CASE_STATUSES)}")
    if assignee == "me":
        agent_id = getattr(principal, "agent_id", None)
        if agent_id is None:
            raise HTTPException(status_code=400, detail="assignee=me needs an agent's sign-in, not an API token")
        assignee = str(agent_id)
    async with svc(request).pool.connection() as conn:
        return as_view(await queries.list_cases(conn, queue, statuses, assignee, page_limit(limit), cursor), CaseList)


@get("/api/v1/cases/{case_id:uuid}", summary="One case with its messages")
async def get_case(request: Request, case_id: FromPath[UUID]) -> CaseView:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        view = await queries.case_view(conn, case_id)
    if view is None:
        raise NotFound(f"case {case_id} not found")
    return as_view(view, CaseView)


# Command bodies are typed parameters: Litestar decodes and validates them (400 otherwise) before
# the handler runs, and the OpenAPI document describes them. Every string in them then goes through
# the one sanitiser (`events.sanitize`), as every text entering Switchboard does.
class ReplyBody(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one: the reply's `text`, or the id of a `canned` response filled for this case."""

    text: str | None = None
    canned: UUID | None = None


class AssignBody(msgspec.Struct):
    assignee: str | None = None


class NoteBody(msgspec.Struct):
    text: str


class TagsBody(msgspec.Struct):
    tags: list[str]


class PriorityBody(msgspec.Struct):
    priority: Priority


class SnoozeBody(msgspec.Struct):
    until: Annotated[datetime, msgspec.Meta(tz=True)]  # a wall-clock time without a zone is ambiguous


async def _case_command(request: Request, case_id: UUID, command: Callable, **extra: str) -> CaseChanged:
    services = svc(request)
    done = await asyncio.to_thread(run_case, services.store, case_id, command)
    state = case_state(done.aggregate)
    state["position"] = done.position
    async with services.pool.connection() as conn:
        view = await queries.case_view(conn, case_id)
    state["messages"] = view["messages"] if view else []
    state["sla_due_at"] = view["sla_due_at"] if view else None
    return as_view({**state, **extra}, CaseChanged)


@post("/api/v1/cases/{case_id:uuid}/reply", status_code=HTTP_200_OK, summary="Reply through the case's channel")
async def reply(request: Request, case_id: FromPath[UUID], data: JSONBody[ReplyBody]) -> CaseChanged:
    principal = await require(request, WRITE)
    data = sanitize(data)
    text = await canned.reply_text(request, case_id, data.text, data.canned, principal)
    if len(text) > 64 * 1024:
        raise HTTPException(status_code=413, detail="reply longer than 64 KiB")
    reply_id = _reply_id(case_id, request.headers.get("idempotency-key"))
    return await _case_command(
        request,
        case_id,
        lambda c: c.request_reply(reply_id, text, principal.name, now(request)),
        reply_id=str(reply_id),
    )


def _reply_id(case_id: UUID, idempotency_key: str | None) -> UUID:
    if idempotency_key:
        return uuid.uuid5(case_id, "reply:" + idempotency_key)
    return uuid.uuid4()


@post("/api/v1/cases/{case_id:uuid}/assign", status_code=HTTP_200_OK)
async def assign(request: Request, case_id: FromPath[UUID], data: JSONBody[AssignBody]) -> CaseChanged:
    principal = await require(request, WRITE)
    data = sanitize(data)
    assignee = await assignee_of(request, principal, data.assignee)  # an enabled agent's id, "me" or None
    return await _case_command(request, case_id, lambda c: c.assign(assignee, principal.name, now(request)))


@post("/api/v1/cases/{case_id:uuid}/resolve", status_code=HTTP_200_OK)
async def resolve(request: Request, case_id: FromPath[UUID]) -> CaseChanged:
    principal = await require(request, WRITE)
    return await _case_command(request, case_id, lambda c: c.resolve(principal.name, now(request)))


@post("/api/v1/cases/{case_id:uuid}/reopen", status_code=HTTP_200_OK)
async def reopen(request: Request, case_id: FromPath[UUID]) -> CaseChanged:
    principal = await require(request, WRITE)
    return await _case_command(request, case_id, lambda c: c.reopen(principal.name, now(request)))


@post("/api/v1/cases/{case_id:uuid}/notes", status_code=HTTP_200_OK)
async def add_note(request: Request, case_id: FromPath[UUID], data: JSONBody[NoteBody]) -> CaseChanged:
    principal = await require(request, WRITE)
    data = sanitize(data)
    return await _case_command(
        request, case_id, lambda c: c.add_note(uuid.uuid4(), data.text, principal.name, now(request))
    )


@post("/api/v1/cases/{case_id:uuid}/tags", status_code=HTTP_200_OK)
async def add_tags(request: Request, case_id: FromPath[UUID], data: JSONBody[TagsBody]) -> CaseChanged:
    principal = await require(request, WRITE)
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.tag(data.tags, principal.name, now(request)))


@post("/api/v1/cases/{case_id:uuid}/priority", status_code=HTTP_200_OK)
async def prioritize(request: Request, case_id: FromPath[UUID], data: JSONBody[PriorityBody]) -> CaseChanged:
    principal = await require(request, SUPERVISE + ("agent",))
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.prioritize(data.priority, principal.name, now(request)))


@post("/api/v1/cases/{case_id:uuid}/snooze", status_code=HTTP_200_OK)
async def snooze(request: Request, case_id: FromPath[UUID], data: JSONBody[SnoozeBody]) -> CaseChanged:
    principal = await require(request, WRITE)
    data = sanitize(data)
    return await _case_command(request, case_id, lambda c: c.snooze(data.until, principal.name, now(request)))
