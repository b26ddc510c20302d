"""Who gets a case of a routed queue (services/domain/assignment.py): online agents of the team with
every required skill and room under their capacity; round robin in turn, least loaded by load; an
assignee who is still free keeps the case; nobody free: it waits."""

from __future__ import annotations

from services.domain.assignment import AgentState, QueueRule, choose, works

RR = QueueRule("billing", "round_robin", team="billing", required_skills=frozenset({"es"}))
LL = QueueRule("sales", "least_loaded")


def agent(i: str, order: int, **kw) -> AgentState:
    fields = {"status": "online", "teams": frozenset({"billing"}), "skills": frozenset({"es", "en"}), "capacity": 2}
    fields.update(kw)
    return AgentState(i, order, **fields)


def test_only_online_enabled_agents_of_the_team_with_every_skill_work_a_queue() -> None:
    assert works(agent("a", 1), RR)
    assert not works(agent("a", 1, status="busy"), RR)
    assert not works(agent("a", 1, status="offline"), RR)
    assert not works(agent("a", 1, disabled=True), RR)
    assert not works(agent("a", 1, teams=frozenset({"sales"})), RR)
    assert not works(agent("a", 1, skills=frozenset({"en"})), RR)
    assert works(agent("a", 1, teams=frozenset()), LL)  # a queue without a team: any agent


def test_round_robin_takes_turns_in_creation_order_and_wraps_around() -> None:
    agents = [agent("c", 3), agent("a", 1), agent("b", 2)]
    loads: dict[str, int] = {}
    turns = []
    last = None
    for _ in range(4):
        last = choose(RR, agents, loads, last_turn=last)
        turns.append(last)
    assert turns == ["a", "b", "c", "a"]


def test_round_robin_skips_whoever_is_full_or_away() -> None:
    agents = [agent("a", 1), agent("b", 2, status="offline"), agent("c", 3)]
    assert choose(RR, agents, {"c": 2}, last_turn="a") == "a"  # b away, c full: back to a
    assert choose(RR, agents, {}, last_turn="a") == "c"


def test_least_loaded_takes_the_fewest_open_ties_to_the_first_created() -> None:
    agents = [agent("b", 2, capacity=5), agent("a", 1, capacity=5), agent("c", 3, capacity=5)]
    assert choose(LL, agents, {"a": 2, "b": 1, "c": 1}) == "b"
    assert choose(LL, agents, {"a": 1, "b": 1, "c": 1}) == "a"


def test_nobody_at_or_over_capacity_gets_a_case() -> None:
    agents = [agent("a", 1, capacity=1), agent("b", 2, capacity=0)]
    assert choose(LL, agents, {"a": 1}) is None
    assert choose(RR, agents, {"a": 3}) is None


def test_an_assignee_still_free_keeps_the_case_one_away_loses_it() -> None:
    agents = [agent("a", 1), agent("b", 2)]
    # a holds this case (load 2 includes it, capacity 2): keeps it, no turn taken
    assert choose(RR, agents, {"a": 2}, current="a", last_turn="a") == "a"
    away = [agent("a", 1, status="offline"), agent("b", 2)]
    assert choose(RR, away, {"a": 2}, current="a", last_turn="b") == "b"
    assert choose(RR, [agent("a", 1, status="offline")], {"a": 1}, current="a") is None


def test_a_manual_queue_leaves_the_case_as_it_is() -> None:
    manual = QueueRule("email")
    assert choose(manual, [agent("a", 1)], {}) is None
    assert choose(manual, [agent("a", 1)], {}, current="z") == "z"
