"""Who is asking: the role and, for a signed-in agent, who they are. The console decides what to
show from it (an API token has a role but no agent: no presence, no "assign to me")."""

from __future__ import annotations

import msgspec
from litestar import Request, get

from services.api.auth import READ
from services.api.context import require


class WhoAmI(msgspec.Struct):
    role: str
    name: str
    agent_id: str | None


@get("/api/v1/auth/me", summary="The role and agent of the bearer token")
async def who_am_i(request: Request) -> WhoAmI:
    principal = await require(request, READ)
    return WhoAmI(role=principal.role, name=principal.name, agent_id=principal.agent_id)
