"""`projections rebuild`: read models built again from the event log."""

from __future__ import annotations

import sys

import click

from services.cli.common import open_switchboard


@click.group()
def projections() -> None:
    """Read models built from the event log."""


@projections.command("rebuild")
@click.argument("name", required=False)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Processes decrypting the log's pages beside this one (0: none). Default: one per CPU on a "
    "log of 100,000 events or more.",
)
@click.pass_context
def projections_rebuild(ctx: click.Context, name: str | None, workers: int | None) -> None:
    """Rebuild read models (all, or NAME) from the event store; prints events/s."""
    import time  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from projections.rebuild import RebuildError  # noqa: PLC0415 -- lazy: event store
    from projections.runner import ProjectionRunner, all_projections  # noqa: PLC0415 -- lazy: event store

    known = [p.name for p in all_projections()]
    if name and name not in known:
        raise click.BadParameter(f"unknown projection {name!r}; known: {', '.join(known)}", param_hint="NAME")
    with open_switchboard(ctx) as sb:
        store = sb.open_store()
        selected = [p for p in all_projections() if not name or p.name == name]
        runner = ProjectionRunner(store, selected, batch_size=5000)
        total = store.max_position()
        t0 = time.perf_counter()
        with tqdm(total=total, unit="ev", disable=not sys.stderr.isatty(), desc="rebuild") as bar:
            try:
                applied = runner.rebuild(bar.update, workers=workers)
            except RebuildError as exc:
                raise click.ClickException(str(exc)) from exc
        elapsed = time.perf_counter() - t0
    rate = applied / elapsed if elapsed > 0 else 0.0
    click.echo(
        f"rebuilt {', '.join(p.name for p in selected)}: {applied} events in {elapsed:.2f}s ({rate:,.0f} events/s)"
    )
