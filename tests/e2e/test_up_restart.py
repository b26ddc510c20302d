"""`switchboard up` as a user runs it: a real process on a data dir, stopped with SIGTERM/SIGINT and
started again. Everything recorded before the restart is there after it, and no server is orphaned."""

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
import psutil
import pytest
import websockets

from services.platform.embedded import free_port

pytestmark = pytest.mark.e2e

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def _start(data_dir: Path, http_port: int, smtp_port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.Popen(
        [
            SWITCHBOARD,
            "up",
            "--data-dir",
            str(data_dir),
            "--http",
            f"127.0.0.1:{http_port}",
            "--smtp",
            f"127.0.0.1:{smtp_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        env=env,
    )


async def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"switchboard up exited with {proc.returncode}")
            try:
                if (await client.get(url + "/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("switchboard up did not become ready")


def _children(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    children = _children(proc)
    proc.send_signal(sig)
    assert proc.wait(60) == 0
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphaned servers: {[p.name() for p in alive]}"


async def _chat(url: str, text: str, name: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        session = (await client.post("/channels/chat/sessions", json={"name": name})).json()
    async with websockets.connect(url.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}") as ws:
        await ws.send(json.dumps({"type": "message", "text": text, "client_id": "1"}))
        assert json.loads(await ws.recv())["type"] == "ack"
    return session["session_id"]


async def _timeline(url: str, token: str, session_id: str, timeout: float = 10.0) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        deadline = time.monotonic() + timeout
        while True:
            found = await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": session_id})
            if found.status_code == 200:
                return (await client.get(f"/api/v1/customers/{found.json()['id']}/timeline")).json()["items"]
            assert time.monotonic() < deadline, found.text
            await asyncio.sleep(0.05)


async def test_up_keeps_everything_across_a_restart_and_leaves_no_orphans(tmp_path):
    data_dir = tmp_path / "sb"
    http_port, smtp_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "up.log"

    proc = _start(data_dir, http_port, smtp_port, log)
    try:
        await _wait_ready(url, proc)
        token = (data_dir / "admin.token").read_text().strip()
        first = await _chat(url, "before the restart", "Alan")
        assert [i["text"] for i in await _timeline(url, token, first)] == ["before the restart"]
    finally:
        _stop(proc, signal.SIGTERM)
    assert not list((data_dir / "run").glob("*.json")), "run files of a stopped instance remain"

    proc = _start(data_dir, http_port, smtp_port, log)
    try:
        await _wait_ready(url, proc)
        assert (data_dir / "admin.token").read_text().strip() == token, "secrets must survive a restart"
        assert [i["text"] for i in await _timeline(url, token, first)] == ["before the restart"]
        second = await _chat(url, "after the restart", "Alan")
        assert [i["text"] for i in await _timeline(url, token, second)] == ["after the restart"]
    finally:
        _stop(proc, signal.SIGINT)
    output = log.read_text()
    assert token not in output, "the admin token reached the log"
    assert "before the restart" not in output and "Alan" not in output, "personal data reached the log"
