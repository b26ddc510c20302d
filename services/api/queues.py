"""Agent API, queues and routing: configure a queue (`PUT /api/v1/queues/{name}`, supervisors and
admins), list the queues with their counts, and transfer a case to another queue.

A queue's strategy decides whether the router (services/routing) assigns its cases: `manual` (the
default of every queue nobody configured, a channel's queue included) leaves them to people;
`round_robin` and `least_loaded` route them to online agents of the queue's team with the required
skills and room under their capacity.

A transfer into a routed queue routes the case again: it stays with its assignee if they are free
for the new queue (online, of its team, with its skills), else it goes to whoever the new queue's
strategy picks, or waits unassigned when nobody is free. A transfer into a manual queue keeps the
assignee.
"""

from __future__ import annotations

import asyncio
import re
from uuid import UUID

import msgspec
from litestar import Request, get, post, put
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK
from psycopg.rows import dict_row

from events.agent import team_stream_id
from events.config import Strategy
from events.sanitize import sanitize
from services.api.auth import READ, SUPERVISE, WRITE
from services.api.cases import _case_command
from services.api.context import now, require, svc
from services.api.views import CaseChanged
from services.core.commands import run_command
from services.domain.config import Queue

# A queue, team, SLA policy or skill name: words, spaces, dots, colons and dashes, 1 to 100 long.
_NAME = re.compile(r"[^\W_][\w .:-]{0,99}")
_MAX_SKILLS = 50


class QueueBody(msgspec.Struct, forbid_unknown_fields=True):
    strategy: Strategy
    team: str | None = None
    required_skills: list[str] = []
    sla_policy: str | None = None
    csat: bool = False


class QueueView(msgspec.Struct):
    name: str
    strategy: Strategy
    team: str | None
    required_skills: list[str]
    sla_policy: str | None
    csat: bool
    open: int = 0
    unassigned: int = 0
    breached: int = 0
    position: int | None = None  # a PUT's: the log position a reader must reach (Sb-Min-Position)


class QueueList(msgspec.Struct):
    items: list[QueueView]


class TransferBody(msgspec.Struct, forbid_unknown_fields=True):
    queue: str


def _name(value: str, what: str) -> str:
    value = value.strip()
    if not _NAME.fullmatch(value):
        raise HTTPException(
            status_code=400,
            detail=f"{what} must be 1 to 100 letters, digits, spaces, dots, colons or dashes, starting with a letter or digit",
        )
    return value


@put("/api/v1/queues/{name:str}", summary="Configure a queue (its routing, SLA policy and CSAT survey)")
async def put_queue(request: Request, name: FromPath[str], data: JSONBody[QueueBody]) -> QueueView:
    principal = await require(request, SUPERVISE)
    data = sanitize(data)
    name = _name(sanitize(name), "a queue's name")
    team = _name(data.team, "team") if data.team is not None else None
    sla_policy = _name(data.sla_policy, "sla_policy") if data.sla_policy is not None else None
    if len(data.required_skills) > _MAX_SKILLS:
        raise HTTPException(status_code=400, detail=f"at most {_MAX_SKILLS} required skills")
    skills = sorted({_name(s, "a skill") for s in data.required_skills})
    store = svc(request).store
    if team is not None and not await asyncio.to_thread(store.load, team_stream_id(team)):
        raise HTTPException(status_code=400, detail=f"no team named {team!r}")
    fields = {
        "strategy": data.strategy,
        "team": team,
        "required_skills": skills,
        "sla_policy": sla_policy,
        "csat": data.csat,
    }
    done = await asyncio.to_thread(
        run_command,
        store,
        Queue,
        Queue.stream_id(name),
        lambda q: q.configure(name, principal.name, now(), **fields),
        create=True,
    )
    async with svc(request).pool.connection() as conn:
        counts = await _counts(conn, name)
    return QueueView(name=name, **fields, **counts, position=done.position)


@get("/api/v1/queues", summary="Queues with their open, unassigned and SLA-breached case counts")
async def list_queues(request: Request) -> QueueList:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        # Every configured queue, and every queue a case is in (never configured: manual).
        await cur.execute(
            "WITH counts AS ("
            "  SELECT queue, count(*) FILTER (WHERE status <> 'resolved') AS open, "
            "  count(*) FILTER (WHERE status <> 'resolved' AND assignee IS NULL) AS unassigned, "
            "  count(*) FILTER (WHERE status <> 'resolved' AND sla_breached) AS breached "
            "  FROM proj_cases GROUP BY queue) "
            "SELECT COALESCE(q.name, c.queue) AS name, COALESCE(q.strategy, 'manual') AS strategy, q.team, "
            "COALESCE(q.required_skills, '{}') AS required_skills, q.sla_policy, COALESCE(q.csat, false) AS csat, "
            "COALESCE(c.open, 0) AS open, COALESCE(c.unassigned, 0) AS unassigned, "
            "COALESCE(c.breached, 0) AS breached "
            "FROM proj_queues q FULL JOIN counts c ON c.queue = q.name ORDER BY 1"
        )
        rows = await cur.fetchall()
    return QueueList(items=[QueueView(**{**r, "required_skills": list(r["required_skills"])}) for r in rows])


async def _counts(conn, queue: str) -> dict[str, int]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT count(*) AS open, count(*) FILTER (WHERE assignee IS NULL) AS unassigned, "
        "count(*) FILTER (WHERE sla_breached) AS breached FROM proj_cases WHERE queue = %s AND status <> 'resolved'",
        (queue,),
    )
    row = await cur.fetchone()
    return {k: int(v) for k, v in row.items()}


@post("/api/v1/cases/{case_id:uuid}/transfer", status_code=HTTP_200_OK, summary="Move a case to another queue")
async def transfer(request: Request, case_id: FromPath[UUID], data: JSONBody[TransferBody]) -> CaseChanged:
    principal = await require(request, WRITE)
    data = sanitize(data)
    queue = _name(data.queue, "queue")
    return await _case_command(request, case_id, lambda c: c.transfer(queue, principal.name, now()))
