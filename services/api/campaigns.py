"""Agent API, campaigns: one message to every member of a segment on one channel (the `campaigner`
role sends them, services.campaigns.campaigner). Supervisors and admins create, start, pause and
resume them (start again); anyone signed in reads them with their counts, which come from the
campaign's own stream (fresh, not a lagging read model).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from events.sanitize import sanitize
from services.api.auth import READ
from services.api.context import require, svc
from services.api.supervised import rows, supervised_command, supervisor
from services.core.commands import NotFound, append_new, load
from services.domain.aggregate import DomainError
from services.domain.campaign import Campaign
from services.domain.config import Segment


class CampaignBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    segment_id: UUID
    channel: str
    text: str | None = None
    # {"name", "language", "components"?}: a WhatsApp template message (Graph API); checked whole
    # (services.domain.campaign.check_whatsapp_template), a wrong one is 400
    whatsapp_template: dict[str, Any] | None = None
    send_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    quiet_hours: dict[str, str] | None = None  # {"start": "21:00", "end": "08:00"}, the recipient's local time


class CampaignCounts(msgspec.Struct):
    targeted: int
    skipped_no_consent: int
    skipped_no_address: int
    sent: int
    delivered: int
    failed: int
    replied: int


class CampaignView(msgspec.Struct):
    id: str
    name: str
    segment_id: str
    channel: str
    text: str | None
    whatsapp_template: dict[str, Any] | None
    send_at: datetime | None
    quiet_hours: dict[str, str] | None
    status: str
    created_at: datetime
    counts: CampaignCounts
    # Why a `failed` campaign cannot run (its segment's filter is refused, say); null otherwise.
    failure: str | None = None


class CampaignSaved(CampaignView):
    position: int = 0


class CampaignChanged(msgspec.Struct):
    id: str
    status: str
    position: int


class CampaignList(msgspec.Struct):
    items: list[CampaignView]


def _view(campaign: Campaign) -> CampaignView:
    d = campaign.definition
    if d is None:
        raise NotFound(f"campaign {campaign.id} not found")
    return CampaignView(
        id=str(campaign.id),
        name=d.name,
        segment_id=str(d.segment_id),
        channel=d.channel,
        text=d.text,
        whatsapp_template=d.whatsapp_template,
        send_at=d.send_at,
        quiet_hours=d.quiet_hours,
        status=campaign.status,
        created_at=d.occurred_at,
        # sent: taken by the provider; delivered / failed: as it reported since (failed also counts
        # what it never took); replied: recipients who wrote back within the reply window.
        counts=CampaignCounts(**campaign.counts()),
        failure=campaign.failure,
    )


def _load(store, campaign_id: UUID) -> Campaign:
    return load(store, Campaign, campaign_id, first="campaign.Created")


@post("/api/v1/campaigns", status_code=HTTP_201_CREATED, summary="Create a campaign (a draft: start sends it)")
async def create_campaign(request: Request, data: JSONBody[CampaignBody]) -> CampaignSaved:
    principal, at = await supervisor(request)
    data = sanitize(data)
    services = svc(request)
    segment = await asyncio.to_thread(services.store.load, data.segment_id)
    if not segment or segment[0].NAME != "segment.Defined":
        raise HTTPException(status_code=400, detail=f"segment_id: no segment {data.segment_id}")
    Segment.replay(data.segment_id, segment)
    campaign = Campaign(uuid.uuid4())
    try:  # a bad definition is bad input (400), not a conflict with the campaign's state
        campaign.create(
            name=data.name,
            segment_id=data.segment_id,
            channel=data.channel,
            text=data.text,
            whatsapp_template=data.whatsapp_template,
            send_at=data.send_at,
            quiet_hours=data.quiet_hours,
            by=principal.name,
            at=at,
        )
    except DomainError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    position = await asyncio.to_thread(append_new, services.store, campaign)
    view = _view(campaign)
    return CampaignSaved(**msgspec.structs.asdict(view), position=position)


async def _command(request: Request, campaign_id: UUID, verb: str) -> CampaignChanged:
    done = await supervised_command(
        request, Campaign, campaign_id, lambda c, by, at: getattr(c, verb)(by, at), first="campaign.Created"
    )
    return CampaignChanged(id=str(campaign_id), status=done.aggregate.status, position=done.position)


@post("/api/v1/campaigns/{campaign_id:uuid}/start", status_code=HTTP_200_OK, summary="Start (or resume) a campaign")
async def start_campaign(request: Request, campaign_id: FromPath[UUID]) -> CampaignChanged:
    return await _command(request, campaign_id, "start")


@post("/api/v1/campaigns/{campaign_id:uuid}/pause", status_code=HTTP_200_OK, summary="Pause a campaign")
async def pause_campaign(request: Request, campaign_id: FromPath[UUID]) -> CampaignChanged:
    return await _command(request, campaign_id, "pause")


@get("/api/v1/campaigns/{campaign_id:uuid}", summary="A campaign with its counts")
async def get_campaign(request: Request, campaign_id: FromPath[UUID]) -> CampaignView:
    await require(request, READ)
    return _view(await asyncio.to_thread(_load, svc(request).store, campaign_id))


@get("/api/v1/campaigns", summary="Campaigns, newest first")
async def list_campaigns(request: Request) -> CampaignList:
    await require(request, READ)
    store = svc(request).store
    ids = [r["id"] for r in await rows(request, "SELECT id FROM proj_campaigns ORDER BY created_at DESC, id LIMIT 200")]
    campaigns = await asyncio.to_thread(lambda: [_load(store, i) for i in ids])
    return CampaignList(items=[_view(c) for c in campaigns])


HANDLERS = [create_campaign, start_campaign, pause_campaign, get_campaign, list_campaigns]
