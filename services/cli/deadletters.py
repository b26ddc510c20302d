"""`deadletters list` and `deadletters redrive`: interactions the core could not process."""

from __future__ import annotations

import asyncio

import click

from services.cli.common import embedded_servers, settings_of
from services.platform.settings import ensure_secrets


@click.group()
def deadletters() -> None:
    """Interactions the core could not process."""


@deadletters.command("list")
@click.pass_context
def deadletters_list(ctx: click.Context) -> None:
    """One line per dead letter: sequence, original subject, deliveries, reason."""
    from services.platform.deadletters import list_dead_letters  # noqa: PLC0415 -- lazy: nats-py

    settings = ensure_secrets(settings_of(ctx))
    with embedded_servers(settings) as settings:
        letters = asyncio.run(list_dead_letters(settings))
        for letter in letters:
            click.echo(f"{letter.seq}\t{letter.subject}\t{letter.deliveries}\t{letter.reason}")
    click.echo(f"{len(letters)} dead letter(s)", err=True)


@deadletters.command("redrive")
@click.argument("sequences", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Re-drive every dead letter.")
@click.pass_context
def deadletters_redrive(ctx: click.Context, sequences: tuple[int, ...], all_: bool) -> None:
    """Publish dead letters again to their original subjects (after fixing the cause)."""
    from services.platform.deadletters import redrive  # noqa: PLC0415 -- lazy: nats-py

    if not sequences and not all_:
        raise click.UsageError("name SEQUENCES or use --all")
    settings = ensure_secrets(settings_of(ctx))
    with embedded_servers(settings) as settings:
        n = asyncio.run(redrive(settings, None if all_ else set(sequences)))
    click.echo(f"re-drove {n} message(s)")
