"""The agent console: its page, script and style, served from `static/`. The script and style are
files of their own, so the console's Content-Security-Policy can forbid every inline script and
style (see services/api/headers.py)."""

from __future__ import annotations

from pathlib import Path

from litestar import MediaType, Response, get

STATIC = Path(__file__).parent / "static"
# Litestar adds "; charset=utf-8" to every text/* media type itself: naming it here too sent it twice.


@get("/", media_type=MediaType.HTML, include_in_schema=False)
async def console() -> Response:
    return Response((STATIC / "console.html").read_bytes(), media_type=MediaType.HTML)


@get("/console.js", include_in_schema=False)
async def console_js() -> Response:
    return Response((STATIC / "console.js").read_bytes(), media_type="text/javascript")


@get("/console.css", include_in_schema=False)
async def console_css() -> Response:
    return Response((STATIC / "console.css").read_bytes(), media_type="text/css")
