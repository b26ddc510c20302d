"""Property-based fuzzing of every operation in the running app's OpenAPI document (schemathesis):
valid and invalid requests, with a valid admin token, against real NATS and PostgreSQL.

For every generated request: no 5xx, an answer within the per-request timeout, and, when the
answer is a 4xx, nothing recorded: the event store, the interactions stream, the chat sessions
bucket and the token and ticket tables are exactly as before it.

Two rounds: first with the ids the generator makes up (nothing exists: every command is refused
or reads nothing), then with the path ids of a real customer and case, so case commands run
against a live aggregate. A reply or snooze that is accepted has effects that come later (the
reply goes out and comes back as an outbound interaction), so once one was accepted the round
stops comparing what was recorded; the commands are ordered to put those last.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx
import psycopg
import pytest
import requests
import schemathesis
import websockets
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from services.bootstrap import ROLES
from tests.fixtures.providers import eventually
from tests.fixtures.recorded import running_server

pytestmark = pytest.mark.e2e


@schemathesis.serializer("message/rfc822")
def _raw_email(ctx, value) -> bytes:
    """The raw-email endpoint's body: whatever bytes the generator made (schema: binary string)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


# Commands whose acceptance is followed by more recording, later.
LATER_EFFECTS = ("/reply", "/snooze")
# Accepted (202) now, recorded by the core a moment later: the fuzzer waits for the record.
ACCEPTED_FOR_LATER = ("/api/v1/activities",)
# Roles that record on their own, later (classifying, rules): not run, so that a refused request
# is the only thing between two looks at the log. Their routes are served by the api role anyway.
SELF_STARTING_ROLES = ("classifier", "automation", "campaigner")
MAX_EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 15}
# Connect and read timeouts of one request: an answer slower than this is a hang.
REQUEST_TIMEOUT = (5.0, 15.0)


@dataclass(frozen=True)
class Recorded:
    """What a request could have recorded, read cheaply."""

    last_event: int
    events: int
    interactions_seq: int
    chat_sessions_seq: int
    tokens: int
    tickets: int


class Fuzzer:
    def __init__(self, server, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.loop = loop
        self.conn = psycopg.connect(server.settings.database_url, autocommit=True)
        self.headers = {"Authorization": f"Bearer {server.settings.admin_token}"}
        self.session = requests.Session()
        self.problems: list[str] = []
        self.requests = 0
        self.compare_recorded = True

    def _stream_seq(self, stream: str) -> int:
        info = asyncio.run_coroutine_threadsafe(self.server.sb.js.stream_info(stream), self.loop).result(10)
        return info.state.last_seq

    def recorded(self) -> Recorded:
        row = self.conn.execute(
            "SELECT (SELECT coalesce(max(notification_id), 0) FROM sb_events), (SELECT count(*) FROM sb_events), "
            "(SELECT count(*) FROM sb_tokens), (SELECT count(*) FROM sb_event_tickets)"
        ).fetchone()
        names = self.server.sb.names
        return Recorded(
            row[0],
            row[1],
            self._stream_seq(names.interactions),
            self._stream_seq("KV_" + names.chat_sessions_bucket),
            row[2],
            row[3],
        )

    def send(self, case) -> None:
        kwargs = case.as_transport_kwargs(base_url=self.server.http_url, headers=self.headers)
        before = self.recorded()
        self.requests += 1
        try:
            # stream=True: the event stream (200) never ends; its status and headers are the answer.
            with self.session.request(**kwargs, stream=True, timeout=REQUEST_TIMEOUT, allow_redirects=False) as r:
                status = r.status_code
                if not r.headers.get("content-type", "").startswith("text/event-stream"):
                    body = r.content
        except requests.RequestException as exc:
            self.problems.append(
                f"{case.method} {case.formatted_path}: no answer ({type(exc).__name__}) to {case.as_curl_command()}"
            )
            return
        if status >= 500:
            self.problems.append(
                f"{case.method} {case.formatted_path}: {status} {body[:200]!r} for {case.as_curl_command()}"
            )
        elif 400 <= status < 500 and self.compare_recorded and (after := self.recorded()) != before:
            self.problems.append(
                f"{case.method} {case.formatted_path}: {status} but recorded {before} -> {after} "
                f"for {case.as_curl_command()}"
            )
        elif status < 300 and case.path.endswith(LATER_EFFECTS):
            self.compare_recorded = False
        elif status < 300 and case.path in ACCEPTED_FOR_LATER:
            self._wait_recorded(case, json.loads(body)["id"])

    def _wait_recorded(self, case, interaction_id: str) -> None:
        """An accepted activity is recorded by the core a moment later: wait for it (a position, never a
        fixed time), so that it is not taken for what the next refused request recorded."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.conn.execute("SELECT 1 FROM sb_processed WHERE interaction_id = %s", (interaction_id,)).fetchone():
                return
            time.sleep(0.05)
        self.problems.append(f"{case.method} {case.formatted_path}: accepted {interaction_id} never recorded")

    def fuzz(self, operation, mode: GenerationMode, path_parameters: dict | None = None) -> None:
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            self.send(case)

        try:
            run()
        except Unsatisfiable:
            # An operation with nothing to get wrong (no parameters, no body) has no negative cases.
            if mode is not GenerationMode.NEGATIVE:
                raise

    def close(self) -> None:
        self.session.close()
        self.conn.close()


def _fuzz_all(server, loop, real: dict[str, str]) -> tuple[list[str], list[str], int]:
    schema = schemathesis.openapi.from_url(server.http_url + "/schema/openapi.json", timeout=10)
    fuzzer = Fuzzer(server, loop)
    operations = [result.ok() for result in schema.get_all_operations()]
    try:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzzer.fuzz(operation, mode)
        with_ids = [op for op in operations if set(real) & {p.name for p in op.path_parameters}]
        with_ids.sort(key=lambda op: op.path.endswith(LATER_EFFECTS))
        for operation in with_ids:
            ids = {p.name: real[p.name] for p in operation.path_parameters if p.name in real}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzzer.fuzz(operation, mode, ids)
    finally:
        fuzzer.close()
    return [f"{op.method.upper()} {op.path}" for op in operations], fuzzer.problems, fuzzer.requests


async def _a_customer_with_a_case(server) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {server.settings.admin_token}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as client:
        session = (await client.post("/channels/chat/sessions", json={"name": "Fuzz"})).json()
        url = server.http_url.replace("http", "ws") + f"/channels/chat/ws?token={session['token']}"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "message", "text": "where is my order?", "client_id": "1"}))
            await ws.recv()

        async def lookup():
            return await client.get("/api/v1/customers/lookup", params={"kind": "chat", "value": session["session_id"]})

        customer = (await eventually(lookup, lambda r: r.status_code == 200)).json()

        async def timeline():
            return (await client.get(f"/api/v1/customers/{customer['id']}/timeline")).json()["items"]

        [item] = await eventually(timeline, lambda items: len(items) == 1 and items[0]["case_id"])
    return {"customer_id": customer["id"], "case_id": item["case_id"]}


@pytest.mark.timeout(400)
async def test_every_public_operation_survives_fuzzing(settings, names):
    roles = tuple(r for r in ROLES if r not in SELF_STARTING_ROLES)
    async with running_server(settings, names, roles) as server:
        real = await _a_customer_with_a_case(server)
        loop = asyncio.get_running_loop()
        operations, problems, sent = await asyncio.to_thread(_fuzz_all, server, loop, real)
    # The document covers the surface: channel endpoints, agent API, the ticket and the stream.
    for expected in (
        "POST /channels/sms/twilio",
        "POST /channels/chat/sessions",
        "GET /api/v1/cases",
        "POST /api/v1/cases/{case_id}/reply",
        "POST /api/v1/events/ticket",
        "GET /api/v1/events",
    ):
        assert expected in operations, operations
    print(f"fuzzed {len(operations)} operations with {sent} requests")
    assert sent >= len(operations)
    assert not problems, f"{len(problems)} of {sent} requests failed:\n" + "\n".join(problems[:40])
