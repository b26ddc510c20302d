"""CSAT: a connector's score for a case (`POST /api/v1/cases/{id}/csat`), and the rating link of an
email or chat survey (`GET /csat/{token}?score=N`, public: the signed token is the credential).

The link answers the case's open survey: the first answer (a reply or a click) counts, a second
click changes nothing and says so. A token that is not ours is a 400, one whose survey window has
closed (or whose case was reopened since) a 410. A connector's POST records its score whenever it
comes (it reports a score taken elsewhere), 400 outside 1-5.
"""

from __future__ import annotations

import asyncio
import html
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK

from events.sanitize import sanitize
from services.api.auth import WRITE
from services.api.context import now, require, svc
from services.api.errors import error_body
from services.core.commands import run_case
from services.domain.csat import BadToken, ExpiredToken, csat_key, verify_token

Score = Annotated[int, msgspec.Meta(ge=1, le=5)]


class CsatBody(msgspec.Struct, forbid_unknown_fields=True):
    score: Score
    comment: str | None = None


class CsatSaved(msgspec.Struct):
    case_id: str
    score: int
    comment: str | None
    source: str
    position: int


@post("/api/v1/cases/{case_id:uuid}/csat", status_code=HTTP_200_OK, summary="Record a CSAT score (1-5)")
async def record_csat(request: Request, case_id: FromPath[UUID], data: JSONBody[CsatBody]) -> CsatSaved:
    await require(request, WRITE)
    data = sanitize(data)
    if not 1 <= data.score <= 5:  # the body's own constraint, checked again: a 400, never a 409
        raise HTTPException(status_code=400, detail="score must be from 1 to 5")
    comment = (data.comment or "").strip()[:2000] or None
    done = await asyncio.to_thread(
        run_case, svc(request).store, case_id, lambda c: c.record_csat(data.score, now(), comment, source="api")
    )
    return CsatSaved(case_id=str(case_id), score=data.score, comment=comment, source="api", position=done.position)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Thank you</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; text-align: center">
<h1>Thank you!</h1><p>{message}</p></body></html>
"""


def _refused(status: int, code: str, detail: str) -> Response:
    return Response(error_body(code, detail), status_code=status, media_type=MediaType.JSON)


@get("/csat/{token:str}", summary="A survey's rating link (public)", media_type=MediaType.HTML)
async def rating_link(request: Request, token: FromPath[str], score: FromQuery[int]) -> Response[str]:
    if not 1 <= score <= 5:
        raise HTTPException(status_code=400, detail="score must be from 1 to 5")
    services = svc(request)
    try:
        case_id = verify_token(csat_key(services.settings.master_key_bytes), token, now())
    except BadToken as exc:
        return _refused(400, "malformed", str(exc))
    except ExpiredToken as exc:
        return _refused(410, "expired", str(exc))

    outcome: list[str] = []  # the last attempt's (a version conflict runs the command again)

    def answer(case) -> None:
        at = now()
        if not case.survey_open(at):
            outcome.append("closed")
        else:
            outcome.append("recorded" if case.answer_survey(score, "link", at) else "already")

    await asyncio.to_thread(run_case, services.store, case_id, answer)
    if outcome[-1] == "closed":
        return _refused(410, "expired", "this survey has closed")
    if outcome[-1] == "recorded":
        message = f"We recorded your rating: {score} out of 5."
    else:
        message = "We already have your rating for this conversation."
    return Response(_PAGE.format(message=html.escape(message)), media_type=MediaType.HTML)
