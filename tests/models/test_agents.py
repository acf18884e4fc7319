"""Agent statistics, health alerts and routing advice."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from models.agents import AgentTaskStats, AgentTracker, advise


def _event(
    agent: str,
    phase: str,
    t: int,
    duration: float | None = None,
    task_type: str = "triage",
    task_id: str = "t",
) -> dict[str, object]:
    return {
        "agent": agent,
        "task_id": f"{task_id}{t}",
        "task_type": task_type,
        "phase": phase,
        "event_time": t,
        "duration_ms": duration,
    }


def test_duration_interval_covers_log_normal_runs() -> None:
    rng = np.random.default_rng(0)
    stats = AgentTaskStats()
    durations = np.exp(rng.normal(math.log(2000), 0.3, 400))
    for i, d in enumerate(durations):
        stats.started(i)
        stats.finished(float(d), True, i * 1000)
    lower, upper = stats.interval_ms()
    inside = np.mean((durations[-100:] >= lower) & (durations[-100:] <= upper))
    assert stats.expected_duration_ms() == pytest.approx(2000, rel=0.1)
    assert 0.8 <= inside <= 0.98
    assert stats.in_flight == 0


def test_advice_prefers_fast_and_reliable_agents() -> None:
    fast_flaky, steady, slow = AgentTaskStats(), AgentTaskStats(), AgentTaskStats()
    for i in range(60):
        fast_flaky.finished(500.0, i % 2 == 0, i)
        steady.finished(800.0, True, i)
        slow.finished(5000.0, True, i)
    decision = advise("triage", {"a": fast_flaky, "b": steady, "c": slow}, 123)
    assert decision is not None
    assert decision["agent"] == "b"
    assert [o["agent"] for o in decision["alternatives"]] == ["a", "c"]
    assert advise("triage", {}, 0) is None


def test_a_failure_burst_fires_and_resolves() -> None:
    tracker = AgentTracker()
    statuses = []
    rng = np.random.default_rng(1)
    for i in range(300):
        burst = 100 <= i < 160
        failed = rng.random() < (0.7 if burst else 0.05)
        step = tracker.observe(_event("a1", "FAILED" if failed else "SUCCEEDED", i, 1000.0))
        assert step is not None
        statuses += [(i, a["rule"], a["status"]) for a in step.alerts]
    assert [s[1:] for s in statuses] == [
        ("agent_failures", "FIRING"),
        ("agent_failures", "RESOLVED"),
    ]
    assert 100 <= statuses[0][0] < 130


def _failure_alerts(failures: list[bool]) -> list[tuple[int, str, str]]:
    tracker = AgentTracker()
    alerts = []
    for i, failed in enumerate(failures):
        step = tracker.observe(_event("a1", "FAILED" if failed else "SUCCEEDED", i, 1000.0))
        assert step is not None
        alerts += [(i, a["status"], a["summary"]) for a in step.alerts]
    return alerts


def test_failures_are_judged_against_the_agents_own_usual_rate() -> None:
    """The same run of failures is news from a reliable agent and ordinary from a flaky one;
    a rule on the recent failure rate alone (40 %, as before) called the flaky one out again
    and again."""
    rng = np.random.default_rng(3)
    tail = [True, False, True, True, False, True, True, True, False, True, True]  # 8 of 11 fail
    reliable = _failure_alerts([*(rng.random(400) < 0.03), *tail])
    flaky = _failure_alerts([*(rng.random(400) < 0.35), *tail])
    assert [(status, i >= 400) for i, status, _ in reliable] == [("FIRING", True)]
    shares = re.fullmatch(
        r"a1: (\d+)% of its recent tasks failed, against (\d+)% usually", reliable[0][2]
    )
    assert shares is not None and int(shares[1]) > 30 and int(shares[2]) < 10, reliable
    assert flaky == []


def test_a_new_agent_failing_from_its_first_task_is_called_out() -> None:
    """Judged against a prior of 5 %: its own failures do not become its usual rate before
    they alarm."""
    fired = [i for i, status, _ in _failure_alerts([i % 3 != 0 for i in range(40)])]
    assert fired and fired[0] < 20


def test_a_slowing_agent_is_called_out() -> None:
    tracker = AgentTracker()
    fired = []
    for i in range(400):
        slowdown = 1.0 + 2.0 * max(0, i - 200) / 200
        step = tracker.observe(_event("a2", "SUCCEEDED", i, 1000.0 * slowdown))
        assert step is not None
        fired += [i for a in step.alerts if a["status"] == "FIRING"]
    assert fired, "a 3x slowdown must be called out"
    assert 200 < fired[0] < 400


def test_started_events_only_count_in_flight() -> None:
    tracker = AgentTracker()
    assert tracker.observe(_event("a3", "STARTED", 1)) is None
    assert tracker.stats["a3"]["triage"].in_flight == 1
