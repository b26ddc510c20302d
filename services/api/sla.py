"""Agent API, SLA policies: targets per priority for the first response, the next response and the
resolution, counted in business hours when the policy has them (the timer role keeps the clocks).

`PUT /api/v1/sla-policies/{name}` records the whole policy (`sla.PolicyConfigured`), checked here:
ISO 8601 durations above zero, known priorities and weekdays, "HH:MM-HH:MM" ranges that do not
overlap, ISO holiday dates and a real IANA time zone; anything else is a 400 and nothing is recorded.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Annotated, Literal

import msgspec
from litestar import Request, get, put
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK
from psycopg.rows import dict_row

from events.case import Priority
from events.config import SLA_TARGETS, BusinessHours
from events.sanitize import sanitize
from services.api.auth import READ, SUPERVISE
from services.api.context import now, require, svc
from services.core.commands import run_command
from services.domain.business_hours import Calendar, CalendarError
from services.domain.config import SlaPolicy

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Duration = Annotated[timedelta, msgspec.Meta(description='ISO 8601, days to seconds: "PT15M", "P1DT4H"')]


class BusinessHoursBody(msgspec.Struct, forbid_unknown_fields=True):
    timezone: Annotated[str, msgspec.Meta(description='an IANA time zone: "Europe/Madrid"', max_length=64)]
    week: dict[Weekday, list[Annotated[str, msgspec.Meta(pattern=r"^\d\d:\d\d-\d\d:\d\d$")]]]
    holidays: list[date] = []


class SlaPolicyBody(msgspec.Struct, forbid_unknown_fields=True):
    first_response: dict[Priority, Duration] = {}
    next_response: dict[Priority, Duration] = {}
    resolution: dict[Priority, Duration] = {}
    business_hours: BusinessHoursBody | None = None


class BusinessHoursView(msgspec.Struct):
    timezone: str
    week: dict[str, list[str]]
    holidays: list[str]


class SlaPolicyView(msgspec.Struct):
    name: str
    first_response: dict[str, str]
    next_response: dict[str, str]
    resolution: dict[str, str]
    business_hours: BusinessHoursView | None
    position: int  # of the configuration in the log (a PUT's: read your writes with Sb-Min-Position)


def iso_duration(value: timedelta) -> str:
    """timedelta(minutes=15) → "PT15M" (msgspec would write "PT900S")."""
    days, seconds = value.days, value.seconds
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    clock += (
        f"{secs}.{value.microseconds:06d}".rstrip("0") + "S" if value.microseconds else (f"{secs}S" if secs else "")
    )
    return out + ("T" + clock if clock else ("" if days else "T0S"))


# Longer targets are a mistake in the policy rather than a service level.
MAX_TARGET = timedelta(days=366)


def _targets(name: str, targets: dict[str, timedelta]) -> dict[str, str]:
    for priority, duration in targets.items():
        if not timedelta(0) < duration <= MAX_TARGET:
            raise HTTPException(
                status_code=400, detail=f"{name}.{priority} must be a duration above zero and at most P366D"
            )
    return {priority: iso_duration(duration) for priority, duration in sorted(targets.items())}


def _policy_fields(data: SlaPolicyBody) -> dict:
    fields: dict = {target: _targets(target, getattr(data, target)) for target in SLA_TARGETS}
    if not any(fields.values()):
        raise HTTPException(status_code=400, detail="a policy needs at least one target duration")
    hours = None
    if data.business_hours is not None:
        hours = BusinessHours(
            timezone=data.business_hours.timezone,
            week={day: list(ranges) for day, ranges in data.business_hours.week.items()},
            holidays=sorted({d.isoformat() for d in data.business_hours.holidays}),
        )
        try:
            Calendar.of(hours)
        except CalendarError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
    fields["business_hours"] = hours
    return fields


def _view(name: str, fields: dict, position: int) -> SlaPolicyView:
    hours = fields["business_hours"]
    return SlaPolicyView(
        name=name,
        first_response=fields["first_response"],
        next_response=fields["next_response"],
        resolution=fields["resolution"],
        business_hours=None
        if hours is None
        else BusinessHoursView(timezone=hours["timezone"], week=hours["week"], holidays=hours.get("holidays", [])),
        position=position,
    )


@put("/api/v1/sla-policies/{name:str}", status_code=HTTP_200_OK, summary="Configure an SLA policy")
async def put_sla_policy(request: Request, name: FromPath[Name], data: JSONBody[SlaPolicyBody]) -> SlaPolicyView:
    principal = await require(request, SUPERVISE)
    name, data = sanitize(name).strip(), sanitize(data)
    if not name:
        raise HTTPException(status_code=400, detail="a policy needs a name")
    fields = _policy_fields(data)
    at = now(request)

    def configure(policy: SlaPolicy) -> None:
        policy.configure(name, principal.name, at, **fields)

    done = await asyncio.to_thread(
        run_command, svc(request).store, SlaPolicy, SlaPolicy.stream_id(name), configure, create=True
    )
    return _view(name, msgspec.to_builtins(fields), done.position)


@get("/api/v1/sla-policies", summary="SLA policies")
async def get_sla_policies(request: Request) -> list[SlaPolicyView]:
    await require(request, READ)
    async with svc(request).pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM proj_sla_policies ORDER BY name")
        rows = await cur.fetchall()
    return [_view(row["name"], row, row["position"]) for row in rows]
