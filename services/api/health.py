"""What operators and connectors probe, on every role's HTTP port: liveness, readiness, Prometheus
counters and the AsyncAPI document of the NATS subjects. No token needed."""

from __future__ import annotations

from litestar import MediaType, Request, Response, get

from services.api.context import Services, svc
from services.api.readiness import readiness


@get("/health", include_in_schema=True, summary="Liveness")
async def health() -> dict:
    return {"status": "ok"}


@get("/ready", summary="Readiness: NATS and PostgreSQL reachable, SB_INTERACTIONS not full")
async def ready(request: Request) -> Response:
    """200 when well; 503 naming what is wrong (`"ok"` or a reason per check), within ~2 s even while
    a dependency hangs (see services.api.readiness)."""
    ok, checks = await readiness(svc(request)).report()
    return Response({"status": "ready" if ok else "not_ready", **checks}, status_code=200 if ok else 503)


@get("/metrics", media_type=MediaType.TEXT, summary="Prometheus metrics")
async def prometheus(request: Request) -> str:
    lines = []
    for name, value in sorted(svc(request).counters.items()):
        metric = f"switchboard_{name}_total"
        lines.append(f"# TYPE {metric} counter\n{metric} {value}")
    lines += await _quarantine_gauge(svc(request))
    return "\n".join(lines) + "\n"


async def _quarantine_gauge(services: Services) -> list[str]:
    """`switchboard_quarantined_events{consumer=...}`: events a projection or the relay set aside."""
    if services.pool is None:
        return []
    try:
        async with services.pool.connection(timeout=2.0) as conn:
            rows = await (
                await conn.execute("SELECT consumer, count(*) FROM sb_quarantine GROUP BY consumer")
            ).fetchall()
    except Exception:  # noqa: BLE001 — metrics must answer even when PostgreSQL does not
        return []
    metric = "switchboard_quarantined_events"
    return [f"# TYPE {metric} gauge", *(f'{metric}{{consumer="{consumer}"}} {n}' for consumer, n in sorted(rows))]


@get("/asyncapi.json", media_type=MediaType.JSON, summary="AsyncAPI document for every NATS subject")
async def asyncapi(request: Request) -> Response:
    return Response(svc(request).asyncapi or b"{}", media_type=MediaType.JSON)
