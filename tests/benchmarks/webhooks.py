"""Channel webhook throughput: signed provider requests in, each one published to JetStream and acked.

A gateway (`Server` with roles `("gateway",)`, the production app and channel routes, uvicorn)
runs in a subprocess against embedded NATS (with the default `nats_sync_interval`) and PostgreSQL;
this process is the load generator. Three scenarios, one after the other, same connections and
concurrency, in one run:

- `sms`: Twilio messaging webhooks, form-encoded, `X-Twilio-Signature` checked, every request a
  new MessageSid: verify, parse, publish to JetStream, wait for the ack, answer TwiML;
- `whatsapp`: WhatsApp Cloud API webhooks, `X-Hub-Signature-256` checked, every request a new
  wamid: the same path through Meta's parser;
- `bare`: `POST /bench/bare` on the same server, a Litestar handler that decodes a small msgspec
  body and answers, nothing stored: what the cheapest route of the framework stack costs (uvicorn,
  the app's middleware, routing, a Request and a Response). The route exists only in the
  benchmark's gateway (added to its handlers before start), never in production.

The signed webhooks do not go through that stack: services/api/fastpath.py serves the provider
routes straight on ASGI in front of it (same uvicorn, same connection, same answers), and still
waits for the JetStream ack before answering. So `sms_vs_bare` compares a verified, durably stored
webhook with a framework route that stores nothing. All three run in the same gateway process,
from the same load generator, over the same connections, with the same concurrency, one after the
other in one run.

Fairness on a small machine: the gateway is one process with one event loop, so it uses one core.
The load generator is another process; on Linux each is pinned to its own core (when there are at
least two), so the generator never steals the gateway's CPU. NATS and PostgreSQL are left to the
scheduler. The generator speaks HTTP/1.1 keep-alive on raw asyncio streams (no client library in
the way: httpx would saturate its own core first); requests are signed on the fly, which costs
the generator microseconds, not the gateway.

The HTTP server was chosen by this benchmark. Candidates, all running our app in our process:
uvicorn with h11 (the earlier one, pure Python), uvicorn with httptools (llhttp, C), the same on
uvloop, and granian's embedded server (Rust HTTP, callbacks on our loop). Every run measures the bare
endpoint on h11 (the baseline) and all three scenarios on the chosen server; SB_BENCH_HTTP=all
measures every candidate on every scenario first.

The last line is the summary: `webhook: server=NAME sms_req_per_s=N whatsapp_req_per_s=N
bare_req_per_s=N bare_h11_req_per_s=N bare_vs_h11=Rx sms_vs_bare=Rx whatsapp_vs_bare=Rx`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import psutil

from services.platform.embedded import free_port

CONNECTIONS = 32
WARMUP_S = 1.5
MEASURE_S = 6.0
TWILIO_TOKEN = secrets.token_urlsafe(24)
META_SECRET = secrets.token_urlsafe(24)


# -- the gateway (subprocess) ----------------------------------------------------------------------


def _serve(config: dict) -> None:
    """Runs in the subprocess: the production gateway plus the benchmark-only bare route."""
    import msgspec  # noqa: PLC0415
    from litestar import Request, post  # noqa: PLC0415

    import channels.routes  # noqa: PLC0415 -- lazy: imported in the pinned server subprocess only
    import services.server  # noqa: PLC0415 -- lazy: imported in the pinned server subprocess only
    from services.platform.logs import configure_logging  # noqa: PLC0415 -- lazy: imported in the pinned server subprocess only
    from services.platform.settings import ensure_secrets, load_settings  # noqa: PLC0415 -- lazy: imported in the pinned server subprocess only
    from services.platform.streams import Names  # noqa: PLC0415 -- lazy: imported in the pinned server subprocess only
    from services.server import Server  # noqa: PLC0415 -- lazy: imported in the pinned server subprocess only

    class Ping(msgspec.Struct):
        id: str
        text: str

    decode = msgspec.json.Decoder(Ping).decode

    @post("/bench/bare", status_code=200)
    async def bare(request: Request) -> dict:
        ping = decode(await request.body())
        return {"ok": True, "id": ping.id}

    # services.server binds channel_handlers when it is imported: add the bare endpoint there.
    production = channels.routes.channel_handlers
    services.server.channel_handlers = lambda: [*production(), bare]

    settings = ensure_secrets(
        load_settings(
            environ={},
            data_dir=Path(config["data_dir"]),
            nats_url=config["nats_url"],
            database_url=config["database_url"],
            twilio_auth_token=config["twilio_token"],
            meta_app_secret=config["meta_secret"],
            log_format="json",
        )
    )
    # As in production: JSON lines at info (one per published interaction), to a discarded stderr.
    configure_logging(settings.log_format, settings.log_level)

    http, _, loop = config["server"].partition("+")
    server_class = _granian_server_class() if http == "granian" else Server

    async def main() -> None:
        kwargs = {} if http == "granian" else {"http_parser": http}
        server = server_class(settings, ("gateway",), http=("127.0.0.1", config["port"]), names=Names(), **kwargs)
        await server.start()
        print("ready", flush=True)
        try:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
        finally:
            await server.stop()

    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 -- a candidate only

        uvloop.run(main())
    else:
        asyncio.run(main())


def _granian_server_class():
    """A candidate: our Server with granian's embedded server (Rust HTTP, callbacks on our loop) instead
    of uvicorn, on the same app. Measured, not shipped: see the module docstring."""
    from granian.constants import Interfaces  # noqa: PLC0415
    from granian.server.embed import Server as Granian  # noqa: PLC0415

    from services.api.app import build_app  # noqa: PLC0415
    from services.api.fastpath import WebhookFastPath  # noqa: PLC0415
    from services.bootstrap import open_http_services  # noqa: PLC0415
    from services.server import Server  # noqa: PLC0415

    class GranianServer(Server):
        async def _start_http(self, address):
            self.services = services = await open_http_services(self.sb)
            services.chat_gateway = await self._start_chat()
            import services.server as server_module  # noqa: PLC0415

            app = WebhookFastPath(
                build_app(services, self.roles, server_module.channel_handlers()),
                services,
                self.settings.max_body_bytes,
            )
            self.granian = Granian(
                app, address=address[0], port=address[1], interface=Interfaces.ASGI, log_enabled=False
            )
            self.granian_task = task = asyncio.create_task(self.granian.serve())
            while True:  # no "started" flag: wait until the port answers
                if task.done():
                    task.result()
                try:
                    _, writer = await asyncio.open_connection(*address)
                    writer.close()
                    return
                except OSError:
                    await asyncio.sleep(0.02)

        async def stop(self):
            self.granian.stop()
            await asyncio.wait_for(self.granian_task, 10)
            self.granian = None
            await super().stop()

    return GranianServer


# -- the load generator ----------------------------------------------------------------------------


class Scenario:
    def __init__(self, name: str, port: int):
        self.name = name
        self.host = f"127.0.0.1:{port}"
        self.counter = 0

    def request(self) -> bytes:
        raise NotImplementedError

    def _http(self, path: str, content_type: str, body: bytes, headers: dict[str, str]) -> bytes:
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class TwilioSms(Scenario):
    def request(self) -> bytes:
        self.counter += 1
        sid = f"SM{self.counter:032x}"
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": "+14155550100",
            "To": "+15005550006",
            "Body": f"Where is my order {self.counter}?",
            "NumMedia": "0",
        }
        url = f"http://{self.host}/channels/sms/twilio"
        payload = url + "".join(k + params[k] for k in sorted(params))
        signature = base64.b64encode(hmac.new(TWILIO_TOKEN.encode(), payload.encode(), hashlib.sha1).digest())
        return self._http(
            "/channels/sms/twilio",
            "application/x-www-form-urlencoded",
            urlencode(params).encode(),
            {"X-Twilio-Signature": signature.decode()},
        )


class WhatsApp(Scenario):
    def request(self) -> bytes:
        self.counter += 1
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "102290129340398",
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {
                                        "display_phone_number": "15550783881",
                                        "phone_number_id": "106540352242922",
                                    },
                                    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                                    "messages": [
                                        {
                                            "from": "16505551234",
                                            "id": f"wamid.BENCH{self.counter:020d}",
                                            "timestamp": "1749416383",
                                            "type": "text",
                                            "text": {"body": f"Does it come in another color? ({self.counter})"},
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        signature = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return self._http("/channels/social/meta", "application/json", body, {"X-Hub-Signature-256": signature})


class Bare(Scenario):
    def request(self) -> bytes:
        self.counter += 1
        body = json.dumps({"id": str(self.counter), "text": "Where is my order?"}).encode()
        return self._http("/bench/bare", "application/json", body, {})


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _load(scenario: Scenario, port: int, seconds: float) -> tuple[int, int]:
    """(2xx answers, other answers) within `seconds`, from CONNECTIONS keep-alive connections."""
    ok = failed = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                writer.write(scenario.request())
                status = await _read_response(reader)
                if 200 <= status < 300:
                    ok += 1
                else:
                    failed += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return ok, failed


# What each scenario is, printed beside its figure.
WHAT = {
    "sms": "POST /channels/sms/twilio: Twilio form, X-Twilio-Signature checked, new MessageSid, "
    "published to JetStream and acked before the TwiML answer (webhook fast path)",
    "whatsapp": "POST /channels/social/meta: WhatsApp Cloud API JSON, X-Hub-Signature-256 checked, new wamid, "
    "published to JetStream and acked before the answer (webhook fast path)",
    "bare": "POST /bench/bare: a Litestar handler decoding a small msgspec body, nothing stored "
    "(the framework stack alone)",
}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the gateway process, all its threads (granian's I/O threads too)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def _measure(port: int, scenarios: tuple[str, ...], label: str, pid: int) -> dict[str, tuple[float, float]]:
    """(requests per second, gateway CPU microseconds per request) per scenario. The rate depends on
    how much of its core the load generator gets on a shared machine; the CPU per request is what
    the server spends, whatever else runs."""
    rates = {}
    kinds = {"sms": TwilioSms, "whatsapp": WhatsApp, "bare": Bare}
    for name in scenarios:
        print(f"   {label:20s} {name:9s} is {WHAT[name]}", flush=True)
        scenario = kinds[name](name, port)
        await _load(scenario, port, WARMUP_S)
        cpu0 = _cpu_seconds(pid)
        start = time.perf_counter()
        ok, failed = await _load(scenario, port, MEASURE_S)
        elapsed = time.perf_counter() - start
        cpu_us = (_cpu_seconds(pid) - cpu0) / max(ok, 1) * 1e6
        if failed:
            raise RuntimeError(f"{label} {scenario.name}: {failed} non-2xx answers")
        rates[scenario.name] = (ok / elapsed, cpu_us)
        print(
            f"   {label:20s} {scenario.name:9s} {ok:7d} requests in {elapsed:.1f}s = {ok / elapsed:7.0f} req/s, "
            f"{cpu_us:5.0f} us of gateway CPU each (load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    return rates


def _pin(pid: int, cpu: int) -> bool:
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


# What runs our app: the chosen server (services.server's default) and today's baseline, measured in
# the same run. SB_BENCH_HTTP=all measures every candidate on every scenario (how the choice was made).
CHOSEN = "httptools"
BASELINE = "h11"
CANDIDATES = ("h11", "httptools", "httptools+uvloop", "granian")


def _gateway(
    server: str, nats_url: str, database_url: str, scenarios: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    """Starts a gateway running on `server`, loads it with `scenarios`, stops it; the rates."""
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        config = {
            "nats_url": nats_url,
            "database_url": database_url,
            "data_dir": data_dir,
            "port": port,
            "twilio_token": TWILIO_TOKEN,
            "meta_secret": META_SECRET,
            "server": server,
        }
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.webhooks", "--serve", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).parents[2],
        )
        try:
            line = gateway.stdout.readline()
            if b"ready" not in line:
                raise RuntimeError(f"the benchmark gateway ({server}) did not start")
            pinned = _pin(gateway.pid, 1) and _pin(0, 0)
            print(
                f"   {server}: gateway pid {gateway.pid} "
                f"{'on CPU 1, load generator on CPU 0' if pinned else 'unpinned'}; "
                f"{CONNECTIONS} keep-alive connections, {MEASURE_S:.0f}s per scenario after {WARMUP_S}s warm-up",
                flush=True,
            )
            return asyncio.run(_measure(port, scenarios, server, gateway.pid))
        finally:
            with contextlib.suppress(Exception):
                gateway.stdin.close()
            try:
                gateway.wait(20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def main() -> str:
    from tests.benchmarks._servers import servers  # noqa: PLC0415

    every = ("sms", "whatsapp", "bare")
    with servers() as (nats_url, database_url):
        if os.environ.get("SB_BENCH_HTTP") == "all":
            for server in CANDIDATES:
                _gateway(server, nats_url, database_url, every)
        baseline = _gateway(BASELINE, nats_url, database_url, ("bare",))
        chosen = _gateway(CHOSEN, nats_url, database_url, every)
    rate = {name: value[0] for name, value in chosen.items()}
    cpu = {name: value[1] for name, value in chosen.items()}
    bare_ratio = rate["bare"] / baseline["bare"][0]
    sms_ratio = rate["sms"] / rate["bare"]
    whatsapp_ratio = rate["whatsapp"] / rate["bare"]
    # The same ratios in server CPU per request (how many requests a core of the gateway's serves).
    bare_cpu_ratio = baseline["bare"][1] / cpu["bare"]
    sms_cpu_ratio = cpu["bare"] / cpu["sms"]
    whatsapp_cpu_ratio = cpu["bare"] / cpu["whatsapp"]
    print(
        f"   bare {CHOSEN}/{BASELINE} = {bare_ratio:.2f}x (target >= 1.5x); "
        f"sms/bare = {sms_ratio:.2f}x, whatsapp/bare = {whatsapp_ratio:.2f}x (target >= 0.6x); "
        f"per gateway CPU: bare {bare_cpu_ratio:.2f}x of {BASELINE}, sms {sms_cpu_ratio:.2f}x and whatsapp "
        f"{whatsapp_cpu_ratio:.2f}x of bare; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return (
        f"webhook: server={CHOSEN} sms_req_per_s={rate['sms']:.0f} whatsapp_req_per_s={rate['whatsapp']:.0f} "
        f"bare_req_per_s={rate['bare']:.0f} bare_{BASELINE}_req_per_s={baseline['bare'][0]:.0f} "
        f"bare_vs_{BASELINE}={bare_ratio:.2f}x sms_vs_bare={sms_ratio:.2f}x whatsapp_vs_bare={whatsapp_ratio:.2f}x "
        f"sms_cpu_us={cpu['sms']:.0f} whatsapp_cpu_us={cpu['whatsapp']:.0f} bare_cpu_us={cpu['bare']:.0f} "
        f"bare_{BASELINE}_cpu_us={baseline['bare'][1]:.0f} bare_cpu_vs_{BASELINE}={bare_cpu_ratio:.2f}x "
        f"sms_cpu_vs_bare={sms_cpu_ratio:.2f}x whatsapp_cpu_vs_bare={whatsapp_cpu_ratio:.2f}x "
        f"load={os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve(json.loads(sys.argv[2]))
    else:
        print(main())
