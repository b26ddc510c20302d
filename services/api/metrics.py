"""Agent API, metrics: first response time, resolution time, SLA attainment, CSAT and volume per
channel over a period (the operators' Prometheus counters are `services/api/health.py`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar import Request, get
from litestar.exceptions import HTTPException
from litestar.params import FromQuery, QueryParameter

from services.api import queries
from services.api.auth import READ
from services.api.context import now, require, svc


@get("/api/v1/metrics", summary="Contact-centre metrics over a period")
async def cc_metrics(
    request: Request, from_: Annotated[str | None, QueryParameter(name="from")] = None, to: FromQuery[str | None] = None
) -> dict:
    await require(request, READ)
    end = _parse_time(to) or now()
    start = _parse_time(from_) or end - timedelta(days=7)
    async with svc(request).pool.connection() as conn:
        return await queries.metrics(conn, start, end)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(status_code=400, detail="times are ISO 8601") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
