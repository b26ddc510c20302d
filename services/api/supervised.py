"""What the supervisors' configuration seams (campaigns, automations) share: a command on one
aggregate by a supervisor (signed in, checked, timed, retried on a concurrent write) and the rows of
their list read models. One place, so the two modules keep only what differs: their shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from litestar import Request
from psycopg.rows import dict_row

from services.api.auth import SUPERVISE, Principal
from services.api.context import now, require, svc
from services.core.commands import Done, run_command
from services.domain.aggregate import Aggregate

A = TypeVar("A", bound=Aggregate)


async def supervisor(request: Request) -> tuple[Principal, datetime]:
    """Who asks (a supervisor or admin, else 401/403) and the command's time."""
    principal = await require(request, SUPERVISE)
    return principal, now(request)


async def supervised_command(
    request: Request,
    cls: type[A],
    stream_id: UUID,
    command: Callable[[A, str, datetime], None],
    *,
    principal: Principal | None = None,
    first: str | None = None,
    create: bool = False,
) -> Done[A]:
    """Runs `command(aggregate, by, at)` on the aggregate as a supervisor (a thread: the event store
    is synchronous); a missing aggregate is 404, a refused command 409 (the API's error handlers)."""
    if principal is None:
        principal, at = await supervisor(request)
    else:
        at = now(request)
    by = principal.name
    return await asyncio.to_thread(
        run_command, svc(request).store, cls, stream_id, lambda a: command(a, by, at), first=first, create=create
    )


async def rows(request: Request, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """A read model's rows, as dicts."""
    async with svc(request).pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, params)
        return await cur.fetchall()
