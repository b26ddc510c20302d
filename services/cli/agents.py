"""`agent create`, `agent disable`, `agent enable`, `agent list`: the people who sign in to the console."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from events.agent import ROLES
from services.cli.common import open_switchboard

_BY = "cli"  # recorded as `by` of what an operator does from the command line


@click.group()
def agent() -> None:
    """Agents: who signs in to the console and the API, with which role, teams, skills and capacity."""


@agent.command("create")
@click.argument("email")
@click.option("--name", required=True, help="The agent's name, as colleagues and customers see it.")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What they may do.")
@click.option("--team", "teams", multiple=True, help="A team they belong to (repeat for more; created if missing).")
@click.option("--skill", "skills", multiple=True, help="A skill routing may ask for (repeat for more).")
@click.option("--capacity", type=click.IntRange(min=0), default=5, show_default=True, help="Open cases at once.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of generating one.",
)
@click.pass_context
def agent_create(
    ctx: click.Context,
    email: str,
    name: str,
    role: str,
    teams: tuple[str, ...],
    skills: tuple[str, ...],
    capacity: int,
    password_stdin: bool,
) -> None:
    """Create the agent EMAIL and print their password (generated unless --password-stdin).

    Only the password's argon2id hash is stored; the printed password is shown this once.

    \b
    Example:
      switchboard agent create ana@example.com --name "Ana Pérez" --role agent --team billing --skill es
    """
    from events.sanitize import clean_text  # noqa: PLC0415
    from services.agents import commands, passwords  # noqa: PLC0415 -- lazy: the event store

    if "@" not in email:
        raise click.BadParameter("an email needs an @", param_hint="EMAIL")
    generated = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = generated = passwords.generate_password()
    try:
        passwords.check_password(password)
    except passwords.PasswordRejected as exc:
        raise click.ClickException(str(exc)) from None
    labels = [[clean_text(t).strip() for t in group if clean_text(t).strip()] for group in (teams, skills)]
    new = commands.NewAgent(
        email=clean_text(email).strip(),
        name=clean_text(name).strip(),
        role=role,  # type: ignore[arg-type]  # click.Choice(ROLES)
        teams=labels[0],
        skills=labels[1],
        capacity=capacity,
    )
    with open_switchboard(ctx) as sb:
        try:
            done = commands.create_agent(sb.open_store(), new, password, datetime.now(UTC))
        except commands.AgentExists:
            raise click.ClickException(f"an agent with the email {new.email} exists") from None
    click.echo(f"agent {done.aggregate.id} ({done.aggregate.role})", err=True)
    if generated is not None:
        click.echo(generated)


def _switch(ctx: click.Context, email: str, disabled: bool) -> None:
    from services.agents import commands  # noqa: PLC0415 -- lazy: the event store
    from services.core.commands import NotFound  # noqa: PLC0415

    with open_switchboard(ctx) as sb:
        try:
            done = commands.change_agent(
                sb.open_store(), commands.agent_id_of(email), _BY, datetime.now(UTC), disabled=disabled
            )
        except NotFound:
            raise click.ClickException(f"no agent with the email {email}") from None
    click.echo(f"{'disabled' if disabled else 'enabled'} agent {done.aggregate.id}")


@agent.command("disable")
@click.argument("email")
@click.pass_context
def agent_disable(ctx: click.Context, email: str) -> None:
    """Disable the agent EMAIL: every session of theirs ends at once and they can no longer sign in."""
    _switch(ctx, email, True)


@agent.command("enable")
@click.argument("email")
@click.pass_context
def agent_enable(ctx: click.Context, email: str) -> None:
    """Let the disabled agent EMAIL sign in again."""
    _switch(ctx, email, False)


@agent.command("list")
@click.pass_context
def agent_list(ctx: click.Context) -> None:
    """Every agent, one a line: id, email, role, status, teams, and whether disabled."""
    from services.agents import commands  # noqa: PLC0415 -- lazy: the event store

    with open_switchboard(ctx) as sb:
        agents = commands.all_agents(sb.open_store())
    for a in agents:
        state = "disabled" if a.disabled else a.status
        click.echo(f"{a.id}\t{a.email}\t{a.role}\t{state}\t{','.join(a.teams)}")
