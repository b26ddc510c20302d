"""`up` and `serve`: the roles of Switchboard in this process until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import click

from services.cli.common import ROLE_CHOICES, embedded_servers, hostport, settings_of
from services.platform.settings import Settings, ensure_secrets


@click.command()
@click.option("--http", "http", default="127.0.0.1:8000", show_default=True, help="HOST:PORT for HTTP and WebSocket.")
@click.option("--smtp", "smtp", default="127.0.0.1:2525", show_default=True, help="HOST:PORT for the SMTP listener.")
@click.pass_context
def up(ctx: click.Context, http: str, smtp: str) -> None:
    """Single-node mode: embedded NATS and PostgreSQL under the data dir, every role in one process."""
    from channels.email.trust import single_node_trust  # noqa: PLC0415 -- lazy: the email parser (bs4), only for up

    settings = single_node_trust(ensure_secrets(settings_of(ctx)))
    http_addr, smtp_addr = hostport(http, "--http"), hostport(smtp, "--smtp")
    notes: list[str] = []
    with embedded_servers(settings, own=True, notes=notes) as settings:
        asyncio.run(_serve(settings, ROLE_CHOICES, http_addr, smtp_addr, announce=True, notes=notes))


@click.command()
@click.argument("roles", nargs=-1, required=True, type=click.Choice(ROLE_CHOICES))
@click.option("--http", "http", default="0.0.0.0:8000", show_default=True, help="HOST:PORT (gateway, api).")
@click.option("--smtp", "smtp", default="0.0.0.0:2525", show_default=True, help="HOST:PORT (gateway).")
@click.pass_context
def serve(ctx: click.Context, roles: tuple[str, ...], http: str, smtp: str) -> None:
    """Production mode: run ROLES against external NATS and PostgreSQL (run as many as you like)."""
    from services.bootstrap import DATABASE_ONLY_ROLES  # noqa: PLC0415 -- lazy, as the server below

    settings = settings_of(ctx)
    needed = (
        ("database_url", "master_key")
        if set(roles) <= set(DATABASE_ONLY_ROLES)
        else ("nats_url", "database_url", "master_key")
    )
    missing = [name for name in needed if not getattr(settings, name)]
    if missing:
        raise click.ClickException("serve needs " + ", ".join("SWITCHBOARD_" + m.upper() for m in missing))
    asyncio.run(_serve(settings, tuple(dict.fromkeys(roles)), hostport(http, "--http"), hostport(smtp, "--smtp")))


async def _serve(settings: Settings, roles, http, smtp, announce: bool = False, notes: Sequence[str] = ()) -> None:
    # lazy, like the server below: `switchboard --help` and the other verbs do not pay for them
    from services.platform.database import redact_database_url  # noqa: PLC0415
    from services.platform.nats_client import redact_nats_url  # noqa: PLC0415
    from services.server import Server  # noqa: PLC0415 -- lazy: litestar, uvicorn and every role (~2 s)

    server = Server(settings, roles, http=http, smtp=smtp)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if announce:
        data_dir = settings.data_dir.resolve()
        click.echo(f"Switchboard is up (data dir {data_dir})", err=True)
        click.echo(f"  console and API  {server.http_url}/", err=True)
        click.echo(f"  API schema       {server.http_url}/schema/openapi.json", err=True)
        click.echo(f"  chat WebSocket   ws://{http[0]}:{http[1]}/channels/chat/ws", err=True)
        click.echo(f"  SMTP             smtp://{smtp[0]}:{smtp[1]}", err=True)
        click.echo(f"  NATS             {redact_nats_url(settings.nats_url)}", err=True)
        click.echo(f"  PostgreSQL       {redact_database_url(settings.database_url)}", err=True)
        for note in notes:
            click.echo(note, err=True)
        click.echo(f"  admin token      {data_dir / 'admin.token'}", err=True)
        click.echo("Ctrl-C stops it; data stays in the data dir.", err=True)
    await stop.wait()
    click.echo("stopping…", err=True)
    await server.stop()
