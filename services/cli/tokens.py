"""`token create` and `token revoke`: API bearer tokens."""

from __future__ import annotations

import click

from services.api.auth import create_token, revoke_token
from services.cli.common import open_switchboard


@click.group()
def token() -> None:
    """API bearer tokens for agents, supervisors, auditors and admins."""


@token.command("create")
@click.option("--role", type=click.Choice(("agent", "supervisor", "auditor", "admin")), required=True)
@click.option("--name", help="A name to revoke it by later (default: generated).")
@click.pass_context
def token_create(ctx: click.Context, role: str, name: str | None) -> None:
    """Print a new token (only its hash is stored)."""
    import psycopg  # noqa: PLC0415

    with open_switchboard(ctx) as sb, sb.database.connect(autocommit=True) as conn:
        try:
            name, value = create_token(conn, role, name)
        except psycopg.errors.UniqueViolation:
            raise click.ClickException(f"a token named {name!r} exists") from None
    click.echo(f"name: {name}", err=True)
    click.echo(value)


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """End the token NAME."""
    with open_switchboard(ctx) as sb, sb.database.connect(autocommit=True) as conn:
        if not revoke_token(conn, name):
            raise click.ClickException(f"no active token named {name!r}")
    click.echo(f"revoked {name}")
