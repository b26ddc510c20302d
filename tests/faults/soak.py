"""`make soak`: the long outage of issue 13, with the production delivery settings.

A whole Switchboard on its own embedded NATS and PostgreSQL, SMS traffic through the gateway all
along, and PostgreSQL away for `SOAK_SECONDS` (default 600: ten minutes, inside the "8-15 minutes"
a static review said would dead-letter pending interactions). `SOAK_FAULT=stop` (default) stops it
(connections refused), `SOAK_FAULT=freeze` SIGSTOPs it (connections hang). The ack wait (30 s) and
the delivery limit (5) are the defaults. Afterwards: every accepted interaction recorded exactly
once, none dead-lettered or quarantined, no delivery counted against one, `/ready` said what was
wrong, and how long the read side took to catch up. One summary line; exit 1 if anything failed.

    make soak                       # ten minutes stopped
    SOAK_SECONDS=900 SOAK_FAULT=freeze make soak
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from services.platform.logs import configure_logging
from tests.faults.support import (
    OwnServers,
    ReadyWatch,
    SmsLoad,
    all_recorded,
    assert_nothing_lost,
    fault_settings,
    redeliveries,
    running,
    settle,
    switchboard,
    wait_for,
)


async def soak(outage: float, fault: str, rate: float) -> str:
    root = Path(tempfile.mkdtemp(prefix="sb-soak-"))
    log_path = root / "switchboard.log"
    configure_logging("json", "info", stream=open(log_path, "a"))  # noqa: SIM115 — for the whole run
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request of the load otherwise
    print(f"soak: {fault} PostgreSQL for {outage:.0f}s under {rate:.0f} SMS/s; logs in {log_path}", flush=True)
    servers = OwnServers(root / "servers").start()
    try:
        settings = fault_settings(servers, root / "data")
        async with switchboard(settings) as server:
            load = SmsLoad(server.http_url, settings.twilio_auth_token, per_second=rate)
            ready = ReadyWatch(server.http_url)
            async with running(load.run, ready.run):
                await wait_for(lambda: len(load.accepted) >= 20, 60, "traffic before the fault")
                await wait_for(lambda: all_recorded(server, settings.database_url, load.accepted[:10]), 60, "warm")
                if fault == "freeze":
                    servers.freeze_postgres()
                else:
                    await asyncio.to_thread(servers.stop_postgres)
                began = time.monotonic()
                last_note = began
                try:
                    while (elapsed := time.monotonic() - began) < outage:
                        if time.monotonic() - last_note >= 60:
                            last_note = time.monotonic()
                            print(f"soak: {elapsed:.0f}s of {outage:.0f}s, {len(load.accepted)} accepted", flush=True)
                        await asyncio.sleep(1)  # the outage's length is the point of the soak
                finally:
                    if fault == "freeze":
                        servers.thaw_postgres()
                    else:
                        await asyncio.to_thread(servers.start_postgres)
                back = time.monotonic()
                await wait_for(lambda: all_recorded(server, settings.database_url, load.accepted), 600, "catch-up")
                catch_up = time.monotonic() - back
            result = await settle(server, load, catch_up=300, retry_for=120)
            redelivered = await redeliveries(server)
        ready_503 = sum(1 for status, _ in ready.answers if status == 503)
        summary = (
            f"soak: fault={fault} outage={outage:.0f}s accepted={result.accepted} "
            f"recorded_once={result.recorded_once} twice={len(result.recorded_twice)} "
            f"missing={len(result.missing)} dead_letters={result.dead_letters} quarantined={result.quarantined} "
            f"redeliveries={redelivered} ready_503={ready_503} ready_hung={len(ready.failures)} "
            f"catch_up={catch_up:.1f}s"
        )
        assert_nothing_lost(result)
        assert redelivered == 0, "deliveries were counted against interactions"
        assert ready_503 > 0 and not ready.failures, "/ready did not say what was wrong in time"
        return summary + " -> OK"
    except AssertionError as exc:
        raise SystemExit(f"{locals().get('summary', 'soak')} -> FAILED: {exc}") from None
    finally:
        servers.stop()


def main() -> None:
    outage = float(os.environ.get("SOAK_SECONDS", "600"))
    fault = os.environ.get("SOAK_FAULT", "stop")
    rate = float(os.environ.get("SOAK_RATE", "10"))
    if fault not in ("stop", "freeze"):
        sys.exit("SOAK_FAULT is stop or freeze")
    print(asyncio.run(soak(outage, fault, rate)), flush=True)


if __name__ == "__main__":
    main()
