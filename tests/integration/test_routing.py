"""The router on the real event store: two routers running at once (threads, and processes of
`switchboard serve router`), a burst of cases on two queues; every case assigned once, nobody over
capacity at any position of the log, waiting cases taken oldest first as capacity frees, an agent
going offline hands their cases on, and a transfer routes the case again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from services.core.commands import run_case, run_command
from services.domain.agent import Agent
from services.domain.case import Case
from services.routing.router import Router, router_follower
from tests.fixtures.routing import configure_queue, create_agent, fold, now, set_status

pytestmark = pytest.mark.integration


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        pause.wait(0.05)


def open_cases(store, queue: str, n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        case = Case.open(uuid.uuid4(), uuid.uuid4(), "chat", None, now(), queue=queue)
        with store.transaction() as tx:
            tx.append(case.collect())
        ids.append(case.id)
    return ids


def setup_contact_centre(store) -> dict[str, str]:
    """Two routed queues: support (round robin, team support, skill en) and sales (least loaded,
    team sales). Four agents; one of support lacks the skill and one is offline."""
    agents = {
        "ana": create_agent(store, "ana@example.com", ["support"], ["en", "es"], capacity=2),
        "bo": create_agent(store, "bo@example.com", ["support", "sales"], ["en"], capacity=3),
        "cy": create_agent(store, "cy@example.com", ["support"], ["fr"], capacity=5),  # no en
        "di": create_agent(store, "di@example.com", ["sales"], [], capacity=2),
        "ed": create_agent(store, "ed@example.com", ["sales", "support"], ["en"], capacity=4, online=False),
    }
    configure_queue(store, "support", "round_robin", team="support", skills=["en"])
    configure_queue(store, "sales", "least_loaded", team="sales")
    return agents


def resolve_routed_until_all_assigned(store, cases: list[uuid.UUID], timeout: float = 90.0) -> None:
    """Plays the agents: resolves every case routing assigned, which frees room for the waiting ones."""
    done: set[uuid.UUID] = set()
    deadline = time.monotonic() + timeout
    while len(done) < len(cases):
        assert time.monotonic() < deadline, f"{len(cases) - len(done)} cases never assigned"
        progressed = False
        for case_id in cases:
            if case_id in done:
                continue
            case = Case.replay(case_id, store.load(case_id))
            if case.assignee is not None:
                run_case(store, case_id, lambda c: c.resolve("agent", now()))
                done.add(case_id)
                progressed = True
        if not progressed:
            threading.Event().wait(0.05)


def check_burst(store, agents, support, sales) -> None:
    log = fold(store)
    assert log.violations == []
    for case_id in support + sales:
        assert len(log.routed_to(case_id)) == 1, f"case {case_id} routed {log.routed_to(case_id)}"
    # Waiting cases were taken oldest first: each queue's cases assigned in the order they opened.
    order = [c for _, c, a in log.assignments if a is not None]
    assert [c for c in order if c in set(support)] == support
    assert [c for c in order if c in set(sales)] == sales
    who = {c: log.routed_to(c)[0] for c in support + sales}
    assert {who[c] for c in support} == {agents["ana"], agents["bo"]}  # cy lacks en, ed offline
    assert agents["di"] in {who[c] for c in sales} <= {agents["bo"], agents["di"]}  # bo's room is shared


def test_two_routers_at_once_assign_a_burst_once_within_capacity(store) -> None:
    agents = setup_contact_centre(store)
    stop = threading.Event()
    routers = [router_follower(store, batch_size=7), router_follower(store, batch_size=7)]
    threads = [threading.Thread(target=r.run_forever, args=(stop,), daemon=True) for r in routers]
    for t in threads:
        t.start()
    try:
        support = open_cases(store, "support", 24)
        sales = open_cases(store, "sales", 12)
        # Room for 5 support cases (ana 2, bo 3) and, bo's room shared, some sales cases: the rest wait.
        wait_until(lambda: len([a for _, _, a in fold(store).assignments if a]) >= 5, what="first assignments")
        assert fold(store).violations == []
        resolve_routed_until_all_assigned(store, support + sales)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    check_burst(store, agents, support, sales)


def test_two_router_processes_assign_a_burst_once_within_capacity(store, settings, tmp_path) -> None:
    agents = setup_contact_centre(store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_DATA_DIR=str(tmp_path),
        SWITCHBOARD_DATABASE_URL=settings.database_url,
        SWITCHBOARD_MASTER_KEY=settings.master_key,  # and no NATS: the router needs only PostgreSQL
        SWITCHBOARD_LOG_FORMAT="json",
    )
    script = Path(sys.executable).with_name("switchboard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]
    procs = [
        subprocess.Popen(
            [*command, "serve", "router"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"router{i}.log", "wb"),  # noqa: SIM115 -- closed with the process
        )
        for i in range(2)
    ]
    try:
        support = open_cases(store, "support", 16)
        sales = open_cases(store, "sales", 8)
        resolve_routed_until_all_assigned(store, support + sales)
        assert all(p.poll() is None for p in procs), "both routers still running"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    check_burst(store, agents, support, sales)


def test_an_agent_going_offline_hands_their_cases_on_or_back_to_wait(store) -> None:
    ana = create_agent(store, "ana@example.com", ["support"], ["en"], capacity=2)
    bo = create_agent(store, "bo@example.com", ["support"], ["en"], capacity=1)
    configure_queue(store, "support", "least_loaded", team="support")
    router = router_follower(store)
    cases = open_cases(store, "support", 3)
    router.catch_up()
    assigned = {c: Case.replay(c, store.load(c)).assignee for c in cases}
    assert sorted(assigned.values()) == sorted([ana, ana, bo])
    set_status(store, ana, "offline")
    router.catch_up()
    after = {c: Case.replay(c, store.load(c)).assignee for c in cases}
    # bo is full: ana's two cases wait, unassigned; bo keeps theirs.
    assert sorted(after.values(), key=str) == sorted([bo, None, None], key=str)
    run_case(store, next(c for c in cases if after[c] == bo), lambda c: c.resolve("agent", now()))
    router.catch_up()
    waiting = [c for c in cases if after[c] is None]
    now_with = {c: Case.replay(c, store.load(c)).assignee for c in waiting}
    oldest = min(waiting, key=cases.index)
    assert now_with == {oldest: bo, next(c for c in waiting if c != oldest): None}
    set_status(store, ana, "online")
    router.catch_up()
    assert {Case.replay(c, store.load(c)).assignee for c in waiting} == {bo, ana}
    assert fold(store).violations == []


def test_a_transfer_routes_again_and_a_manual_queue_keeps_the_assignee(store) -> None:
    ana = create_agent(store, "ana@example.com", ["support"], ["en"], capacity=3)
    bo = create_agent(store, "bo@example.com", ["billing"], ["en"], capacity=3)
    configure_queue(store, "support", "round_robin", team="support")
    configure_queue(store, "billing", "round_robin", team="billing")
    router = router_follower(store)
    [case_id] = open_cases(store, "support", 1)
    router.catch_up()
    assert Case.replay(case_id, store.load(case_id)).assignee == ana
    run_case(store, case_id, lambda c: c.transfer("billing", "agent", now()))
    router.catch_up()
    assert Case.replay(case_id, store.load(case_id)).assignee == bo
    run_case(store, case_id, lambda c: c.transfer("email", "agent", now()))  # never PUT: manual
    router.catch_up()
    case = Case.replay(case_id, store.load(case_id))
    assert (case.queue, case.assignee) == ("email", bo)


def test_a_reopened_case_goes_back_to_its_agent_and_people_count_toward_load(store) -> None:
    ana = create_agent(store, "ana@example.com", capacity=1)
    bo = create_agent(store, "bo@example.com", capacity=1)
    configure_queue(store, "chat", "least_loaded")
    router = router_follower(store)
    [first] = open_cases(store, "chat", 1)
    router.catch_up()
    assert Case.replay(first, store.load(first)).assignee == ana
    run_case(store, first, lambda c: c.resolve("agent", now()))
    [manual] = open_cases(store, "email", 1)  # a manual queue: a person assigns bo
    run_case(store, manual, lambda c: c.assign(bo, "supervisor", now()))
    run_case(store, first, lambda c: c.reopen("agent", now()))
    [second] = open_cases(store, "chat", 1)
    router.catch_up()
    assert Case.replay(first, store.load(first)).assignee == ana  # kept: ana is free again
    assert Case.replay(second, store.load(second)).assignee is None  # ana full, bo full by hand
    run_case(store, manual, lambda c: c.resolve("agent", now()))
    router.catch_up()
    assert Case.replay(second, store.load(second)).assignee == bo
    assert fold(store).violations == []


def test_routing_state_follows_its_own_decisions_read_back(store) -> None:
    """The router reads its own case.Assigned later: nothing changes, nothing is decided twice."""
    create_agent(store, "ana@example.com", capacity=10)
    configure_queue(store, "chat", "round_robin")
    router = router_follower(store, batch_size=3)
    cases = open_cases(store, "chat", 7)
    router.catch_up()
    router.catch_up()
    log = fold(store)
    assert [len(log.routed_to(c)) for c in cases] == [1] * 7
    with store.transaction() as tx:
        assert Router().assign_waiting(tx) == 0  # nothing waits


def test_raising_capacity_or_gaining_a_skill_takes_waiting_cases(store) -> None:
    ana = create_agent(store, "ana@example.com", ["support"], [], capacity=1)
    configure_queue(store, "support", "round_robin", team="support", skills=["de"])
    router = router_follower(store)
    first, second = open_cases(store, "support", 2)
    router.catch_up()
    assert [Case.replay(c, store.load(c)).assignee for c in (first, second)] == [None, None]  # no de
    run_command(store, Agent, uuid.UUID(ana), lambda a: a.change("admin", now(), skills=["de"], teams=["support"]))
    router.catch_up()
    assert [Case.replay(c, store.load(c)).assignee for c in (first, second)] == [ana, None]  # full
    run_command(store, Agent, uuid.UUID(ana), lambda a: a.change("admin", now(), capacity=2, skills=[]))
    router.catch_up()
    # capacity 2 now, but the skill is gone again: the second still waits
    assert Case.replay(second, store.load(second)).assignee is None
    run_command(store, Agent, uuid.UUID(ana), lambda a: a.change("admin", now(), skills=["de", "en"]))
    router.catch_up()
    assert Case.replay(second, store.load(second)).assignee == ana
    assert fold(store).violations == []
