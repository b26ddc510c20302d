"""`switchboard`: the one command for operators, auditors and developers.

Every verb takes --data-dir (or SWITCHBOARD_DATA_DIR). Without SWITCHBOARD_NATS_URL and
SWITCHBOARD_DATABASE_URL a verb uses the embedded servers of a `switchboard up` running on that data
dir, or starts them for its own run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from uuid import UUID

import click

from services.platform.settings import Settings, ensure_secrets, load_settings
from services.platform.embedded import (
    EmbeddedNats, EmbeddedPostgres, clear_run_info, embedded_credentials, read_run_info, with_credentials,
    write_run_info)
from services.platform.logs import configure_logging
from services.api.auth import create_token, revoke_token

ROLE_CHOICES = ("gateway", "core", "projector", "api", "relay")


def _hostport(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return host, int(port)


@contextlib.contextmanager
def embedded_servers(settings: Settings, *, own: bool = False, notes: list[str] | None = None) -> Iterator[Settings]:
    """Settings with NATS and PostgreSQL URLs: external, a running `up`'s, or started here.

    The embedded servers of a data dir ask for the passwords kept in its secrets.json; the URLs
    handed on carry them. `notes` (if given) gets a line naming where PostgreSQL keeps its files.
    """
    data_dir = settings.data_dir.resolve()
    started = []
    urls: dict[str, str] = {}
    credentials = None if settings.nats_url and settings.database_url else embedded_credentials(data_dir)
    try:
        if not settings.nats_url:
            running = None if own else read_run_info(data_dir, "nats")
            if running:
                urls["nats_url"] = with_credentials(running.url, credentials.nats_user, credentials.nats_password)
            else:
                if own and read_run_info(data_dir, "nats"):
                    raise click.ClickException(f"a switchboard is already running on {data_dir}")
                nats_server = EmbeddedNats(data_dir / "nats", user=credentials.nats_user,
                                           password=credentials.nats_password).start()
                started.append(("nats", nats_server))
                urls["nats_url"] = nats_server.url
        if not settings.database_url:
            running = None if own else read_run_info(data_dir, "postgres")
            if running:
                urls["database_url"] = with_credentials(running.url, "postgres", credentials.postgres_password)
            else:
                pg = EmbeddedPostgres(data_dir / "postgres", password=credentials.postgres_password).start()
                started.append(("postgres", pg))
                urls["database_url"] = pg.url
                if notes is not None:
                    notes.append(f"  PostgreSQL data  {pg.location}")
        if credentials is not None and notes is not None:
            notes.append(f"  server passwords {data_dir / 'secrets.json'}")
        if own:
            import os  # noqa: PLC0415

            for name, server in started:
                write_run_info(data_dir, name, server.address, os.getpid())
        yield settings.with_(**urls)
    finally:
        for name, server in reversed(started):
            server.stop()
            if own:
                clear_run_info(data_dir, name)


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


class _Main(click.Group):
    """Turns a database or NATS that cannot be used into one line on stderr and exit 1, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from services.platform.database import DatabaseUnavailable, DatabaseUrlError  # noqa: PLC0415
            from services.platform.nats_client import NatsSettingsError  # noqa: PLC0415

            if isinstance(exc, (DatabaseUnavailable, DatabaseUrlError, NatsSettingsError)):
                raise click.ClickException(str(exc)) from None
            raise


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="SWITCHBOARD_DATA_DIR",
              default=None, help="Where embedded servers keep data, tokens and generated secrets [.switchboard].")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """Switchboard: an event-sourced omnichannel contact centre.

    Every touchpoint of every customer, on every channel, recorded once, forever, replayable.
    Start with `switchboard up`, then open the printed URL.
    """
    settings = load_settings(**({"data_dir": data_dir} if data_dir else {}))
    configure_logging(settings.log_format, settings.log_level)
    ctx.obj = {"settings": settings}


def _add_data_dir_to_verbs(group: click.Group) -> None:
    """`--data-dir` is accepted after any verb too (`switchboard replay --data-dir X`)."""
    for command in list(group.commands.values()):
        if isinstance(command, click.Group):
            _add_data_dir_to_verbs(command)
            continue
        command.params.append(click.Option(["--data-dir", "verb_data_dir"], type=click.Path(file_okay=False, path_type=Path),
                                           default=None, expose_value=True, help="Same as the global --data-dir."))
        callback = command.callback

        def wrapped(*args, verb_data_dir=None, __callback=callback, **kwargs):
            ctx = click.get_current_context()
            if verb_data_dir is not None:
                root = ctx.find_root()
                root.obj["settings"] = root.obj["settings"].with_(data_dir=verb_data_dir)
            return __callback(*args, **kwargs)

        command.callback = wrapped


# -- up and serve ----------------------------------------------------------------------------------


@main.command()
@click.option("--http", "http", default="127.0.0.1:8000", show_default=True, help="HOST:PORT for HTTP and WebSocket.")
@click.option("--smtp", "smtp", default="127.0.0.1:2525", show_default=True, help="HOST:PORT for the SMTP listener.")
@click.pass_context
def up(ctx: click.Context, http: str, smtp: str) -> None:
    """Single-node mode: embedded NATS and PostgreSQL under the data dir, every role in one process."""
    from channels.email.trust import single_node_trust  # noqa: PLC0415 -- lazy: the email parser (bs4), only for up

    settings = single_node_trust(ensure_secrets(_settings(ctx)))
    http_addr, smtp_addr = _hostport(http, "--http"), _hostport(smtp, "--smtp")
    notes: list[str] = []
    with embedded_servers(settings, own=True, notes=notes) as settings:
        asyncio.run(_serve(settings, ROLE_CHOICES, http_addr, smtp_addr, announce=True, notes=notes))


@main.command()
@click.argument("roles", nargs=-1, required=True, type=click.Choice(ROLE_CHOICES))
@click.option("--http", "http", default="0.0.0.0:8000", show_default=True, help="HOST:PORT (gateway, api).")
@click.option("--smtp", "smtp", default="0.0.0.0:2525", show_default=True, help="HOST:PORT (gateway).")
@click.pass_context
def serve(ctx: click.Context, roles: tuple[str, ...], http: str, smtp: str) -> None:
    """Production mode: run ROLES against external NATS and PostgreSQL (run as many as you like)."""
    settings = _settings(ctx)
    missing = [name for name in ("nats_url", "database_url", "master_key") if not getattr(settings, name)]
    if missing:
        raise click.ClickException("serve needs " + ", ".join("SWITCHBOARD_" + m.upper() for m in missing))
    asyncio.run(_serve(settings, tuple(dict.fromkeys(roles)), _hostport(http, "--http"), _hostport(smtp, "--smtp")))


async def _serve(settings: Settings, roles, http, smtp, announce: bool = False, notes: Sequence[str] = ()) -> None:
    from services.server import Server  # noqa: PLC0415 -- lazy: litestar, uvicorn and every role (~2 s)
    from services.platform.database import redact_database_url  # noqa: PLC0415
    from services.platform.nats_client import redact_nats_url  # noqa: PLC0415

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


# -- the log ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _store(ctx: click.Context):
    settings = ensure_secrets(_settings(ctx))
    with embedded_servers(settings) as settings:
        from services.bootstrap import Switchboard  # noqa: PLC0415 -- lazy: the event store and every worker

        sb = Switchboard(settings)
        sb.create_schema()
        try:
            yield sb
        finally:
            sb.open_store().datastore.close()


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


@main.command()
@click.option("--customer", "customer", type=click.UUID,
              help="Only this customer's events: theirs, their cases', and those of customers merged into them.")
@click.option("--from", "from_position", type=click.IntRange(min=1), default=1, show_default=True,
              help="Start at this position.")
@click.option("--until", "until", type=_IsoTime(),
              help="Stop after the events recorded at this time (ISO 8601; UTC unless a zone is given).")
@click.pass_context
def replay(ctx: click.Context, customer: UUID | None, from_position: int, until) -> None:
    """Write the stored events, oldest first, as JSON Lines to stdout.

    Each line: position, stream_id, stream_version, type, timestamp (recorded at, UTC), payload
    (personal fields decrypted), redacted (true once the customer was erased).
    """
    from services.replay import replay_events  # noqa: PLC0415 -- lazy: event store and crypto

    with _store(ctx) as sb:
        count = replay_events(sb.open_store(), sys.stdout.buffer, customer=customer, after=from_position - 1,
                              until=until, progress=sys.stderr.isatty(), conninfo=sb.database.conninfo)
    click.echo(f"{count} events", err=True)


@main.group()
def projections() -> None:
    """Read models built from the event log."""


@projections.command("rebuild")
@click.argument("name", required=False)
@click.pass_context
def projections_rebuild(ctx: click.Context, name: str | None) -> None:
    """Rebuild read models (all, or NAME) from the event store; prints events/s."""
    import time  # noqa: PLC0415

    from projections.rebuild import RebuildError  # noqa: PLC0415 -- lazy: event store
    from projections.runner import ProjectionRunner, all_projections  # noqa: PLC0415 -- lazy: event store
    from tqdm import tqdm  # noqa: PLC0415

    known = [p.name for p in all_projections()]
    if name and name not in known:
        raise click.BadParameter(f"unknown projection {name!r}; known: {', '.join(known)}", param_hint="NAME")
    with _store(ctx) as sb:
        store = sb.open_store()
        selected = [p for p in all_projections() if not name or p.name == name]
        runner = ProjectionRunner(store, selected, batch_size=5000)
        total = store.max_position()
        t0 = time.perf_counter()
        with tqdm(total=total, unit="ev", disable=not sys.stderr.isatty(), desc="rebuild") as bar:
            try:
                applied = runner.rebuild(bar.update)
            except RebuildError as exc:
                raise click.ClickException(str(exc)) from exc
        elapsed = time.perf_counter() - t0
    rate = applied / elapsed if elapsed > 0 else 0.0
    click.echo(f"rebuilt {', '.join(p.name for p in selected)}: {applied} events in {elapsed:.2f}s "
               f"({rate:,.0f} events/s)")


@main.group()
def quarantine() -> None:
    """Events a projection or the relay could not handle, set aside so that they could go on."""


@quarantine.command("list")
@click.pass_context
def quarantine_list(ctx: click.Context) -> None:
    """One line per quarantined event: consumer, position, type, event id, attempts, last failure, reason."""
    from services.platform import quarantine as quarantined  # noqa: PLC0415 -- lazy: psycopg

    with _store(ctx) as sb, sb.open_store().datastore.transaction(commit=False) as curs:
        entries = quarantined.listing(curs)
    for e in entries:
        click.echo(f"{e.consumer}\t{e.position}\t{e.event_type}\t{e.event_id}\t{e.attempts}\t"
                   f"{e.last_failed_at.isoformat()}\t{e.reason}")
    click.echo(f"{len(entries)} quarantined event(s)", err=True)


@quarantine.command("retry")
@click.option("--projection", "projection_names", multiple=True, metavar="NAME",
              help="Only this projection's events (repeatable).")
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
            raise click.BadParameter(f"unknown projection {name!r}; known: {', '.join(known)}", param_hint="--projection")
    everything = not projection_names and not relay
    with _store(ctx) as sb:
        selected = [p for p in all_projections() if everything or p.name in projection_names]
        applied, failing = ProjectionRunner(sb.open_store(), selected).retry_quarantined(position) if selected else (0, 0)
        if everything or relay:
            async def retry_relay() -> tuple[int, int]:
                await sb.connect_nats()
                try:
                    return await retry_quarantined(sb, position)
                finally:
                    await sb.nc.close()

            published, still = asyncio.run(retry_relay())
            applied, failing = applied + published, failing + still
    click.echo(f"{applied} event(s) handled and released, {failing} still quarantined")
    if failing:
        ctx.exit(1)


@main.group()
def audit() -> None:
    """Check that the event log was not altered; anchor its head outside the database."""


@audit.command("verify")
@click.option("--anchor", "anchor_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also check the log against the anchor in this file (written by `audit anchor --file`).")
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
    with _store(ctx) as sb:
        store = sb.open_store()
        with sb.database.connect() as conn, tqdm(
                total=store.max_position(), unit="ev", disable=not sys.stderr.isatty(), desc="verify") as bar:
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
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the signed head to this file (atomically; keep it off the database's machine).")
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
    with _store(ctx) as sb:
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


def _kv_bucket(sb, bucket: str | None) -> str:
    from services.platform.eventstore.anchor import ANCHOR_BUCKET  # noqa: PLC0415 -- lazy: psycopg

    return bucket or sb.names.stream(ANCHOR_BUCKET)


async def _connect_nats_only(sb) -> None:
    """NATS for a one-off command: no streams created or updated (that is the service's business)."""
    from services.platform.nats_client import connect  # noqa: PLC0415

    sb.nc = await connect(sb.settings, name="switchboard-audit", connect_timeout=5, allow_reconnect=False)
    sb.js = sb.nc.jetstream()


async def _read_kv_anchor(sb, bucket: str | None, key: bytes):
    from services.platform.eventstore import anchor as anchors  # noqa: PLC0415 -- lazy: psycopg

    await _connect_nats_only(sb)
    try:
        kv = await anchors.open_bucket(sb.js, _kv_bucket(sb, bucket), create=False)
        found = (await anchors.read_kv(kv, key))[0] if kv is not None else None
        if found is None:
            raise anchors.AnchorError(f"anchor not found: nothing in KV bucket {_kv_bucket(sb, bucket)}")
        return found
    finally:
        await sb.nc.close()


async def _write_kv_anchor(sb, bucket: str | None):
    from datetime import UTC, datetime  # noqa: PLC0415

    from services.relay.anchor import refresh_kv_anchor  # noqa: PLC0415 -- lazy: NATS relay

    await _connect_nats_only(sb)
    try:
        return await refresh_kv_anchor(sb, _kv_bucket(sb, bucket), datetime.now(UTC))
    finally:
        await sb.nc.close()


# -- tokens ----------------------------------------------------------------------------------------


@main.group()
def token() -> None:
    """API bearer tokens for agents, supervisors, auditors and admins."""


@token.command("create")
@click.option("--role", type=click.Choice(("agent", "supervisor", "auditor", "admin")), required=True)
@click.option("--name", help="A name to revoke it by later (default: generated).")
@click.pass_context
def token_create(ctx: click.Context, role: str, name: str | None) -> None:
    """Print a new token (only its hash is stored)."""
    import psycopg  # noqa: PLC0415


    with _store(ctx) as sb, sb.database.connect(autocommit=True) as conn:
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
    with _store(ctx) as sb, sb.database.connect(autocommit=True) as conn:
        if not revoke_token(conn, name):
            raise click.ClickException(f"no active token named {name!r}")
    click.echo(f"revoked {name}")


# -- customers (GDPR) ------------------------------------------------------------------------------


@main.group()
def customer() -> None:
    """GDPR: access requests and erasure."""


@customer.command("export")
@click.argument("customer_id", type=click.UUID)
@click.pass_context
def customer_export(ctx: click.Context, customer_id: UUID) -> None:
    """Everything held about a customer, as JSON on stdout."""
    import msgspec  # noqa: PLC0415

    from services.gdpr import export_customer  # noqa: PLC0415 -- lazy: ~1.5 s of imports

    with _store(ctx) as sb:
        try:
            document = export_customer(sb.open_store(), sb.database.conninfo, customer_id)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(document)) + b"\n")


@customer.command("erase")
@click.argument("customer_id", type=click.UUID)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--relay-wait", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the relay to publish the customer's last events before deleting them from NATS.")
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
    with _store(ctx) as sb:
        try:
            report = erase_customer(sb, customer_id, "cli", datetime.now(UTC), relay_wait=relay_wait)
        except CustomerNotFound as exc:
            raise click.ClickException(str(exc)) from None
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(report.summary())
    if not report.complete:
        ctx.exit(1)


# -- dead letters ----------------------------------------------------------------------------------


@main.group()
def deadletters() -> None:
    """Interactions the core could not process."""


@deadletters.command("list")
@click.pass_context
def deadletters_list(ctx: click.Context) -> None:
    """One line per dead letter: sequence, original subject, deliveries, reason."""
    from services.platform.deadletters import list_dead_letters  # noqa: PLC0415 -- lazy: nats-py

    settings = ensure_secrets(_settings(ctx))
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
    settings = ensure_secrets(_settings(ctx))
    with embedded_servers(settings) as settings:
        n = asyncio.run(redrive(settings, None if all_ else set(sequences)))
    click.echo(f"re-drove {n} message(s)")


# -- demo ------------------------------------------------------------------------------------------


@main.command()
@click.option("--customers", default=20, show_default=True, help="How many customers.")
@click.option("--interactions", default=100, show_default=True, help="How many interactions in all.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The running instance's HTTP URL.")
@click.option("--smtp", "smtp", default="127.0.0.1:2525", show_default=True, help="Its SMTP listener.")
@click.pass_context
def demo(ctx: click.Context, customers: int, interactions: int, url: str, smtp: str) -> None:
    """Drive realistic multi-channel traffic through the real channel endpoints of a running instance."""
    from services.demo import run_demo  # noqa: PLC0415 -- lazy: httpx and websockets

    settings = ensure_secrets(_settings(ctx))
    sent = asyncio.run(run_demo(settings, url, _hostport(smtp, "--smtp"), customers, interactions))
    click.echo(f"sent {sent} interactions")


_add_data_dir_to_verbs(main)

if __name__ == "__main__":
    main()
