"""Agent API, customers: find one by an identity or by words, the 360° profile, the timeline, and
the bytes of an attachment."""

from __future__ import annotations

from uuid import UUID

from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery

from channels.blobs import blobs_of
from events.interactions import CHANNELS, IDENTITY_KINDS, Channel, Identity, IdentityKind
from services.api import queries
from services.api.auth import READ
from services.api.context import page_limit, require, svc
from services.api.views import CustomerList, Profile, Timeline, as_view
from services.core.commands import NotFound
from services.domain.identity import InvalidIdentity, normalize


@get("/api/v1/customers/lookup", summary="The customer holding an identity")
async def lookup_customer(request: Request, kind: FromQuery[IdentityKind], value: FromQuery[str]) -> Profile:
    await require(request, READ)
    if kind not in IDENTITY_KINDS:
        raise HTTPException(status_code=400, detail=f"kind must be one of {', '.join(IDENTITY_KINDS)}")
    try:
        identity = normalize(Identity(kind, value))
    except InvalidIdentity as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    services = svc(request)
    blind = services.store.master.blind_index(identity.kind, identity.value)
    async with services.pool.connection() as conn:
        cur = await conn.execute("SELECT customer_id FROM sb_identities WHERE blind = %s", (blind,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound("no customer holds that identity")
        profile = await queries.customer_profile(conn, row[0])
    if profile is None:
        raise NotFound("customer not projected yet")
    return as_view(profile, Profile)


@get("/api/v1/customers", summary="Customers matching a name or identity")
async def search_customers(
    request: Request, q: FromQuery[str] = "", limit: FromQuery[int] = 50, cursor: FromQuery[str | None] = None
) -> CustomerList:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        return as_view(await queries.search_customers(conn, q, page_limit(limit), cursor), CustomerList)


@get("/api/v1/customers/{customer_id:uuid}", summary="The 360° profile")
async def get_customer(request: Request, customer_id: FromPath[UUID]) -> Profile:
    await require(request, READ)
    async with svc(request).pool.connection() as conn:
        profile = await queries.customer_profile(conn, customer_id)
    if profile is None:
        raise NotFound(f"customer {customer_id} not found")
    return as_view(profile, Profile)


@get("/api/v1/customers/{customer_id:uuid}/timeline", summary="Every touchpoint, newest first")
async def get_timeline(
    request: Request,
    customer_id: FromPath[UUID],
    limit: FromQuery[int] = 50,
    cursor: FromQuery[str | None] = None,
    channel: FromQuery[Channel | None] = None,
) -> Timeline:
    await require(request, READ)
    if channel is not None and channel not in CHANNELS:
        raise HTTPException(status_code=400, detail=f"channel must be one of {', '.join(CHANNELS)}")
    async with svc(request).pool.connection() as conn:
        page = await queries.timeline_of(conn, customer_id, page_limit(limit), cursor, channel)
    if page is None:
        raise NotFound(f"customer {customer_id} not found")
    return as_view(page, Timeline)


@get(
    "/api/v1/attachments/{sha256:str}",
    summary="The bytes of an attachment, by its SHA-256",
    media_type="application/octet-stream",
)
async def get_attachment(request: Request) -> Response[bytes]:
    await require(request, READ)
    sha256 = request.path_params["sha256"].lower()
    data = await (await blobs_of(svc(request))).get(sha256)
    if data is None:
        raise NotFound("no attachment with that sha256")
    # Served as opaque bytes, never rendered: an attachment is the customer's content, not ours.
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{sha256}"', "X-Content-Type-Options": "nosniff"},
    )
