"""The server is built through the composition root: one set of process-wide connections shared by the
HTTP application's dependencies, and SIGINT/SIGTERM left to the process that owns every role."""

from __future__ import annotations

import signal

import httpx
import pytest
import uvicorn

pytestmark = pytest.mark.e2e


async def test_http_services_share_the_switchboards_connections(server):
    services = server.services
    assert services is not None
    assert services.nc is server.sb.nc and services.js is server.sb.js
    assert services.store is server.sb.store is not None
    assert services.names is server.sb.names and services.settings is server.settings
    assert services.chat_gateway is server.chat_gateway is not None
    async with services.pool.connection() as conn:
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        assert (await client.get("/ready")).status_code == 200


async def test_uvicorn_does_not_take_over_the_owners_signal_handlers(server):
    # `switchboard up` stops every role on SIGINT/SIGTERM through its own handlers; uvicorn, while it
    # serves, must not replace them with its own (which would stop the HTTP server only).
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        assert not isinstance(getattr(handler, "__self__", None), uvicorn.Server), sig


async def test_stopping_closes_the_http_pool(settings, names):
    from services.bootstrap import ROLES  # noqa: PLC0415 -- lazy, as in conftest
    from services.server import Server  # noqa: PLC0415

    srv = Server(settings, ROLES, http=("127.0.0.1", 0), names=names)
    await srv.start()
    pool = srv.services.pool
    await srv.stop()
    assert pool.closed and srv.sb.nc.is_closed
