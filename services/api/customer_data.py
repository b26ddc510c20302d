"""Consent and business activities over HTTP.

- `POST /api/v1/customers/{id}/consent` `{"channel", "purpose", "granted"}`: an agent records what the
  customer said (source `api:<who>`).
- `GET /unsubscribe/{token}` (the contract's link: withdraws and shows a page saying so) and
  `POST /unsubscribe/{token}` (RFC 8058 one-click, what a mail client sends for
  `List-Unsubscribe-Post`): public, the signed token is the credential; withdraws marketing on the
  token's channel once (source `unsubscribe-link`). A GET that withdraws can be triggered by a mail
  scanner following links; the contract names GET for the link, so it withdraws (noted, left).
- `POST /api/v1/activities`: a business event of another system (an order placed, an invoice paid)
  for the customer holding an identity. Published to JetStream as an interaction on channel
  "activity" (services/domain/activities.py), so the core records it exactly once per type +
  reference and creates the customer when the identity is new; 202 once JetStream has it, like a
  channel's webhook. The same body arrives over NATS on `sb.activities.<source>`
  (services/core/activities.py).
"""

from __future__ import annotations

import asyncio
import html
from uuid import UUID

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from events.interactions import CHANNELS
from services.api.auth import WRITE
from services.api.context import now, require, svc
from services.api.errors import error_body
from services.core.commands import merged_customers, run_command
from services.domain import activities, consent
from services.domain.customer import Customer

MARKETING_CHANNELS = tuple(c for c in CHANNELS if c != "activity")


class ConsentBody(msgspec.Struct, forbid_unknown_fields=True):
    channel: str
    granted: bool
    purpose: str = "marketing"


class ConsentState(msgspec.Struct):
    id: str
    consent: dict[str, dict[str, bool]]
    position: int


class ActivityAccepted(msgspec.Struct):
    id: str
    type: str
    reference: str
    duplicate: bool


@post(
    "/api/v1/activities",
    status_code=HTTP_202_ACCEPTED,
    summary="Record a business activity (order, invoice, delivery) for a customer",
)
async def post_activity(request: Request, data: JSONBody[activities.ActivityBody]) -> ActivityAccepted:
    await require(request, WRITE)
    try:
        interaction = activities.checked(data)
    except activities.BadActivity as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    services = svc(request)
    assert services.publisher is not None
    new = await services.publisher.publish(interaction)  # Unavailable: 503 + Retry-After
    return ActivityAccepted(id=str(interaction.id), type=data.type, reference=data.reference, duplicate=not new)


def _consent_view(customer: Customer) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {}
    for (purpose, channel), granted in sorted(customer.consents.items()):
        out.setdefault(purpose, {})[channel] = granted
    return out


@post("/api/v1/customers/{customer_id:uuid}/consent", status_code=HTTP_200_OK, summary="Record consent")
async def set_consent(request: Request, customer_id: FromPath[UUID], data: JSONBody[ConsentBody]) -> ConsentState:
    principal = await require(request, WRITE)
    if data.channel not in MARKETING_CHANNELS:
        raise HTTPException(status_code=400, detail=f"channel must be one of {', '.join(MARKETING_CHANNELS)}")
    if data.purpose not in consent.PURPOSES:
        raise HTTPException(status_code=400, detail=f"purpose must be one of {', '.join(consent.PURPOSES)}")
    store = svc(request).store
    source = f"api:{principal.name}"[:120]

    def command() -> tuple[UUID, Customer, int]:
        survivor = merged_customers(store, customer_id)[0].id
        done = run_command(
            store,
            Customer,
            survivor,
            lambda c: c.change_consent(data.channel, data.granted, now(), purpose=data.purpose, source=source),
            first="customer.Registered",
        )
        return survivor, done.aggregate, done.position

    survivor, customer, position = await asyncio.to_thread(command)
    return ConsentState(id=str(survivor), consent=_consent_view(customer), position=position)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Unsubscribed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; text-align: center">
<h1>You are unsubscribed</h1><p>{message}</p></body></html>
"""


async def _unsubscribe(request: Request, token: str) -> Response:
    services = svc(request)
    try:
        customer_id, channel, purpose = consent.verify_unsubscribe(
            consent.unsubscribe_key(services.settings.master_key_bytes), token
        )
    except consent.BadUnsubscribeToken as exc:
        return Response(error_body("malformed", str(exc)), status_code=400, media_type=MediaType.JSON)
    store = services.store

    def command() -> None:
        survivor = merged_customers(store, customer_id)[0].id
        run_command(
            store,
            Customer,
            survivor,
            lambda c: None if c.erased else c.change_consent(channel, False, now(), purpose, "unsubscribe-link"),
            first="customer.Registered",
        )

    await asyncio.to_thread(command)
    message = f"You will receive no more {purpose} messages by {channel}."
    return Response(_PAGE.format(message=html.escape(message)), media_type=MediaType.HTML)


@get("/unsubscribe/{token:str}", summary="An unsubscribe link (public)", media_type=MediaType.HTML)
async def unsubscribe_link(request: Request, token: FromPath[str]) -> Response[str]:
    return await _unsubscribe(request, token)


@post(
    "/unsubscribe/{token:str}",
    status_code=HTTP_200_OK,
    summary="One-click unsubscribe (RFC 8058, public)",
    media_type=MediaType.HTML,
)
async def unsubscribe_one_click(request: Request, token: FromPath[str]) -> Response[str]:
    return await _unsubscribe(request, token)
