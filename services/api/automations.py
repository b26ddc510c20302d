"""Agent API, automation rules: `POST /api/v1/automations` saves a rule (a new name creates it, the
same name saves its next version; `"enabled": false` disables it), `GET` lists and reads them, and
the webhook dead letters are listed and retried. Supervisors and admins only.

A rule is checked whole before anything is recorded: `on` a case or customer event type, `if` a
filter over the event, its case and customer (services.domain.filters: a bad one is 400
`invalid_filter` naming the path), `then` known actions (400 `invalid_rule` naming the path), and
every queue, team and canned response it names must exist (400).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from events.agent import team_stream_id
from events.sanitize import sanitize
from services.api.auth import SUPERVISE
from services.api.context import require, svc
from services.api.errors import error_body
from services.api.supervised import rows, supervised_command, supervisor
from services.automation.webhooks import dead_letters, retry_dead
from services.core.commands import NotFound, load
from services.domain.automation import Automation, Rule, RuleError, check_name, parse_rule
from services.domain.config import CannedResponse, Queue
from services.domain.filters import FilterError


class AutomationBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    on: str
    then: list[dict[str, Any]]
    # The filter over the event, its case and customer (`{"all" | "any": [...]}`); none: always.
    condition: dict[str, Any] | None = msgspec.field(default=None, name="if")
    enabled: bool = True


class AutomationView(msgspec.Struct):
    name: str
    on: str
    then: list[dict[str, Any]]
    enabled: bool
    version: int
    updated_by: str
    updated_at: datetime
    created_at: datetime
    fired: int = 0
    last_fired_at: datetime | None = None
    condition: dict[str, Any] | None = msgspec.field(default=None, name="if")


class AutomationSaved(msgspec.Struct):
    name: str
    on: str
    then: list[dict[str, Any]]
    enabled: bool
    version: int
    position: int
    condition: dict[str, Any] | None = msgspec.field(default=None, name="if")


class AutomationList(msgspec.Struct):
    items: list[AutomationView]


class DeadLetter(msgspec.Struct):
    delivery_id: str
    rule: str
    event_id: str
    url: str
    attempts: int
    last_error: str | None
    created_at: datetime
    dead_at: datetime | None


class DeadLetterList(msgspec.Struct):
    items: list[DeadLetter]


class RetryBody(msgspec.Struct, forbid_unknown_fields=True):
    # Delivery ids to send again; none: every dead letter.
    delivery_ids: list[UUID] | None = None


class Retried(msgspec.Struct):
    retried: int


def invalid_filter(request: Request, exc: FilterError) -> Response:
    return Response(error_body("invalid_filter", str(exc)), status_code=400, media_type=MediaType.JSON)


def invalid_rule(request: Request, exc: RuleError) -> Response:
    return Response(error_body("invalid_rule", str(exc)), status_code=400, media_type=MediaType.JSON)


_RULE_ERRORS = {FilterError: invalid_filter, RuleError: invalid_rule}


@post(
    "/api/v1/automations",
    status_code=HTTP_201_CREATED,
    summary="Save an automation rule (on an event type, if a filter holds, then actions)",
    exception_handlers=_RULE_ERRORS,
)
async def save_automation(request: Request, data: JSONBody[AutomationBody]) -> AutomationSaved:
    principal, _ = await supervisor(request)
    data = sanitize(data)
    rule = parse_rule(data.name, data.on.strip(), data.condition, data.then, enabled=data.enabled)
    await asyncio.to_thread(_check_references, svc(request).store, rule)
    done = await supervised_command(
        request,
        Automation,
        Automation.stream_id(rule.name),
        lambda a, by, at: a.configure(rule, by, at),
        principal=principal,
        create=True,
    )
    config = done.aggregate.config
    assert config is not None
    return AutomationSaved(
        name=config.name,
        on=config.on,
        then=config.actions,
        enabled=config.enabled,
        version=config.version,
        position=done.position,
        condition=config.condition,
    )


def _check_references(store: Any, rule: Rule) -> None:
    """Every queue, team and canned response the rule names exists (a RuleError naming the action)."""
    for i, action in enumerate(rule.actions):
        path = f"then[{i}].{action.kind}"
        if action.kind == "set_queue" and not store.load(Queue.stream_id(action.value)):
            raise RuleError(path, f"no queue named {action.value!r} (PUT /api/v1/queues/{{name}} first)")
        if action.kind == "assign_team" and not store.load(team_stream_id(action.value)):
            raise RuleError(path, f"no team named {action.value!r}")
        if action.kind == "reply":
            try:
                canned = load(store, CannedResponse, action.value, "canned.Created")
            except NotFound:
                raise RuleError(f"{path}.canned", f"no canned response {action.value}") from None
            if canned.deleted:
                raise RuleError(f"{path}.canned", f"canned response {action.value} was deleted")


_COLUMNS = (
    "name, on_type, condition, actions, enabled, version, updated_by, updated_at, created_at, fired, last_fired_at"
)


def _view(r: dict[str, Any]) -> AutomationView:
    return AutomationView(
        name=r["name"],
        on=r["on_type"],
        condition=r["condition"],
        then=r["actions"],
        enabled=r["enabled"],
        version=r["version"],
        updated_by=r["updated_by"],
        updated_at=r["updated_at"],
        created_at=r["created_at"],
        fired=r["fired"],
        last_fired_at=r["last_fired_at"],
    )


@get("/api/v1/automations", summary="Automation rules, by name, with how often each fired")
async def list_automations(request: Request) -> AutomationList:
    await require(request, SUPERVISE)
    found = await rows(request, f"SELECT {_COLUMNS} FROM proj_automations ORDER BY name")  # noqa: S608
    return AutomationList(items=[_view(r) for r in found])


@get("/api/v1/automations/dead-letters", summary="Webhook deliveries that failed every attempt")
async def list_dead_letters(request: Request) -> DeadLetterList:
    await require(request, SUPERVISE)
    rows = await asyncio.to_thread(_dead_letters, svc(request).store)
    return DeadLetterList(
        items=[
            DeadLetter(
                delivery_id=str(r["delivery_id"]),
                rule=r["rule"],
                event_id=str(r["event_id"]),
                url=r["url"],
                attempts=r["attempts"],
                last_error=r["last_error"],
                created_at=r["created_at"],
                dead_at=r["finished_at"],
            )
            for r in rows
        ]
    )


def _dead_letters(store: Any) -> list[dict[str, Any]]:
    with store.datastore.transaction() as curs:
        return dead_letters(curs, limit=500)


@post(
    "/api/v1/automations/dead-letters/retry",
    status_code=HTTP_200_OK,
    summary="Send dead webhook deliveries again (these, or all of them)",
)
async def retry_dead_letters(request: Request, data: JSONBody[RetryBody]) -> Retried:
    await require(request, SUPERVISE)
    if data.delivery_ids is not None and not 1 <= len(data.delivery_ids) <= 500:
        raise HTTPException(status_code=400, detail="delivery_ids: 1 to 500 ids, or leave it out for all")
    n = await asyncio.to_thread(_retry, svc(request).store, data.delivery_ids)
    return Retried(retried=n)


def _retry(store: Any, ids: list[UUID] | None) -> int:
    with store.datastore.transaction(commit=True) as curs:
        return retry_dead(curs, ids)


@get("/api/v1/automations/{name:str}", summary="One automation rule")
async def get_automation(request: Request, name: FromPath[str]) -> AutomationView:
    await require(request, SUPERVISE)
    try:
        name = check_name(sanitize(name))
    except RuleError:
        raise HTTPException(status_code=404, detail="no such automation") from None
    found = await rows(request, f"SELECT {_COLUMNS} FROM proj_automations WHERE name = %s", (name,))  # noqa: S608
    if not found:
        raise HTTPException(status_code=404, detail=f"no automation named {name!r}")
    return _view(found[0])


HANDLERS = [save_automation, list_automations, list_dead_letters, retry_dead_letters, get_automation]
