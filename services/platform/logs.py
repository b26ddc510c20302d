"""structlog, configured once per process.

JSON lines when not on a terminal (production, CI), readable columns on one. Every hop binds the
interaction id as `correlation_id` through contextvars, so one grep follows a message end to end.
Log ids, never names, numbers, addresses or message text.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str = "auto", level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (faststream, uvicorn, psycopg) go through
    # the same renderer, at warning and above so their chatter does not drown ours.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # uvicorn logs request lines with their query strings at INFO, and a chat token travels in the
    # WebSocket URL's query: keep those loggers at WARNING, through our renderer only.
    configure_library_loggers()


def configure_library_loggers() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "nats", "aiosmtpd", "mail.log"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
        lib.setLevel(logging.WARNING)


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
