"""SWITCHBOARD_DATABASE_URL in every libpq form, on a real PostgreSQL that asks for a password.

Each form records real events through the event store (eventsourcing's datastore) and then runs a
real verb in a subprocess (`switchboard audit verify`, `switchboard replay`) with only that URL.
A database that refuses or is away gives one line naming the host and the reason, exit 1, no
traceback and no password, from every verb and from `serve`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from events.interactions import Identity, Interaction, interaction_id
from services.bootstrap import Switchboard
from services.core.processor import CoreProcessor
from services.platform.settings import ensure_secrets, load_settings
from tests.fixtures.postgres import PasswordPostgres, closed_port

pytestmark = pytest.mark.integration

SWITCHBOARD = Path(sys.executable).with_name("switchboard")


@pytest.fixture(scope="module")
def pg():
    server = PasswordPostgres(Path(tempfile.mkdtemp(prefix="sb-pgpw-"))).start()
    yield server
    server.stop()


@pytest.fixture
def db(pg):
    return pg.create_database()


def _forms(pg: PasswordPostgres, db: str) -> dict[str, str]:
    user, pw, port, sock = "postgres", quote(pg.password, safe=""), pg.port, quote(str(pg.socket_dir), safe="")
    dead = closed_port()
    return {
        "uri": f"postgresql://{user}:{pw}@127.0.0.1:{port}/{db}",
        "postgres-scheme-sslmode-prefer": f"postgres://{user}:{pw}@127.0.0.1:{port}/{db}?sslmode=prefer",
        "sslmode-disable-connect-timeout": f"postgresql://{user}:{pw}@127.0.0.1:{port}/{db}?sslmode=disable&connect_timeout=5",
        "keyword-value": f"host=127.0.0.1 port={port} user={user} password='{pg.password}' dbname={db} "
        "application_name=switchboard-test",
        "unix-socket-uri": f"postgresql://{user}:{pw}@/{db}?host={sock}&port={port}",
        "unix-socket-keyword": f"host={pg.socket_dir} port={port} user={user} password='{pg.password}' dbname={db}",
        "several-hosts-first-dead": f"postgresql://{user}:{pw}@127.0.0.1:{dead},127.0.0.1:{port}/{db}"
        "?target_session_attrs=read-write",
        "options-search-path": f"postgresql://{user}:{pw}@127.0.0.1:{port}/{db}"
        "?options=-c%20search_path%3Dswitchboard_app",
    }


def _env(data_dir: Path, database_url: str, master_key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "PG"))}
    env.update(
        SWITCHBOARD_DATA_DIR=str(data_dir),
        SWITCHBOARD_DATABASE_URL=database_url,
        SWITCHBOARD_MASTER_KEY=master_key,
        SWITCHBOARD_LOG_FORMAT="json",
        **extra,
    )
    return env


def _record_one_interaction(settings) -> None:
    sb = Switchboard(settings)
    try:
        sb.create_schema()
        provider_id = uuid.uuid4().hex
        message = Interaction(
            id=interaction_id("sms", provider_id),
            channel="sms",
            direction="inbound",
            occurred_at=datetime(2026, 3, 1, 9, tzinfo=UTC),
            identities=[Identity("phone", "+447700900123")],
            text="hello",
            provider_message_id=provider_id,
        )
        result = CoreProcessor(sb.open_store()).process([(message, 1)])
        assert result.recorded == [message.id]
    finally:
        if sb.store is not None:
            sb.store.datastore.close()


@pytest.mark.parametrize(
    "form",
    [
        "uri",
        "postgres-scheme-sslmode-prefer",
        "sslmode-disable-connect-timeout",
        "keyword-value",
        "unix-socket-uri",
        "unix-socket-keyword",
        "several-hosts-first-dead",
        "options-search-path",
    ],
)
def test_every_libpq_form_records_events_and_runs_the_verbs(pg, db, tmp_path, form):
    if form == "options-search-path":
        with psycopg.connect(pg.conninfo(db), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA switchboard_app")
    url = _forms(pg, db)[form]
    settings = ensure_secrets(load_settings(environ={}, data_dir=tmp_path / "data", database_url=url))
    _record_one_interaction(settings)

    verify = subprocess.run(
        [str(SWITCHBOARD), "audit", "verify"],
        env=_env(settings.data_dir, url, settings.master_key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
    count = int(verify.stdout.split("intact: ")[1].split()[0])
    assert count >= 2  # at least customer.Registered and customer.InteractionRecorded
    replay = subprocess.run(
        [str(SWITCHBOARD), "replay"],
        env=_env(settings.data_dir, url, settings.master_key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert len(replay.stdout.splitlines()) == count and '"text":"hello"' in replay.stdout

    with psycopg.connect(pg.conninfo(db)) as conn:
        tables = dict(
            conn.execute(
                "SELECT table_name, table_schema FROM information_schema.tables "
                "WHERE table_name IN ('sb_events', 'sb_processed', 'proj_timeline')"
            ).fetchall()
        )
    expected_schema = "switchboard_app" if form == "options-search-path" else "public"
    assert tables == {"sb_events": expected_schema, "sb_processed": expected_schema, "proj_timeline": expected_schema}


def _refusals(pg: PasswordPostgres, db: str) -> dict[str, tuple[str, str, str]]:
    """form -> (url, host named in the message, reason named in the message)"""
    pw = quote(pg.password, safe="")
    dead, dead2 = closed_port(), closed_port()
    return {
        "closed-port": (f"postgresql://postgres:{pw}@127.0.0.1:{dead}/{db}", f"127.0.0.1:{dead}", "Connection refused"),
        "wrong-password": (
            f"postgresql://postgres:Wr0ngPassw0rd@127.0.0.1:{pg.port}/{db}",
            f"127.0.0.1:{pg.port}",
            'password authentication failed for user "postgres"',
        ),
        "unknown-database": (
            f"host=127.0.0.1 port={pg.port} user=postgres password='{pg.password}' dbname=nosuchdb",
            f"127.0.0.1:{pg.port}",
            'database "nosuchdb" does not exist',
        ),
        "all-hosts-dead": (
            f"postgresql://postgres:{pw}@127.0.0.1:{dead},127.0.0.1:{dead2}/{db}",
            f"127.0.0.1:{dead}, 127.0.0.1:{dead2}",
            "Connection refused",
        ),
        "ssl-required": (
            f"postgresql://postgres:{pw}@127.0.0.1:{pg.port}/{db}?sslmode=require",
            f"127.0.0.1:{pg.port}",
            "server does not support SSL",
        ),
        "missing-socket": (
            f"host={pg.socket_dir}/nowhere port={pg.port} user=postgres dbname={db}",
            f"socket {pg.socket_dir}/nowhere:{pg.port}",
            "No such file or directory",
        ),
    }


VERBS = {
    "audit verify": ["audit", "verify"],
    "replay": ["replay"],
    "token create": ["token", "create", "--role", "agent"],
    "projections rebuild": ["projections", "rebuild"],
    "customer export": ["customer", "export", str(uuid.uuid4())],
    "serve core": ["serve", "core", "projector"],
}


def _assert_one_clear_line(proc: subprocess.CompletedProcess, host: str, reason: str, password: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    line = lines[0]
    assert "cannot connect to PostgreSQL at " + host in line and reason in line, line
    assert password not in line and quote(password, safe="") not in line


@pytest.mark.parametrize(
    "refusal", ["closed-port", "wrong-password", "unknown-database", "all-hosts-dead", "ssl-required", "missing-socket"]
)
def test_a_refusing_database_is_one_line_naming_host_and_reason(pg, db, tmp_path, nats_url, refusal):
    url, host, reason = _refusals(pg, db)[refusal]
    key = ensure_secrets(load_settings(environ={}, data_dir=tmp_path / "data")).master_key
    proc = subprocess.run(
        [str(SWITCHBOARD), "audit", "verify"],
        env=_env(tmp_path / "data", url, key, SWITCHBOARD_NATS_URL=nats_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    _assert_one_clear_line(proc, host, reason, pg.password)


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_and_serve_report_a_wrong_password_in_one_line(pg, db, tmp_path, nats_url, verb):
    url, host, reason = _refusals(pg, db)["wrong-password"]
    # The same password in another place of the string is hidden too.
    url = f"postgresql://postgres:{quote(pg.password, safe='')}x@127.0.0.1:{pg.port}/{db}"
    key = ensure_secrets(load_settings(environ={}, data_dir=tmp_path / "data")).master_key
    proc = subprocess.run(
        [str(SWITCHBOARD), *VERBS[verb]],
        env=_env(tmp_path / "data", url, key, SWITCHBOARD_NATS_URL=nats_url),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    _assert_one_clear_line(proc, host, reason, pg.password + "x")


def test_a_malformed_url_is_one_line_without_its_secret(tmp_path, nats_url):
    key = ensure_secrets(load_settings(environ={}, data_dir=tmp_path / "data")).master_key
    proc = subprocess.run(
        [str(SWITCHBOARD), "audit", "verify"],
        env=_env(tmp_path / "data", "host=db password=sup3r secret", key, SWITCHBOARD_NATS_URL=nats_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a libpq URI or key=value string" in lines[0], proc.stderr
    assert "sup3rsecret" not in proc.stderr
