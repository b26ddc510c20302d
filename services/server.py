"""Runs Switchboard's roles in this process: the HTTP server, the SMTP listener and the workers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import uvicorn
from psycopg_pool import AsyncConnectionPool

from channels.chat import ChatSessions
from channels.publish import Publisher
from services.api.app import Services, build_app
from services.bootstrap import Switchboard
from services.logs import configure_library_loggers, get_logger
from services.settings import Settings
from services.streams import Names

log = get_logger(__name__)


class Server:
    def __init__(self, settings: Settings, roles: tuple[str, ...], *, http: tuple[str, int] | None = None,
                 smtp: tuple[str, int] | None = None, names: Names | None = None):
        self.settings = settings
        self.roles = roles
        self.http = http
        self.smtp = smtp
        self.sb = Switchboard(settings, names or Names())
        self.uvicorn: uvicorn.Server | None = None
        self.http_task: asyncio.Task | None = None
        self.smtp_server = None
        self.services: Services | None = None
        self.pool: AsyncConnectionPool | None = None

    @property
    def http_url(self) -> str | None:
        return f"http://{self.http[0]}:{self.http[1]}" if self.http else None

    async def start(self) -> None:
        await self.sb.start(self.roles)
        if self.http and ({"gateway", "api"} & set(self.roles)):
            await self._start_http()
        if self.smtp and "gateway" in self.roles and self.services is not None:
            try:
                from channels.email.smtp import start_smtp  # noqa: PLC0415
            except ImportError:
                log.warning("smtp_listener_unavailable")
            else:
                self.smtp_server = await start_smtp(self.services, *self.smtp)

    async def _start_http(self) -> None:
        settings = self.settings
        self.pool = AsyncConnectionPool(self.sb.database.conninfo, min_size=1, max_size=10, open=False,
                                        kwargs={"autocommit": True})
        await self.pool.open(wait=True, timeout=30)
        store = self.sb.open_store()
        kv = await self.sb.js.key_value(self.sb.names.chat_sessions_bucket)
        token_key = hmac.new(settings.master_key_bytes, b"switchboard/chat-token/v1", hashlib.sha256).digest()
        self.services = Services(
            settings=settings, names=self.sb.names, nc=self.sb.nc, js=self.sb.js, pool=self.pool, store=store,
            publisher=Publisher(self.sb.js, self.sb.names),
            chat=ChatSessions(kv, token_key, settings.chat_identity_secret or ""),
            asyncapi=self._asyncapi(),
        )
        extra = []
        try:
            from channels.routes import channel_handlers  # noqa: PLC0415

            extra = channel_handlers()
        except ImportError:
            pass
        app = build_app(self.services, self.roles, extra)
        host, port = self.http
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
                                ws="websockets-sansio", ws_ping_interval=20.0, timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)
        configure_library_loggers()
        self.uvicorn.install_signal_handlers = lambda: None  # the CLI owns SIGINT/SIGTERM
        self.http_task = asyncio.create_task(self.uvicorn.serve(), name="http")
        while not self.uvicorn.started:
            if self.http_task.done():
                self.http_task.result()
            await asyncio.sleep(0.01)

    def _asyncapi(self) -> bytes:
        from services.asyncapi import asyncapi_document  # noqa: PLC0415

        return asyncapi_document(self.sb.names)

    async def stop(self) -> None:
        if self.smtp_server is not None:
            self.smtp_server.close()
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
            try:
                await asyncio.wait_for(self.http_task, 10)
            except (TimeoutError, asyncio.CancelledError):
                pass
        await self.sb.stop()
        if self.pool is not None:
            await self.pool.close()
