"""How the embedded servers' URLs are built and shown, and how an old `trust` pg_hba.conf is locked."""

from __future__ import annotations

import pytest

from services.platform.embedded import EmbeddedNats, EmbeddedPostgres, redact_url, scram_hba, with_credentials

pytestmark = pytest.mark.unit


def test_credentials_go_into_the_url_and_replace_any_already_there():
    assert (
        with_credentials("nats://127.0.0.1:4222", "switchboard", "s3cret") == "nats://switchboard:s3cret@127.0.0.1:4222"
    )
    assert (
        with_credentials("postgresql://old:pw@127.0.0.1:5432/switchboard", "postgres", "a/b@c")
        == "postgresql://postgres:a%2Fb%40c@127.0.0.1:5432/switchboard"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres:s3cret@127.0.0.1:5432/switchboard",
            "postgresql://postgres:***@127.0.0.1:5432/switchboard",
        ),
        ("nats://u:s3cret@a:4222,nats://u:s3cret@b:4222", "nats://u:***@a:4222,nats://u:***@b:4222"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("host=db user=sb password=s3cret dbname=x", "host=db user=sb password=*** dbname=x"),
        ("host=db password='s3 cret' dbname=x", "host=db password=*** dbname=x"),
    ],
)
def test_a_url_is_printed_without_its_password(url, shown):
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "cret'" not in redact_url(url)


def test_trust_rules_become_scram_and_comments_stay():
    old = (
        "# TYPE  DATABASE  USER  ADDRESS  METHOD\n"
        '# "trust" is what initdb writes by default\n'
        "local   all       all            trust\n"
        "host    all       all   127.0.0.1/32  trust\n"
        "host    replication all ::1/128 trust  # a comment\n"
    )
    new = scram_hba(old)
    assert new.splitlines()[:2] == old.splitlines()[:2]
    assert new.splitlines()[2:] == [
        "local   all       all            scram-sha-256",
        "host    all       all   127.0.0.1/32  scram-sha-256",
        "host    replication all ::1/128 scram-sha-256  # a comment",
    ]
    assert scram_hba(new) == new


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_embedded_servers_only_listen_on_loopback(tmp_path, host):
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedNats(tmp_path / "nats", host=host, port=4222)
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedPostgres(tmp_path / "pg", host=host, port=5432)
