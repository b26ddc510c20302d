"""The cases read model's SLA state: the earliest running target's due time, paused and breached
cases, live as the timer records it, and `projections rebuild` reproducing it row for row."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from projections.runner import ProjectionRunner
from services.core.commands import run_case
from services.timer.sla import SlaTimer
from tests.integration.test_sla_timer import FRIDAY_1750, MONDAY, FakeClock, configure, open_case

pytestmark = pytest.mark.integration


def dump(database_url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(database_url) as conn:
        return {
            "proj_cases": conn.execute("SELECT * FROM proj_cases ORDER BY id").fetchall(),
            "proj_case_sla": conn.execute("SELECT * FROM proj_case_sla ORDER BY case_id, target").fetchall(),
        }


def sla_of(database_url: str, case_id) -> tuple:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT sla_due_at, sla_state, sla_breached FROM proj_cases WHERE id = %s", (case_id,)
        ).fetchone()


def test_live_sla_state_and_a_rebuild_that_reproduces_it(store, database_url) -> None:
    configure(store)
    live = ProjectionRunner(store, batch_size=3)
    timer = SlaTimer(store, FakeClock(FRIDAY_1750)).follower()

    running, breached, pending, resolved = (open_case(store) for _ in range(4))
    no_policy = open_case(store, queue="elsewhere")
    timer.catch_up()
    live.catch_up()
    assert sla_of(database_url, running) == (MONDAY.replace(hour=9, minute=5), "running", False)
    assert sla_of(database_url, no_policy) == (None, None, False)

    reply_at = FRIDAY_1750 + timedelta(minutes=5)
    run_case(store, pending, lambda c: c.request_reply(uuid.uuid4(), "hi", "ana", reply_at))
    run_case(store, resolved, lambda c: c.request_reply(uuid.uuid4(), "hi", "ana", reply_at))
    run_case(store, resolved, lambda c: c.resolve("ana", reply_at + timedelta(minutes=1)))
    timer.catch_up()
    # Breach the first response of all cases still waiting for it (`running`, `breached`).
    timer.run_tick(MONDAY.replace(hour=9, minute=6))
    timer.catch_up()
    # `running` has its first response breached, and then gets an answer: resolution still runs.
    run_case(store, running, lambda c: c.add_message(uuid.uuid4(), "outbound", "sms", MONDAY.replace(hour=9, minute=7)))
    timer.catch_up()
    live.catch_up()

    assert sla_of(database_url, breached) == (MONDAY.replace(hour=10, minute=50), "breached", True)
    assert sla_of(database_url, running) == (MONDAY.replace(hour=10, minute=50), "breached", True)
    assert sla_of(database_url, pending) == (None, "paused", False)
    assert sla_of(database_url, resolved) == (None, "met", False)

    before = dump(database_url)
    ProjectionRunner(store).rebuild()
    after = dump(database_url)
    assert after == before
