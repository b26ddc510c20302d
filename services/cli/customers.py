"""`customer export` and `customer erase`: GDPR access requests and erasure."""

from __future__ import annotations

import sys
from uuid import UUID

import click

from services.cli.common import open_switchboard


@click.group()
def customer() -> None:
    """GDPR: access requests and erasure."""


@customer.command("export")
@click.argument("customer_id", type=click.UUID)
@click.pass_context
def customer_export(ctx: click.Context, customer_id: UUID) -> None:
    """Everything held about a customer, as JSON on stdout."""
    import msgspec  # noqa: PLC0415

    from services.gdpr import export_customer  # noqa: PLC0415 -- lazy: ~1.5 s of imports

    with open_switchboard(ctx) as sb:
        try:
            document = export_customer(sb.open_store(), sb.database.conninfo, customer_id)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(document)) + b"\n")


@customer.command("erase")
@click.argument("customer_id", type=click.UUID)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--relay-wait",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for the relay to publish the customer's last events before deleting them from NATS.",
)
@click.pass_context
def customer_erase(ctx: click.Context, customer_id: UUID, yes: bool, relay_wait: float) -> None:
    """Irreversibly erase a customer's personal data (the log stays append-only; their key is destroyed).

    Also removes what was derived from it: read models, the identity index, chat sessions, and the
    customer's messages and events in NATS. Running it again finishes an interrupted clean-up.
    """
    from datetime import UTC, datetime  # noqa: PLC0415

    from services.gdpr import CustomerNotFound, erase_customer  # noqa: PLC0415 -- lazy: ~1.5 s of imports

    # Asked only on a terminal: scripts (and the contract's `customer erase ID`) run unattended.
    if not yes and sys.stdin.isatty():
        click.confirm(f"Erase customer {customer_id}? This cannot be undone", abort=True)
    with open_switchboard(ctx) as sb:
        try:
            report = erase_customer(sb, customer_id, "cli", datetime.now(UTC), relay_wait=relay_wait)
        except CustomerNotFound as exc:
            raise click.ClickException(str(exc)) from None
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(report.summary())
    if not report.complete:
        ctx.exit(1)
