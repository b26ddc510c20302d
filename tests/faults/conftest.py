"""Fixtures of the fault tests: an embedded NATS and PostgreSQL of the test's own (the session's
servers are never stopped), and a whole Switchboard on them."""

from __future__ import annotations

import pytest

from tests.faults.support import OwnServers


@pytest.fixture
def own_servers(tmp_path):
    servers = OwnServers(tmp_path / "servers").start()
    yield servers
    servers.stop()
