"""`replay`: the stored events as JSON Lines."""

from __future__ import annotations

import sys
from uuid import UUID

import click

from services.cli.common import open_switchboard


class _IsoTime(click.ParamType):
    """An ISO 8601 date or time (`2024-06-01`, `2024-06-01T12:00:00.5+02:00`, `…Z`); UTC when no zone is given."""

    name = "TIME"

    def convert(self, value, param, ctx):
        from datetime import UTC, datetime  # noqa: PLC0415

        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@click.command()
@click.option(
    "--customer",
    "customer",
    type=click.UUID,
    help="Only this customer's events: theirs, their cases', and those of customers merged into them.",
)
@click.option(
    "--from", "from_position", type=click.IntRange(min=1), default=1, show_default=True, help="Start at this position."
)
@click.option(
    "--until",
    "until",
    type=_IsoTime(),
    help="Stop after the events recorded at this time (ISO 8601; UTC unless a zone is given).",
)
@click.pass_context
def replay(ctx: click.Context, customer: UUID | None, from_position: int, until) -> None:
    """Write the stored events, oldest first, as JSON Lines to stdout.

    Each line: position, stream_id, stream_version, type, timestamp (recorded at, UTC), payload
    (personal fields decrypted), redacted (true once the customer was erased).
    """
    from services.replay import replay_events  # noqa: PLC0415 -- lazy: event store and crypto

    with open_switchboard(ctx) as sb:
        count = replay_events(
            sb.open_store(),
            sys.stdout.buffer,
            customer=customer,
            after=from_position - 1,
            until=until,
            progress=sys.stderr.isatty(),
            conninfo=sb.database.conninfo,
        )
    click.echo(f"{count} events", err=True)
