"""What deploy/ describes, run here: a three-node NATS cluster (deploy/nats/node.conf) with
replicated streams, and several `switchboard serve` processes per role against it and PostgreSQL.
One NATS node is killed in the middle of the traffic; every message is still recorded exactly once.
The nodes enforce deploy/nats/auth.conf: every process connects as its role's user."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets

from services.platform.embedded import EmbeddedNats, free_port
from tests.fixtures.nats_auth import new_passwords, password_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_CONF = ROOT / "deploy" / "nats" / "node.conf"
SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


class Cluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.client_ports: list[int] = []
        self.cluster_ports: list[int] = []
        self.procs: list[subprocess.Popen | None] = [None, None, None]
        self.passwords = new_passwords()

    def url(self, user: str) -> str:
        from urllib.parse import quote  # noqa: PLC0415

        secret = quote(self.passwords[user], safe="")
        return ",".join(f"nats://{user}:{secret}@127.0.0.1:{p}" for p in self.client_ports)

    def start(self) -> None:
        self.client_ports = [free_port() for _ in range(3)]
        self.cluster_ports = [free_port() for _ in range(3)]
        routes = {f"NATS_ROUTE_{i + 1}": f"nats-route://127.0.0.1:{p}" for i, p in enumerate(self.cluster_ports)}
        for i in range(3):
            env = dict(
                os.environ,
                NATS_NAME=f"nats-{i + 1}",
                NATS_CLIENT_PORT=str(self.client_ports[i]),
                NATS_CLUSTER_PORT=str(self.cluster_ports[i]),
                NATS_STORE=str(self.tmp / f"nats-{i + 1}"),
                **routes,
                **password_env(self.passwords),
            )
            self.procs[i] = subprocess.Popen(
                [EmbeddedNats.binary(), "-c", str(NODE_CONF)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(self.tmp / f"nats-{i + 1}.log", "ab"),
            )

    async def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        import nats  # noqa: PLC0415

        from services.platform.nats_client import url_credentials  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while True:
            servers, auth = url_credentials(self.url("admin").split(","))  # new ports after a restart
            try:
                nc = await nats.connect(servers, **auth, connect_timeout=1, max_reconnect_attempts=1)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except Exception:  # noqa: BLE001 — no meta leader yet
                if time.monotonic() > deadline:
                    raise
                if any(p is not None and p.poll() is not None for p in self.procs):
                    # A node could not listen: another test's server took a port it was given between
                    # free_port and its bind (make test runs two workers). Again, on new ports.
                    self.stop()
                    self.start()
                await asyncio.sleep(0.3)

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait()

    def stop(self) -> None:
        for p in self.procs:
            if p and p.poll() is None:
                p.terminate()
                p.wait(10)


def _serve(settings, nats_url: str, roles: list[str], tmp: Path, name: str, http_port: int | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_NATS_URL=nats_url,
        SWITCHBOARD_DATABASE_URL=settings.database_url,
        SWITCHBOARD_MASTER_KEY=settings.master_key,
        SWITCHBOARD_ADMIN_TOKEN=settings.admin_token,
        SWITCHBOARD_CHAT_IDENTITY_SECRET=settings.chat_identity_secret,
        SWITCHBOARD_NATS_REPLICAS="3",
        SWITCHBOARD_LOG_FORMAT="json",
    )
    args = [SWITCHBOARD, "serve", *roles]
    if http_port:
        args += ["--http", f"127.0.0.1:{http_port}", "--smtp", f"127.0.0.1:{free_port()}"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "ab"), cwd=tmp)


async def _ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url + "/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{url} never became ready"
            await asyncio.sleep(0.2)


async def _send(gateway: str, sessions: dict, n_sessions: int, start: int, stop: int) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        for s in range(n_sessions):
            key = (gateway, s)
            if key not in sessions:
                sessions[key] = (await client.post("/channels/chat/sessions", json={})).json()
            session = sessions[key]
            url = gateway.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}"
            for _attempt in range(20):
                try:
                    async with websockets.connect(url, open_timeout=5) as ws:
                        for m in range(start, stop):
                            await ws.send(json.dumps({"type": "message", "text": f"m{m}", "client_id": f"c{m}"}))
                            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                            assert reply["type"] == "ack", reply
                    break
                except (TimeoutError, OSError, websockets.exceptions.WebSocketException, AssertionError):
                    # A node just died: the client retries with the same client ids, as a widget would.
                    await asyncio.sleep(0.5)
            else:
                raise AssertionError("could not deliver through the gateway")


@pytest.mark.timeout(240)
async def test_cluster_with_many_processes_per_role_survives_a_nats_node_loss(settings, tmp_path):
    cluster = Cluster(tmp_path)
    cluster.start()
    procs = []
    try:
        await cluster.wait_for_jetstream()
        gateways = [free_port(), free_port()]
        procs += [
            _serve(settings, cluster.url("web"), ["gateway", "api"], tmp_path, f"gw{i}", port)
            for i, port in enumerate(gateways)
        ]
        procs += [_serve(settings, cluster.url("core"), ["core"], tmp_path, f"core{i}") for i in range(2)]
        procs += [
            _serve(settings, cluster.url("projector"), ["projector"], tmp_path, f"projector{i}") for i in range(2)
        ]
        procs += [_serve(settings, cluster.url("relay"), ["relay"], tmp_path, "relay0")]
        urls = [f"http://127.0.0.1:{p}" for p in gateways]
        for url in urls:
            await _ready(url)

        sessions: dict = {}
        await asyncio.gather(*(_send(url, sessions, 5, 0, 3) for url in urls))
        cluster.kill(0)  # lose a node: streams are R3, two of three remain
        await asyncio.gather(*(_send(url, sessions, 5, 3, 6) for url in urls))

        expected = {(s["session_id"], f"m{m}") for s in sessions.values() for m in range(6)}
        # Messages in flight to a core over the killed node's connection come back after ack_wait.
        deadline = time.monotonic() + 90
        while True:
            with psycopg.connect(settings.database_url) as conn:
                rows = conn.execute(
                    "SELECT i.value, t.text FROM proj_timeline t JOIN proj_identities i ON i.customer_id = t.customer_id "
                    "AND i.kind = 'chat'"
                ).fetchall()
                events = conn.execute(
                    "SELECT count(*) FROM sb_events WHERE topic = 'customer.InteractionRecorded'"
                ).fetchone()[0]
            if len(rows) >= len(expected) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert sorted(rows) == sorted(expected), "every message exactly once on the timeline"
        assert events == len(expected), "every message exactly once in the event store"
        logs = "".join((tmp_path / f"nats-{i + 1}.log").read_text(errors="replace") for i in range(3))
        assert "Violation" not in logs, "every role had the permissions it needed"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.stop()
