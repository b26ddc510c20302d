"""`audit verify` and `audit anchor`: the hash chain of the log, and its signed head kept outside the database."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from services.cli.common import open_switchboard

if TYPE_CHECKING:
    from services.bootstrap import Switchboard
    from services.platform.eventstore.anchor import Anchor


@click.group()
def audit() -> None:
    """Check that the event log was not altered; anchor its head outside the database."""


@audit.command("verify")
@click.option(
    "--anchor",
    "anchor_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also check the log against the anchor in this file (written by `audit anchor --file`).",
)
@click.option("--anchor-kv", is_flag=True, help="Also check the log against the anchor in the NATS KV bucket.")
@click.option("--kv-bucket", default=None, help="The KV bucket of --anchor-kv [SB_AUDIT_ANCHOR].")
@click.pass_context
def audit_verify(ctx: click.Context, anchor_path: Path | None, anchor_kv: bool, kv_bucket: str | None) -> None:
    """Recompute the hash chain of the whole log: exit 0 with a count, or 1 naming the first bad position.

    With an anchor (kept outside the database), also find a log that was truncated or rolled back to an
    older state: it must still hold the anchored position with the anchored link.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from services.platform.eventstore import anchor as anchors  # noqa: PLC0415 -- lazy: psycopg
    from services.platform.eventstore.recorder import ChainBreak, verify_chain  # noqa: PLC0415 -- lazy: psycopg

    if anchor_path and anchor_kv:
        raise click.UsageError("give --anchor PATH or --anchor-kv, not both")
    failed = False
    with open_switchboard(ctx) as sb:
        store = sb.open_store()
        with (
            sb.database.connect() as conn,
            tqdm(total=store.max_position(), unit="ev", disable=not sys.stderr.isatty(), desc="verify") as bar,
        ):
            try:
                count = verify_chain(conn, store.master.chain_key, progress=bar.update)
            except ChainBreak as exc:
                click.echo(f"TAMPERED: first bad position {exc.position}: {exc.reason}", err=True)
                click.echo(f"bad position {exc.position}")
                failed = True
            if anchor_path or anchor_kv:
                try:
                    if anchor_path:
                        anchor = anchors.read_file(anchor_path, store.master.anchor_key)
                        if anchor is None:
                            raise anchors.AnchorError(f"anchor not found: no file {anchor_path}")
                    else:
                        anchor = asyncio.run(_read_kv_anchor(sb, kv_bucket, store.master.anchor_key))
                    anchors.check(conn, anchor)
                except anchors.AnchorError as exc:
                    click.echo(f"TAMPERED: {exc}", err=True)
                    click.echo(str(exc))
                    failed = True
                else:
                    click.echo(f"anchor: position {anchor.position} of {anchor.at.isoformat()} still in the log")
    if failed:
        ctx.exit(1)
    click.echo(f"intact: {count} events")


@audit.command("anchor")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the signed head to this file (atomically; keep it off the database's machine).",
)
@click.option("--kv", is_flag=True, help="Write the signed head to the NATS KV bucket.")
@click.option("--kv-bucket", default=None, help="The KV bucket of --kv [SB_AUDIT_ANCHOR].")
@click.pass_context
def audit_anchor(ctx: click.Context, path: Path | None, kv: bool, kv_bucket: str | None) -> None:
    """Write the chain's current head (position, link, time), signed, outside the database.

    The anchor only moves forward: if the log no longer holds the previous anchor (truncated or rolled
    back), nothing is written and the exit status is 1.
    """
    from datetime import UTC, datetime  # noqa: PLC0415

    from services.platform.eventstore import anchor as anchors  # noqa: PLC0415 -- lazy: psycopg

    if bool(path) == kv:
        raise click.UsageError("give --file PATH or --kv")
    with open_switchboard(ctx) as sb:
        master = sb.open_store().master
        try:
            if path:
                previous = anchors.read_file(path, master.anchor_key)
                with sb.database.connect() as conn:
                    new = anchors.next_anchor(conn, master.chain_key, master.anchor_key, previous, datetime.now(UTC))
                if new is not None:
                    anchors.write_file(path, new)
            else:
                new, previous = asyncio.run(_write_kv_anchor(sb, kv_bucket))
        except anchors.AnchorError as exc:
            click.echo(f"TAMPERED: {exc}", err=True)
            click.echo(str(exc))
            ctx.exit(1)
    if new is None:
        held = f"position {previous.position}" if previous is not None else "an empty log"
        click.echo(f"anchor unchanged: {held}")
    else:
        click.echo(f"anchored position {new.position} ({new.chain[:16]}…) at {new.at.isoformat()}")


def _kv_bucket(sb: Switchboard, bucket: str | None) -> str:
    from services.platform.eventstore.anchor import ANCHOR_BUCKET  # noqa: PLC0415 -- lazy: psycopg

    return bucket or sb.names.stream(ANCHOR_BUCKET)


async def _read_kv_anchor(sb: Switchboard, bucket: str | None, key: bytes) -> Anchor:
    from services.platform.eventstore import anchor as anchors  # noqa: PLC0415 -- lazy: psycopg

    await sb.connect_nats_only("switchboard-audit")
    try:
        kv = await anchors.open_bucket(sb.jetstream(), _kv_bucket(sb, bucket), create=False)
        found = (await anchors.read_kv(kv, key))[0] if kv is not None else None
        if found is None:
            raise anchors.AnchorError(f"anchor not found: nothing in KV bucket {_kv_bucket(sb, bucket)}")
        return found
    finally:
        await sb.close_nats()


async def _write_kv_anchor(sb: Switchboard, bucket: str | None) -> tuple[Anchor | None, Anchor | None]:
    from datetime import UTC, datetime  # noqa: PLC0415

    from services.relay.anchor import refresh_kv_anchor  # noqa: PLC0415 -- lazy: NATS relay

    await sb.connect_nats_only("switchboard-audit")
    try:
        return await refresh_kv_anchor(sb, _kv_bucket(sb, bucket), datetime.now(UTC))
    finally:
        await sb.close_nats()
