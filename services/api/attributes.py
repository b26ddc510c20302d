"""Agent API, custom attributes: their definitions (supervisors and admins define, everyone reads)
and the values of a customer or a case, checked against the definitions as they are in the log
(`services.domain.attributes`): a change is recorded whole or not at all."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Request, get, patch, put
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK
from psycopg.rows import dict_row

from events.config import AppliesTo, AttributeDefined, AttributeType
from events.sanitize import sanitize
from services.api.auth import READ, SUPERVISE, WRITE
from services.api.context import now, require, svc
from services.core.commands import merged_customers, run_case, run_command
from services.domain.attributes import InvalidAttribute, checked_values, valid_key
from services.domain.config import AttributeDefinition
from services.domain.customer import Customer
from services.platform.eventstore.store import EventStore

MAX_OPTIONS = 200


class DefinitionBody(msgspec.Struct, forbid_unknown_fields=True):
    type: AttributeType
    applies_to: AppliesTo
    options: list[str] = []


class Definition(msgspec.Struct):
    key: str
    type: str
    applies_to: str
    options: list[str]
    updated_by: str
    updated_at: datetime


class DefinitionSaved(msgspec.Struct):
    key: str
    type: str
    applies_to: str
    options: list[str]
    position: int


class DefinitionList(msgspec.Struct):
    items: list[Definition]


class AttributeValues(msgspec.Struct):
    """A customer's or a case's custom attributes after the change."""

    id: str
    attributes: dict[str, Any]
    position: int


@put("/api/v1/attribute-definitions/{key:str}", status_code=HTTP_200_OK, summary="Define a custom attribute")
async def define_attribute(request: Request, key: FromPath[str], data: JSONBody[DefinitionBody]) -> DefinitionSaved:
    principal = await require(request, SUPERVISE)
    data = sanitize(data)
    if not valid_key(key):
        raise HTTPException(
            status_code=400, detail="key: lower-case letters, digits, _ . - (a letter first, at most 64)"
        )
    options = list(dict.fromkeys(o.strip() for o in data.options if o.strip()))
    if data.type == "list" and not options:
        raise HTTPException(status_code=400, detail="a list attribute needs options")
    if data.type != "list" and options:
        raise HTTPException(status_code=400, detail="options are for list attributes only")
    if len(options) > MAX_OPTIONS or any(len(o) > 200 for o in options):
        raise HTTPException(status_code=400, detail=f"at most {MAX_OPTIONS} options of at most 200 characters")
    done = await asyncio.to_thread(
        run_command,
        svc(request).store,
        AttributeDefinition,
        AttributeDefinition.stream_id(key),
        lambda d: d.define(key, data.type, data.applies_to, options, principal.name, now()),
        create=True,
    )
    return DefinitionSaved(key=key, type=data.type, applies_to=data.applies_to, options=options, position=done.position)


@get("/api/v1/attribute-definitions", summary="Custom attribute definitions")
async def list_definitions(request: Request) -> DefinitionList:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT key, type, applies_to, options, updated_by, updated_at FROM proj_attribute_definitions ORDER BY key"
        )
        rows = await cur.fetchall()
    return DefinitionList(items=[Definition(**{**r, "options": list(r["options"])}) for r in rows])


def _definitions(store: EventStore, keys: list[str]) -> dict[str, AttributeDefined | None]:
    """The definitions of these keys as the log has them now (not the read model: no lag)."""
    found: dict[str, AttributeDefined | None] = {}
    for key in keys:
        events = store.load(AttributeDefinition.stream_id(key)) if valid_key(key) else []
        found[key] = (
            AttributeDefinition.replay(AttributeDefinition.stream_id(key), events).definition if events else None
        )
    return found


async def _checked(request: Request, values: dict[str, Any], applies_to: str) -> dict[str, Any]:
    values = sanitize(values)
    definitions = await asyncio.to_thread(_definitions, svc(request).store, list(values))
    try:
        return checked_values(values, definitions, applies_to)
    except InvalidAttribute as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


@patch("/api/v1/customers/{customer_id:uuid}/attributes", summary="Set a customer's custom attributes")
async def set_customer_attributes(
    request: Request, customer_id: FromPath[UUID], data: JSONBody[dict[str, Any]]
) -> AttributeValues:
    principal = await require(request, WRITE)
    values = await _checked(request, data, "customer")
    store = svc(request).store

    def command() -> tuple[UUID, Customer, int]:
        survivor = merged_customers(store, customer_id)[0].id  # an absorbed id reaches its survivor
        done = run_command(
            store,
            Customer,
            survivor,
            lambda c: c.set_attributes(values, principal.name, now()),
            first="customer.Registered",
        )
        return survivor, done.aggregate, done.position

    survivor, customer, position = await asyncio.to_thread(command)
    return AttributeValues(id=str(survivor), attributes=dict(customer.attributes), position=position)


@patch("/api/v1/cases/{case_id:uuid}/attributes", summary="Set a case's custom attributes")
async def set_case_attributes(
    request: Request, case_id: FromPath[UUID], data: JSONBody[dict[str, Any]]
) -> AttributeValues:
    principal = await require(request, WRITE)
    values = await _checked(request, data, "case")
    done = await asyncio.to_thread(
        run_case, svc(request).store, case_id, lambda c: c.set_attributes(values, principal.name, now())
    )
    return AttributeValues(id=str(case_id), attributes=dict(done.aggregate.attributes), position=done.position)


HANDLERS = [define_attribute, list_definitions, set_customer_attributes, set_case_attributes]
