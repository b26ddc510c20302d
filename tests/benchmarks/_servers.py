"""Servers for benchmarks: the same sources as the test suite (env URLs, or the embedded wheels)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg

from services.platform.database import with_database
from services.platform.embedded import EmbeddedNats, EmbeddedPostgres
from services.platform.settings import Settings


def sync_setting() -> str:
    return os.environ.get("SWITCHBOARD_NATS_SYNC_INTERVAL") or Settings().nats_sync_interval


@contextlib.contextmanager
def servers():
    """Yields (nats_url, database_url) for a fresh database; stops whatever it started."""
    root = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    started = []
    try:
        nats_url = os.environ.get("SWITCHBOARD_TEST_NATS_URL")
        if not nats_url:
            # JetStream's fsync as `switchboard up` runs it (SWITCHBOARD_NATS_SYNC_INTERVAL or its default).
            n = EmbeddedNats(root / "nats", sync=sync_setting()).start()
            started.append(n)
            nats_url = n.url
        admin = os.environ.get("SWITCHBOARD_TEST_DATABASE_URL")
        if not admin:
            pg = EmbeddedPostgres(root / "pg", ephemeral=True).start()
            started.append(pg)
            admin = pg.admin_url("postgres")
        name = "bench_" + secrets.token_hex(4)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        yield nats_url, with_database(admin, name)
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
