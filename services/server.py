"""Runs Switchboard's roles in this process: the HTTP server, the SMTP listener and the workers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import uvicorn
from psycopg_pool import AsyncConnectionPool

from channels.chat import ChatSessions
from channels.email.smtp import start_smtp
from channels.publish import Publisher
from channels.routes import channel_handlers
from services.asyncapi import asyncapi_document
from services.api.app import build_app
from services.api.context import Services
from services.bootstrap import Switchboard
from services.platform.logs import configure_library_loggers, get_logger
from services.platform.settings import Settings
from services.platform.streams import Names
from channels.chat_gateway import ChatGateway
from channels.email.pool import close_parser

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
        self.chat_gateway = None

    @property
    def http_url(self) -> str | None:
        return f"http://{self.http[0]}:{self.http[1]}" if self.http else None

    async def start(self) -> None:
        await self.sb.start(self.roles)
        if self.http and ({"gateway", "api"} & set(self.roles)):
            await self._start_http()
        if self.smtp and "gateway" in self.roles and self.services is not None:
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
        if "gateway" in self.roles:
            await self._start_chat()
        app = build_app(self.services, self.roles, channel_handlers())
        host, port = self.http
        # proxy_headers off: uvicorn would believe X-Forwarded-* from 127.0.0.1 by default; which
        # proxies to believe is SWITCHBOARD_TRUSTED_PROXIES' call (channels/proxies.py).
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
                                ws="websockets-sansio", ws_ping_interval=20.0, timeout_graceful_shutdown=5,
                                ws_max_size=settings.chat_max_frame_bytes, proxy_headers=False)
        self.uvicorn = uvicorn.Server(config)
        configure_library_loggers()
        self.uvicorn.install_signal_handlers = lambda: None  # the CLI owns SIGINT/SIGTERM
        self.http_task = asyncio.create_task(self.uvicorn.serve(), name="http")
        while not self.uvicorn.started:
            if self.http_task.done():
                self.http_task.result()
            await asyncio.sleep(0.01)

    async def _start_chat(self) -> None:
        if not self.settings.chat_identity_secret:
            # `serve` generates no secrets: without this one every identity_hash is refused (401).
            log.warning("chat_identity_secret_missing",
                        detail="SWITCHBOARD_CHAT_IDENTITY_SECRET is not set: no chat visitor can be verified")
        self.chat_gateway = ChatGateway(self.settings, self.sb.names)
        await self.chat_gateway.start(self.sb.nc, self.sb.js)
        self.services.extra["chat_gateway"] = self.chat_gateway

    def _asyncapi(self) -> bytes:
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
        if self.services is not None:
            await close_parser(self.services)
        if self.chat_gateway is not None:
            await self.chat_gateway.stop()
        await self.sb.stop()
        if self.pool is not None:
            await self.pool.close()
