"""Runs Switchboard's roles in this process: the HTTP server, the SMTP listener and the workers.

A `Server` owns the listeners and nothing else: the process-wide dependencies are its Switchboard's,
the HTTP application's are its `Services`, both built by the composition root (services.bootstrap).
It starts them in that order and stops them in the reverse one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from channels.chat_gateway import ChatGateway
from channels.email.pool import close_parser
from channels.email.smtp import SMTPListener, start_smtp
from channels.routes import channel_handlers
from services.api.app import build_app
from services.api.context import Services
from services.api.fastpath import WebhookFastPath
from services.bootstrap import Switchboard, close_http_services, open_http_services
from services.platform.logs import configure_library_loggers, get_logger
from services.platform.settings import Settings
from services.platform.streams import Names

log = get_logger(__name__)

# The HTTP/1.1 parser under uvicorn. "httptools" (llhttp, C) was chosen by measurement
# (tests/benchmarks/webhooks.py, which also measures "h11", pure Python, the earlier one, as the
# baseline); both keep uvicorn's graceful shutdown, WebSocket limits and proxy-header switch.
HTTP_PARSERS = ("httptools", "h11")


class _Uvicorn(uvicorn.Server):
    """uvicorn that leaves SIGINT and SIGTERM alone: the CLI owns them and stops every role, not just HTTP.

    Since 0.29 uvicorn takes them over with signal.signal() for as long as `serve` runs (its old
    `install_signal_handlers` hook is gone), which replaced the CLI's handlers.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _HeadWithBody:
    """The transport as one response cycle sees it: the response's head (status line and headers) is
    held and goes out with the first body bytes, in one send() instead of two.

    On loopback or a LAN a send() is the dearest step of a small JSON answer (the kernel delivers it
    to the reader at once); agent API reads spent about a quarter of their CPU in them. The head is
    never held past the loop iteration that wrote it (a stream that waits for its first chunk, an
    answer without a body still get their head at once), nor past the cycle's end or a close; a
    `100 Continue` interim answer is not held at all.
    """

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
            self._head = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the transport's own
        return getattr(self._transport, name)


class _HttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering a request llhttp cannot parse (a control byte in a
    header, a broken request line) with the contract's JSON 400 instead of uvicorn's plain text,
    and sending each response's head with its body (`_HeadWithBody`)."""

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        transport = cycle.transport = _HeadWithBody(self.transport, self.loop)
        completed = cycle.on_response

        def on_response() -> None:
            transport.flush()
            completed()

        cycle.on_response = on_response
        super()._start_asgi_task(cycle, app)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "malformed", "detail": msg}).encode()
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


class Server:
    def __init__(
        self,
        settings: Settings,
        roles: tuple[str, ...],
        *,
        http: tuple[str, int] | None = None,
        smtp: tuple[str, int] | None = None,
        names: Names | None = None,
        switchboard: Switchboard | None = None,
        http_parser: str = HTTP_PARSERS[0],
    ):
        if http_parser not in HTTP_PARSERS:
            raise ValueError(f"unknown HTTP parser {http_parser!r}")
        self.http_parser = http_parser
        self.settings = settings
        self.roles = roles
        self.http = http
        self.smtp = smtp
        self.sb = switchboard if switchboard is not None else Switchboard(settings, names or Names())
        self.uvicorn: uvicorn.Server | None = None
        self.http_task: asyncio.Task[None] | None = None
        self.smtp_server: SMTPListener | None = None
        self.services: Services | None = None
        self.chat_gateway: ChatGateway | None = None

    @property
    def http_url(self) -> str | None:
        return f"http://{self.http[0]}:{self.http[1]}" if self.http else None

    async def start(self) -> None:
        await self.sb.start(self.roles)
        if self.http and ({"gateway", "api"} & set(self.roles)):
            await self._start_http(self.http)
        if self.smtp and "gateway" in self.roles and self.services is not None:
            self.smtp_server = await start_smtp(self.services, *self.smtp)
            self.smtp = (self.smtp[0], self.smtp_server.port)  # the port bound, when asked for any (0)

    async def _start_http(self, address: tuple[str, int]) -> None:
        self.services = services = await open_http_services(self.sb)
        if "gateway" in self.roles:
            services.chat_gateway = await self._start_chat()
        app: Any = build_app(services, self.roles, channel_handlers())
        if "gateway" in self.roles:
            # The provider webhooks skip the framework's per-request stack (services/api/fastpath.py).
            app = WebhookFastPath(app, services, self.settings.max_body_bytes)
        host, port = address
        # proxy_headers off: uvicorn would believe X-Forwarded-* from 127.0.0.1 by default; which
        # proxies to believe is SWITCHBOARD_TRUSTED_PROXIES' call (channels/proxies.py).
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=_HttpTools if self.http_parser == "httptools" else self.http_parser,
            ws="websockets-sansio",
            ws_ping_interval=20.0,
            timeout_graceful_shutdown=5,
            ws_max_size=self.settings.chat_max_frame_bytes,
            proxy_headers=False,
        )
        self.uvicorn = server = _Uvicorn(config)
        configure_library_loggers()
        self.http_task = task = asyncio.create_task(server.serve(), name="http")
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        self.http = (host, server.servers[0].sockets[0].getsockname()[1])  # the port bound, when asked for any (0)

    async def _start_chat(self) -> ChatGateway:
        if not self.settings.chat_identity_secret:
            # `serve` generates no secrets: without this one every identity_hash is refused (401).
            log.warning(
                "chat_identity_secret_missing",
                detail="SWITCHBOARD_CHAT_IDENTITY_SECRET is not set: no chat visitor can be verified",
            )
        gateway = self.chat_gateway = ChatGateway(self.settings, self.sb.names)  # type: ignore[no-untyped-call]
        await gateway.start(self.sb.nc, self.sb.jetstream())
        return gateway

    async def stop(self) -> None:
        if self.smtp_server is not None:
            self.smtp_server.close()
        if self.uvicorn is not None and self.http_task is not None:
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
        if self.services is not None:
            await close_http_services(self.services)
