"""Connection strings read by libpq's own parser, shown without their secrets. No I/O."""

from __future__ import annotations

import pytest

from services.platform.database import Database, DatabaseUrlError, redact_database_url, with_database
from services.platform.nats_client import (
    NatsSettingsError,
    credentials_options,
    nats_servers,
    redact_nats_url,
    url_credentials,
)

pytestmark = pytest.mark.unit


def test_a_uri_with_percent_encoding_several_hosts_and_query_parameters():
    db = Database.parse(
        "postgres://app:p%40ss%2Fw@db1:5432,db2:5433/sb%20main?sslmode=require"
        "&target_session_attrs=read-write&options=-c%20search_path%3Dsb"
    )
    assert db.params == {
        "user": "app",
        "password": "p@ss/w",
        "host": "db1,db2",
        "port": "5432,5433",
        "dbname": "sb main",
        "sslmode": "require",
        "target_session_attrs": "read-write",
        "options": "-c search_path=sb",
    }
    assert db.hosts == ["db1:5432", "db2:5433"]
    assert "connect_timeout=10" in db.conninfo and "options='-c search_path=sb'" in db.conninfo


def test_key_value_form_and_socket_directories():
    db = Database.parse("host=/run/postgresql,/tmp port=6432 dbname=switchboard user=sb")
    assert db.hosts == ["socket /run/postgresql:6432", "socket /tmp:6432"]
    uri = Database.parse("postgresql://sb@%2Frun%2Fpostgresql/switchboard")
    assert uri.params["host"] == "/run/postgresql" and uri.hosts == ["socket /run/postgresql:5432"]
    assert Database.parse("postgresql:///switchboard?host=/var/run/pg").hosts == ["socket /var/run/pg:5432"]


def test_an_explicit_connect_timeout_is_kept_and_a_driver_suffix_is_accepted():
    db = Database.parse("postgresql+psycopg://u@h/d?connect_timeout=3")
    assert db.params["connect_timeout"] == "3" and "connect_timeout=3" in db.conninfo
    assert Database.parse("postgresql://[::1]:5433/d").hosts == ["[::1]:5433"]


@pytest.mark.parametrize("bad", ["", "   ", "postgresql://h/d?nosuchparam=1", "host=db password"])
def test_what_libpq_rejects_is_a_database_url_error(bad):
    with pytest.raises(DatabaseUrlError):
        Database.parse(bad)


def test_another_database_keeps_the_form_and_the_options():
    assert (
        with_database("postgresql://u:p@h1:1,h2:2/old?sslmode=disable", "new")
        == "postgresql://u:p@h1:1,h2:2/new?sslmode=disable"
    )
    assert Database.parse(with_database("host=/tmp dbname=old user=u", "new")).params == {
        "host": "/tmp",
        "dbname": "new",
        "user": "u",
    }
    # A dbname in the query would win over the path: the result is rebuilt as key=value.
    assert Database.parse(with_database("postgresql://h/x?dbname=old", "new")).params["dbname"] == "new"


def test_passwords_never_show():
    assert redact_database_url("postgresql://app:s3cret@db:5432/sb") == "postgresql://app:***@db:5432/sb"
    assert (
        redact_database_url("postgresql://app@db/sb?password=s3cret&sslmode=require")
        == "postgresql://app@db/sb?password=***&sslmode=require"
    )
    assert "s3cret" not in redact_database_url("host=db password=s3cret dbname=sb")
    assert "s3cret" not in Database.parse("host=db password=s3cret").redacted()
    failure = Database.parse("host=db user=app password=s3cret dbname=sb").describe_failure(
        Exception(
            'connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: '
            'FATAL:  password authentication failed for user "app"'
        )
    )
    assert failure == (
        'cannot connect to PostgreSQL at db:5432 (database sb, user app): password authentication failed for user "app"'
    )


def test_nats_urls_keep_credentials_for_the_client_and_hide_them_in_print():
    url = "nats://gateway:pa%3Ass@n1:4222, tls://s3cr3ttoken@n2:4222,nats://n3:4222"
    assert nats_servers(url) == ["nats://gateway:pa%3Ass@n1:4222", "tls://s3cr3ttoken@n2:4222", "nats://n3:4222"]
    shown = redact_nats_url(url)
    assert "pa%3Ass" not in shown and "s3cr3ttoken" not in shown
    assert shown == "nats://gateway:***@n1:4222, tls://***@n2:4222,nats://n3:4222"
    with pytest.raises(NatsSettingsError):
        nats_servers(" , ")


def test_nats_creds_file_kinds(tmp_path):
    creds = tmp_path / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\neyJ0eXAi.x.y\n------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\nSUAM\n------END USER NKEY SEED------\n"
    )
    assert credentials_options(str(creds)) == {"user_credentials": str(creds)}
    seed = tmp_path / "user.nk"
    seed.write_text("SU" + "A" * 56 + "\n")
    assert credentials_options(str(seed)) == {"nkeys_seed": str(seed)}
    assert credentials_options(None) == {}
    junk = tmp_path / "junk"
    junk.write_text("not a credential")
    with pytest.raises(NatsSettingsError, match="neither a NATS .creds file"):
        credentials_options(str(junk))
    with pytest.raises(NatsSettingsError, match="cannot read"):
        credentials_options(str(tmp_path / "missing.creds"))


def test_url_credentials_are_decoded_for_nats_py():
    servers, auth = url_credentials(["nats://gateway:p%40ss%3Aw%2F@n1:4222", "nats://gateway:p%40ss%3Aw%2F@n2:4222"])
    assert servers == ["nats://n1:4222", "nats://n2:4222"] and auth == {"user": "gateway", "password": "p@ss:w/"}
    assert url_credentials(["tls://s3cr3t@n1:4222"]) == (["tls://n1:4222"], {"token": "s3cr3t"})
    assert url_credentials(["nats://n1:4222"]) == (["nats://n1:4222"], {})
    # Different credentials per server: each URL keeps its own.
    mixed = ["nats://a:1@n1:4222", "nats://b:2@n2:4222"]
    assert url_credentials(mixed) == (mixed, {})
