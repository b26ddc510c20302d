"""`quarantine list` and `quarantine retry`: the events a projection or the relay set aside."""

from __future__ import annotations

import asyncio

import click

from services.cli.common import open_switchboard


@click.group()
def quarantine() -> None:
    """Events a projection or the relay could not handle, set aside so that they could go on."""


@quarantine.command("list")
@click.pass_context
def quarantine_list(ctx: click.Context) -> None:
    """One line per quarantined event: consumer, position, type, event id, attempts, last failure, reason."""
    from services.platform import quarantine as quarantined  # noqa: PLC0415 -- lazy: psycopg

    with open_switchboard(ctx) as sb, sb.open_store().datastore.transaction(commit=False) as curs:
        entries = quarantined.listing(curs)
    for e in entries:
        click.echo(
            f"{e.consumer}\t{e.position}\t{e.event_type}\t{e.event_id}\t{e.attempts}\t"
            f"{e.last_failed_at.isoformat()}\t{e.reason}"
        )
    click.echo(f"{len(entries)} quarantined event(s)", err=True)


@quarantine.command("retry")
@click.option(
    "--projection",
    "projection_names",
    multiple=True,
    metavar="NAME",
    help="Only this projection's events (repeatable).",
)
@click.option("--relay", is_flag=True, help="Only the relay's events (with --projection: those too).")
@click.option("--position", type=click.IntRange(min=1), help="Only the event at this position.")
@click.pass_context
def quarantine_retry(ctx: click.Context, projection_names: tuple[str, ...], relay: bool, position: int | None) -> None:
    """Handle quarantined events again (after fixing the cause); each that succeeds leaves quarantine.

    Without --projection and --relay: every projection's and the relay's. Exit 1 while some still fail.
    """
    from projections.runner import ProjectionRunner, all_projections  # noqa: PLC0415 -- lazy: event store
    from services.relay.relay import retry_quarantined  # noqa: PLC0415 -- lazy: NATS relay

    known = [p.name for p in all_projections()]
    for name in projection_names:
        if name not in known:
            raise click.BadParameter(
                f"unknown projection {name!r}; known: {', '.join(known)}", param_hint="--projection"
            )
    everything = not projection_names and not relay
    with open_switchboard(ctx) as sb:
        selected = [p for p in all_projections() if everything or p.name in projection_names]
        applied, failing = (
            ProjectionRunner(sb.open_store(), selected).retry_quarantined(position) if selected else (0, 0)
        )
        if everything or relay:

            async def retry_relay() -> tuple[int, int]:
                await sb.connect_nats()
                try:
                    return await retry_quarantined(sb, position)
                finally:
                    await sb.close_nats()

            published, still = asyncio.run(retry_relay())
            applied, failing = applied + published, failing + still
    click.echo(f"{applied} event(s) handled and released, {failing} still quarantined")
    if failing:
        ctx.exit(1)
