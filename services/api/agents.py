"""Agent API, agents and teams: sign-in and sign-out, the agents (list, create, change), presence,
and teams. Commands answer the agent after the change with the log `position` a reader must reach.

Sign-in answers a wrong pair with one 401, whether the email exists or not: an unknown email is
verified against a dummy argon2 hash, so both take the same work. Failed sign-ins are limited per
email and per client address (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Request, get, patch, post, put
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from channels.proxies import client_ip, trusted_networks
from events.agent import Presence, Role, agent_stream_id
from events.sanitize import sanitize
from services.agents import access, commands, passwords
from services.api import queries
from services.api.auth import ADMIN, MANAGE, READ, Principal, token_hash
from services.api.context import Services, now, page_limit, require, svc
from services.domain.agent import Agent

_Name = Annotated[str, msgspec.Meta(max_length=200)]
_Email = Annotated[str, msgspec.Meta(max_length=320)]
_Password = Annotated[str, msgspec.Meta(max_length=passwords.MAX_PASSWORD)]
_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
_Labels = Annotated[list[_Label], msgspec.Meta(max_length=100)]
_Capacity = Annotated[int, msgspec.Meta(ge=0, le=10_000)]


# -- bodies and answers ------------------------------------------------------------------------------


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    email: _Email
    password: _Password


class SignedInAgent(msgspec.Struct):
    id: str
    email: str
    name: str
    role: str


class LoginAnswer(msgspec.Struct):
    token: str
    agent: SignedInAgent


class LogoutAnswer(msgspec.Struct):
    ended: bool


class AgentView(msgspec.Struct):
    id: str
    email: str
    name: str
    role: str
    teams: list[str]
    skills: list[str]
    capacity: int
    status: str
    open_assigned: int
    disabled: bool


class AgentAnswer(AgentView, omit_defaults=True):
    """An agent after a command: `position` to read your write; `password` only when one was
    generated for a new agent (shown this once)."""

    position: int = 0
    password: str | None = None


class AgentList(msgspec.Struct):
    items: list[AgentView]
    next_cursor: str | None


class NewAgentBody(msgspec.Struct, forbid_unknown_fields=True):
    email: _Email
    name: _Name
    role: Role
    teams: _Labels = []
    skills: _Labels = []
    capacity: _Capacity = 5
    password: _Password | None = None


class AgentPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Fields to change (left out: unchanged). Supervisors may change teams, skills and capacity;
    name, role, password and disabled are the admin's."""

    name: _Name | None = None
    role: Role | None = None
    teams: _Labels | None = None
    skills: _Labels | None = None
    capacity: _Capacity | None = None
    password: _Password | None = None
    disabled: bool | None = None


class StatusBody(msgspec.Struct, forbid_unknown_fields=True):
    status: Presence


class TeamBody(msgspec.Struct, forbid_unknown_fields=True):
    name: _Label


class TeamView(msgspec.Struct):
    id: str
    name: str


class TeamAnswer(TeamView):
    position: int


class TeamList(msgspec.Struct):
    items: list[TeamView]
    next_cursor: str | None


# -- helpers -----------------------------------------------------------------------------------------


def _labels(values: list[str] | None) -> list[str] | None:
    """Team and skill names, cleaned: trimmed, empty ones refused."""
    if values is None:
        return None
    cleaned = [v.strip() for v in sanitize(values)]
    if any(not v for v in cleaned):
        raise HTTPException(status_code=400, detail="team and skill names cannot be empty")
    return cleaned


def _password(text: str) -> str:
    try:
        return passwords.check_password(text)
    except passwords.PasswordRejected as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


async def _open_assigned(services: Services, agent_id: UUID) -> int:
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM proj_cases WHERE assignee = %s AND status <> 'resolved'", (str(agent_id),)
        )
        row = await cur.fetchone()
    return int(row[0])


async def _answer(services: Services, agent: Agent, position: int, password: str | None = None) -> AgentAnswer:
    return AgentAnswer(
        id=str(agent.id),
        email=agent.email,
        name=agent.name,
        role=agent.role,
        teams=list(agent.teams),
        skills=list(agent.skills),
        capacity=agent.capacity,
        status=agent.status,
        open_assigned=await _open_assigned(services, agent.id),
        disabled=agent.disabled,
        position=position,
        password=password,
    )


def _own_agent(principal: Principal) -> UUID:
    if principal.agent_id is None:
        raise HTTPException(status_code=400, detail="this token belongs to no agent: sign in as one")
    return UUID(principal.agent_id)


async def assignee_of(request: Request, principal: Principal, assignee: str | None) -> str | None:
    """What `POST /cases/{id}/assign` stores: an enabled agent's id ("me": the signed-in agent's),
    or None to unassign. Anything else is the client's mistake (400)."""
    if assignee is None:
        return None
    if assignee.strip().lower() == "me":
        return str(_own_agent(principal))
    try:
        agent_id = UUID(assignee.strip())
    except ValueError:
        raise HTTPException(status_code=400, detail='assignee must be an agent id, "me" or null') from None
    async with svc(request).pool.connection() as conn:
        if not await access.enabled_agent(conn, agent_id):
            raise HTTPException(status_code=400, detail=f"no enabled agent with id {agent_id}")
    return str(agent_id)


# -- sign-in -----------------------------------------------------------------------------------------

_WRONG_PAIR = "wrong email or password"


@post("/api/v1/auth/login", status_code=HTTP_200_OK, summary="Sign in with email and password")
async def login(request: Request, data: JSONBody[LoginBody]) -> LoginAnswer:
    services = svc(request)
    settings = services.settings
    email = data.email.strip().lower()
    secret = settings.master_key_bytes
    email_key = access.failure_key(secret, "email", email)
    ip = client_ip(request.scope, request.headers, trusted_networks(settings.trusted_proxies)) or "unknown"
    ip_key = access.failure_key(secret, "ip", ip)
    window = settings.login_failure_window_seconds
    async with services.pool.connection() as conn:
        wait = await access.retry_after(
            conn,
            [(email_key, settings.login_max_failures_per_email), (ip_key, settings.login_max_failures_per_ip)],
            window,
        )
        if wait is not None:
            raise HTTPException(
                status_code=429, detail="too many failed sign-ins; try again later", headers={"Retry-After": str(wait)}
            )
        found = await access.credentials(conn, agent_stream_id(email))
    # Verified whether or not the email is known (a dummy hash when not): the same work, the same answer.
    matched = await asyncio.to_thread(passwords.verify_password, found.hash if found else None, data.password)
    if not matched or found is None or found.disabled:
        async with services.pool.connection() as conn:
            await access.record_failure(conn, [email_key, ip_key], window)
        raise HTTPException(status_code=401, detail=_WRONG_PAIR, headers={"WWW-Authenticate": "Bearer"})
    agent = await asyncio.to_thread(commands.load_agent, services.store, found.agent_id)
    token = access.new_session_token()
    new_hash = None
    if passwords.needs_rehash(found.hash):
        new_hash = await asyncio.to_thread(passwords.rehash_password, data.password)
    async with services.pool.connection() as conn:
        await access.clear_failures(conn, email_key)
        await access.start_session(
            conn,
            found.agent_id,
            token_hash(token),
            settings.agent_session_idle_seconds,
            settings.agent_session_max_seconds,
        )
        if new_hash is not None:
            await access.rehash(conn, found.agent_id, found.hash, new_hash)
    return LoginAnswer(token=token, agent=SignedInAgent(str(agent.id), agent.email, agent.name, found.role))


@post("/api/v1/auth/logout", status_code=HTTP_200_OK, summary="End this sign-in session")
async def logout(request: Request) -> LogoutAnswer:
    principal = await require(request, READ)
    if principal.agent_id is None:
        raise HTTPException(
            status_code=400, detail="an API token is no sign-in session: revoke it with `switchboard token revoke`"
        )
    async with svc(request).pool.connection() as conn:
        ended = await access.end_session(conn, principal.token_hash)
    svc(request).auth_changed()
    return LogoutAnswer(ended=ended)


# -- agents ------------------------------------------------------------------------------------------


@get("/api/v1/agents", summary="Agents, newest first")
async def list_agents(request: Request, limit: FromQuery[int] = 100, cursor: FromQuery[str | None] = None) -> AgentList:
    await require(request, READ)
    limit = page_limit(limit)
    where, params = "", []
    if cursor:
        c = queries.decode_cursor(cursor)
        where, params = "WHERE (a.created_at, a.id) < (%s, %s)", [c.at, c.id]
    async with svc(request).pool.connection() as conn:
        cur = await conn.execute(
            "SELECT a.id, a.email, a.name, a.role, a.teams, a.skills, a.capacity, a.status, "
            "(SELECT count(*) FROM proj_cases c WHERE c.assignee = a.id::text AND c.status <> 'resolved'), "
            f"a.disabled, a.created_at FROM proj_agents a {where} ORDER BY a.created_at DESC, a.id DESC LIMIT %s",
            [*params, limit + 1],
        )
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [AgentView(str(r[0]), r[1], r[2], r[3], list(r[4]), list(r[5]), r[6], r[7], int(r[8]), r[9]) for r in rows]
    next_cursor = queries.encode_cursor(rows[-1][10], rows[-1][0]) if more else None
    return AgentList(items=items, next_cursor=next_cursor)


@post("/api/v1/agents", status_code=HTTP_201_CREATED, summary="Create an agent (admin)")
async def create_agent(request: Request, data: JSONBody[NewAgentBody]) -> AgentAnswer:
    await require(request, ADMIN)
    services = svc(request)
    generated = None
    if data.password is None:
        password = generated = passwords.generate_password()
    else:
        password = _password(data.password)
    email = sanitize(data.email).strip()
    if "@" not in email:
        raise HTTPException(status_code=400, detail="an agent's email needs an @")
    new = commands.NewAgent(
        email=email,
        name=sanitize(data.name).strip(),
        role=data.role,
        teams=_labels(data.teams) or [],
        skills=_labels(data.skills) or [],
        capacity=data.capacity,
    )
    try:
        done = await asyncio.to_thread(commands.create_agent, services.store, new, password, now())
    except commands.AgentExists as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return await _answer(services, done.aggregate, done.position, generated)


@get("/api/v1/agents/me", summary="The signed-in agent")
async def get_me(request: Request) -> AgentView:
    principal = await require(request, READ)
    services = svc(request)
    agent = await asyncio.to_thread(commands.load_agent, services.store, _own_agent(principal))
    answer = await _answer(services, agent, 0)
    return AgentView(**{f: getattr(answer, f) for f in AgentView.__struct_fields__})


@put("/api/v1/agents/me/status", status_code=HTTP_200_OK, summary="Presence of the signed-in agent")
async def set_my_status(request: Request, data: JSONBody[StatusBody]) -> AgentAnswer:
    principal = await require(request, READ)
    agent_id = _own_agent(principal)
    services = svc(request)
    done = await asyncio.to_thread(commands.set_status, services.store, agent_id, data.status, now())
    return await _answer(services, done.aggregate, done.position)


@patch("/api/v1/agents/{agent_id:uuid}", summary="Change an agent")
async def change_agent(request: Request, agent_id: FromPath[UUID], data: JSONBody[AgentPatch]) -> AgentAnswer:
    principal = await require(request, MANAGE)
    admin_only = [f for f in ("name", "role", "password", "disabled") if getattr(data, f) is not None]
    if admin_only and principal.role not in ADMIN:
        raise PermissionDeniedException(f"only an admin may change {', '.join(admin_only)}")
    services = svc(request)
    name = None
    if data.name is not None:
        name = sanitize(data.name).strip()
        if not name:
            raise HTTPException(status_code=400, detail="a name cannot be empty")
    password = _password(data.password) if data.password is not None else None
    done = await asyncio.to_thread(
        commands.change_agent,
        services.store,
        agent_id,
        principal.name,
        now(),
        password=password,
        disabled=data.disabled,
        name=name,
        role=data.role,
        teams=_labels(data.teams),
        skills=_labels(data.skills),
        capacity=data.capacity,
    )
    if admin_only:  # a new password, role or disabling ends or changes the agent's sessions
        services.auth_changed()
    return await _answer(services, done.aggregate, done.position)


# -- teams -------------------------------------------------------------------------------------------


@get("/api/v1/teams", summary="Teams, newest first")
async def list_teams(request: Request, limit: FromQuery[int] = 100, cursor: FromQuery[str | None] = None) -> TeamList:
    await require(request, READ)
    limit = page_limit(limit)
    where, params = "", []
    if cursor:
        c = queries.decode_cursor(cursor)
        where, params = "WHERE (created_at, id) < (%s, %s)", [c.at, c.id]
    async with svc(request).pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT id, name, created_at FROM proj_teams {where} ORDER BY created_at DESC, id DESC LIMIT %s",
            [*params, limit + 1],
        )
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = queries.encode_cursor(rows[-1][2], rows[-1][0]) if more else None
    return TeamList(items=[TeamView(str(r[0]), r[1]) for r in rows], next_cursor=next_cursor)


@post("/api/v1/teams", status_code=HTTP_201_CREATED, summary="Create a team (supervisor, admin)")
async def create_team(request: Request, data: JSONBody[TeamBody]) -> TeamAnswer:
    await require(request, MANAGE)
    name = sanitize(data.name).strip()
    if not name:
        raise HTTPException(status_code=400, detail="a team needs a name")
    try:
        done = await asyncio.to_thread(commands.create_team, svc(request).store, name, now())
    except commands.TeamExists as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return TeamAnswer(id=str(done.aggregate.id), name=done.aggregate.name, position=done.position)


AGENT_HANDLERS = [
    login,
    logout,
    list_agents,
    create_agent,
    get_me,
    set_my_status,
    change_agent,
    list_teams,
    create_team,
]
