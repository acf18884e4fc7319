"""An agent's load as the router counts it: tasks in flight, and decisions that have not
started yet until they start, expire or are let go."""

from __future__ import annotations

from models.routing import MAX_PENDING, AgentLoad, PolicyConfig, RoutingPolicy


def test_a_decision_weighs_until_its_task_starts_or_its_time_runs_out() -> None:
    load = AgentLoad(in_flight=2)
    load.assign("a", 1_000)
    load.assign("b", 5_000)
    assert load.total(now_ms=5_000, ttl_ms=10_000) == 4
    load.start("b")
    assert load.total(now_ms=5_000, ttl_ms=10_000) == 3
    assert load.total(now_ms=11_001, ttl_ms=10_000) == 2  # "a" expired
    assert load.pending == {}


def test_a_task_decided_again_counts_once_and_from_its_last_decision() -> None:
    load = AgentLoad()
    load.assign("a", 1_000)
    load.assign("a", 9_000)
    assert load.total(now_ms=9_000, ttl_ms=5_000) == 1
    assert load.total(now_ms=12_000, ttl_ms=5_000) == 1  # the first decision's time is stale
    assert load.total(now_ms=14_001, ttl_ms=5_000) == 0


def test_decisions_out_of_time_order_expire_each_at_its_own_time() -> None:
    load = AgentLoad()
    load.assign("late", 8_000)
    load.assign("early", 2_000)
    assert load.total(now_ms=7_001, ttl_ms=5_000) == 1
    assert list(load.pending) == ["late"]


def test_pending_decisions_are_bounded_and_the_oldest_go_first() -> None:
    load = AgentLoad()
    for i in range(MAX_PENDING + 10):
        load.assign(f"t{i}", i)
    assert len(load.pending) == MAX_PENDING
    assert "t9" not in load.pending and "t10" in load.pending


def test_started_tasks_do_not_pile_up_behind_the_counts() -> None:
    """Tasks that start right after their decision leave stale entries; the heap of
    decision times is rebuilt before it outgrows the pending decisions by much."""
    load = AgentLoad()
    for i in range(100_000):
        load.assign(f"t{i}", i)
        load.start(f"t{i}")
    assert load.pending == {}
    assert len(load.decided) <= 64 + 1


def test_the_policy_counts_its_own_decisions_in_an_agents_load() -> None:
    policy = RoutingPolicy(PolicyConfig(pending_ttl_ms=60_000))
    policy.observe_load("fast", in_flight=0, limit=4)
    for i in range(3):
        policy.assigned("fast", f"t{i}", 1_000 + i)
    assert policy.load_of("fast", 2_000) == (3, 4)
    policy.started("fast", "t0")
    assert policy.load_of("fast", 2_000) == (2, 4)
    assert policy.load_of("fast", 62_003) == (0, 4)
