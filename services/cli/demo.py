"""`demo`: realistic multi-channel traffic through the real channel endpoints of a running instance."""

from __future__ import annotations

import asyncio

import click

from services.cli.common import hostport, settings_of
from services.platform.settings import ensure_secrets


@click.command()
@click.option("--customers", default=20, show_default=True, help="How many customers.")
@click.option("--interactions", default=100, show_default=True, help="How many interactions in all.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The running instance's HTTP URL.")
@click.option("--smtp", "smtp", default="127.0.0.1:2525", show_default=True, help="Its SMTP listener.")
@click.pass_context
def demo(ctx: click.Context, customers: int, interactions: int, url: str, smtp: str) -> None:
    """Drive realistic multi-channel traffic through the real channel endpoints of a running instance."""
    from services.demo import run_demo  # noqa: PLC0415 -- lazy: httpx and websockets

    settings = ensure_secrets(settings_of(ctx))
    sent = asyncio.run(run_demo(settings, url, hostport(smtp, "--smtp"), customers, interactions))
    click.echo(f"sent {sent} interactions")
