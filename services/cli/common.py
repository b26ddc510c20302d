"""What every verb shares: the settings on the click context, the servers to use, the composition root."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from services.platform.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    clear_run_info,
    embedded_credentials,
    read_run_info,
    with_credentials,
    write_run_info,
)
from services.platform.settings import Settings, ensure_secrets

if TYPE_CHECKING:
    from services.bootstrap import Switchboard

ROLE_CHOICES = (
    "gateway",
    "core",
    "projector",
    "api",
    "relay",
    "router",
    "timer",
    "classifier",
    "automation",
    "campaigner",
)


def hostport(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return host, int(port)


@contextlib.contextmanager
def embedded_servers(settings: Settings, *, own: bool = False, notes: list[str] | None = None) -> Iterator[Settings]:
    """Settings with NATS and PostgreSQL URLs: external, a running `up`'s, or started here.

    The embedded servers of a data dir ask for the passwords kept in its secrets.json; the URLs
    handed on carry them. `notes` (if given) gets a line naming where PostgreSQL keeps its files.
    """
    data_dir = settings.data_dir.resolve()
    started = []
    urls: dict[str, str] = {}
    credentials = None if settings.nats_url and settings.database_url else embedded_credentials(data_dir)
    try:
        if not settings.nats_url:
            running = None if own else read_run_info(data_dir, "nats")
            if running:
                urls["nats_url"] = with_credentials(running.url, credentials.nats_user, credentials.nats_password)
            else:
                if own and read_run_info(data_dir, "nats"):
                    raise click.ClickException(f"a switchboard is already running on {data_dir}")
                nats_server = EmbeddedNats(
                    data_dir / "nats",
                    user=credentials.nats_user,
                    password=credentials.nats_password,
                    sync=settings.nats_sync_interval,
                ).start()
                started.append(("nats", nats_server))
                urls["nats_url"] = nats_server.url
        if not settings.database_url:
            running = None if own else read_run_info(data_dir, "postgres")
            if running:
                urls["database_url"] = with_credentials(running.url, "postgres", credentials.postgres_password)
            else:
                pg = EmbeddedPostgres(data_dir / "postgres", password=credentials.postgres_password).start()
                started.append(("postgres", pg))
                urls["database_url"] = pg.url
                if notes is not None:
                    notes.append(f"  PostgreSQL data  {pg.location}")
        if credentials is not None and notes is not None:
            notes.append(f"  server passwords {data_dir / 'secrets.json'}")
        if own:
            import os  # noqa: PLC0415

            for name, server in started:
                write_run_info(data_dir, name, server.address, os.getpid())
        yield settings.with_(**urls)
    finally:
        for name, server in reversed(started):
            server.stop()
            if own:
                clear_run_info(data_dir, name)


def settings_of(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@contextlib.contextmanager
def open_switchboard(ctx: click.Context) -> Iterator[Switchboard]:
    """The composition root for a one-off verb: servers found or started, the schema in place, closed after."""
    settings = ensure_secrets(settings_of(ctx))
    with embedded_servers(settings) as settings:
        from services.bootstrap import Switchboard  # noqa: PLC0415 -- lazy: the event store and every worker

        sb = Switchboard(settings)
        sb.create_schema()
        try:
            yield sb
        finally:
            sb.open_store().datastore.close()
