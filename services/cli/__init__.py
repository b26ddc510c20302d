"""`switchboard`: the one command for operators, auditors and developers.

Every verb takes --data-dir (or SWITCHBOARD_DATA_DIR). Without SWITCHBOARD_NATS_URL and
SWITCHBOARD_DATABASE_URL a verb uses the embedded servers of a `switchboard up` running on that data
dir, or starts them for its own run.

One module per verb group (runtime: `up` and `serve`); what they share is in `common`. Each verb
builds what it needs through the composition root, `services.bootstrap`.
"""

from __future__ import annotations

from pathlib import Path

import click

from services.cli.agents import agent
from services.cli.audit import audit
from services.cli.customers import customer
from services.cli.deadletters import deadletters
from services.cli.demo import demo
from services.cli.projections import projections
from services.cli.quarantine import quarantine
from services.cli.replay import replay
from services.cli.runtime import serve, up
from services.cli.tokens import token
from services.platform.logs import configure_logging
from services.platform.settings import load_settings

__all__ = ["main"]


class _Main(click.Group):
    """Turns a database or NATS that cannot be used into one line on stderr and exit 1, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # lazy: only a failing verb needs them; `switchboard --help` stays fast
            from services.platform.database import DatabaseUnavailable, DatabaseUrlError  # noqa: PLC0415
            from services.platform.nats_client import NatsSettingsError  # noqa: PLC0415

            if isinstance(exc, (DatabaseUnavailable, DatabaseUrlError, NatsSettingsError)):
                raise click.ClickException(str(exc)) from None
            raise


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SWITCHBOARD_DATA_DIR",
    default=None,
    help="Where embedded servers keep data, tokens and generated secrets [.switchboard].",
)
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
        command.params.append(
            click.Option(
                ["--data-dir", "verb_data_dir"],
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                expose_value=True,
                help="Same as the global --data-dir.",
            )
        )
        callback = command.callback

        def wrapped(*args, verb_data_dir=None, __callback=callback, **kwargs):
            ctx = click.get_current_context()
            if verb_data_dir is not None:
                root = ctx.find_root()
                root.obj["settings"] = root.obj["settings"].with_(data_dir=verb_data_dir)
            return __callback(*args, **kwargs)

        command.callback = wrapped


for _verb in (up, serve, replay, projections, quarantine, audit, token, agent, customer, deadletters, demo):
    main.add_command(_verb)
_add_data_dir_to_verbs(main)
