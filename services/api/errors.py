"""Errors as the contract's JSON body `{"error": CODE, "detail": TEXT}`: one handler per exception a
request may end in, so a client gets a 4xx it can act on, never a 500 or Litestar's own shape."""

from __future__ import annotations

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from channels.errors import ChannelError
from services.api import queries
from services.api.context import svc
from services.core.commands import NotFound
from services.domain.aggregate import DomainError
from services.platform.eventstore.store import ConcurrencyError


def error_body(code: str, detail: str) -> dict:
    return {"error": code, "detail": detail}


def channel_error_handler(request: Request, exc: ChannelError) -> Response:
    svc(request).count(f"channel_rejected_{exc.code}")
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return Response(
        error_body(exc.code, exc.detail), status_code=exc.status, media_type=MediaType.JSON, headers=headers
    )


_HTTP_CODES = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
}


def http_error_handler(request: Request, exc: HTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 400 and getattr(exc, "extra", None):
        detail = f"{detail}: {exc.extra}"
    return Response(
        error_body(code, detail),
        status_code=exc.status_code,
        media_type=MediaType.JSON,
        headers=getattr(exc, "headers", None),
    )


def domain_error_handler(request: Request, exc: DomainError) -> Response:
    return Response(error_body("rejected", str(exc)), status_code=409, media_type=MediaType.JSON)


def not_found_handler(request: Request, exc: NotFound) -> Response:
    return Response(error_body("not_found", str(exc)), status_code=404, media_type=MediaType.JSON)


def conflict_handler(request: Request, exc: ConcurrencyError) -> Response:
    """Writers kept racing on one aggregate through every retry: the client may try again."""
    return Response(
        error_body("conflict", "the case changed while the command ran; retry"),
        status_code=409,
        media_type=MediaType.JSON,
        headers={"Retry-After": "1"},
    )


def invalid_cursor_handler(request: Request, exc: queries.InvalidCursor) -> Response:
    return Response(error_body("malformed", "invalid cursor"), status_code=400, media_type=MediaType.JSON)
