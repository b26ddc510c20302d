"""`switchboard up` as a user runs it, with servers that are not open doors.

Its NATS and PostgreSQL refuse anyone without the data dir's passwords; every verb on the same
data dir (against the running `up`, or starting the servers itself) presents them; a restart keeps
them; the output names where PostgreSQL keeps its files and never prints a password. As root, a
data dir inside a 0700 directory works and no parent's mode changes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import nats
import psutil
import psycopg
import pytest

from services.platform import embedded_system
from services.platform.embedded import embedded_credentials, free_port

pytestmark = pytest.mark.e2e

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}


class Up:
    """One `switchboard up` process on a data dir, its stderr in a file."""

    def __init__(self, data_dir: Path, log: Path):
        self.data_dir, self.log = data_dir, log
        self.http = free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    SWITCHBOARD,
                    "up",
                    "--data-dir",
                    str(data_dir),
                    "--http",
                    f"127.0.0.1:{self.http}",
                    "--smtp",
                    f"127.0.0.1:{free_port()}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=_env(),
            )

    async def ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()
                try:
                    if (await client.get(self.url + "/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("switchboard up did not become ready")

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> None:
        children = self.children()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"orphaned servers: {[p.name() for p in alive]}"


def _verb(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SWITCHBOARD, *args, "--data-dir", str(data_dir)],
        env=_env(),
        cwd=data_dir.parent,
        capture_output=True,
        timeout=120,
    )


def _run_url(data_dir: Path, name: str) -> str:
    return msgspec.json.decode((data_dir / "run" / f"{name}.json").read_bytes())["url"]


async def _agent_token_works(up: Up) -> None:
    made = _verb(up.data_dir, "token", "create", "--role", "agent", "--name", f"probe-{time.monotonic_ns()}")
    assert made.returncode == 0, made.stderr.decode()
    token = made.stdout.decode().strip()
    async with httpx.AsyncClient(base_url=up.url, headers={"Authorization": f"Bearer {token}"}) as client:
        assert (await client.get("/api/v1/customers", params={"q": "nobody"})).status_code == 200


async def test_up_servers_refuse_strangers_and_every_verb_gets_in(tmp_path):
    data_dir = tmp_path / "sb"
    log = tmp_path / "up.log"

    up = Up(data_dir, log)
    try:
        await up.ready()
        credentials = embedded_credentials(data_dir)
        nats_address, pg_address = _run_url(data_dir, "nats"), _run_url(data_dir, "postgres")
        assert credentials.nats_password not in nats_address and credentials.postgres_password not in pg_address

        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(nats_address, allow_reconnect=False, connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(pg_address, connect_timeout=5)

        # A verb on the same data dir uses the running servers, with the data dir's passwords.
        await _agent_token_works(up)
    finally:
        up.stop()

    # A verb with no `up` running starts the servers itself, with the same passwords.
    verified = _verb(data_dir, "audit", "verify")
    assert verified.returncode == 0, verified.stderr.decode()

    up = Up(data_dir, log)
    try:
        await up.ready()
        assert embedded_credentials(data_dir) == credentials, "a restart must keep the passwords"
        await _agent_token_works(up)
    finally:
        up.stop()

    output = log.read_text()
    assert "PostgreSQL data" in output and "secrets.json" in output
    assert credentials.nats_password not in output and credentials.postgres_password not in output
    if os.geteuid() == 0:
        embedded_system.release_cluster((data_dir / "postgres").resolve())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root has parents' modes to protect and a service user to run as")
async def test_up_as_root_in_a_private_directory_leaves_every_parent_as_it_was(tmp_path):
    private = tmp_path / "root-home"
    private.mkdir(mode=0o700)
    data_dir = private / "checkout" / ".switchboard"
    data_dir.parent.mkdir()
    parents = [*reversed(data_dir.parents)]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in parents}

    up = Up(data_dir, tmp_path / "up.log")
    try:
        await up.ready()
        # The postmaster, a direct child (its backends come and go, and run as the same user).
        [postmaster] = [p for p in psutil.Process(up.proc.pid).children() if p.name() == "postgres"]
        assert postmaster.username() == embedded_system.service_user().name != "root"
        await _agent_token_works(up)
    finally:
        up.stop()
    cluster = embedded_system.cluster_home((data_dir / "postgres").resolve()) / "pg"
    try:
        assert f"PostgreSQL data  {cluster}" in (tmp_path / "up.log").read_text()
        assert (cluster / "PG_VERSION").exists()
        assert {p: stat.S_IMODE(p.stat().st_mode) for p in parents} == modes
    finally:
        embedded_system.release_cluster((data_dir / "postgres").resolve())
