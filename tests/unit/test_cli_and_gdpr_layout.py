"""The console script's verbs (the contract's table) and the modules behind it, cut along their seams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from services.cli import main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

VERBS = {
    "up": None,
    "serve": None,
    "demo": None,
    "replay": None,
    "projections": {"rebuild"},
    "quarantine": {"list", "retry"},
    "audit": {"verify", "anchor"},
    "token": {"create", "revoke"},
    "agent": {"create", "disable", "enable", "list"},
    "customer": {"export", "erase"},
    "deadletters": {"list", "redrive"},
}


def test_every_verb_and_sub_verb_is_registered_on_the_one_group():
    assert set(main.commands) == set(VERBS)
    for name, subs in VERBS.items():
        command = main.commands[name]
        if subs is None:
            assert not isinstance(command, click.Group)
        else:
            assert isinstance(command, click.Group)
            assert set(command.commands) == subs


def test_every_verb_takes_data_dir_after_the_verb_too():
    for name, command in main.commands.items():
        leaves = command.commands.values() if isinstance(command, click.Group) else [command]
        for leaf in leaves:
            assert "--data-dir" in [o for p in leaf.params for o in getattr(p, "opts", [])], (name, leaf.name)


def test_help_lists_the_verbs_and_a_bad_verb_is_a_usage_error():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in VERBS:
        assert f"  {name} " in result.output or f"  {name}\n" in result.output
    assert runner.invoke(main, ["no-such-verb"]).exit_code == 2
    assert runner.invoke(main, ["serve"]).exit_code == 2  # ROLES are required
    assert runner.invoke(main, ["serve", "cook"]).exit_code == 2


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0
    assert "Switchboard: an event-sourced omnichannel contact centre." in done.stdout


def test_cli_and_gdpr_are_packages_of_small_modules():
    for package in ("cli", "gdpr"):
        folder = ROOT / "services" / package
        assert folder.is_dir() and not (ROOT / "services" / f"{package}.py").exists()
        for module in folder.glob("*.py"):
            assert len(module.read_text().splitlines()) < 300, module
