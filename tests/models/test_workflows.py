"""Workflow patterns (rare paths, loops, stalls, precursors) and best-practice advice."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from scipy import stats

from models.workflows import (
    ADVICE,
    LOOP,
    MIN_SUPPORT,
    PRECURSOR,
    RARE_PATH,
    STALL,
    WorkflowConfig,
    WorkflowTracker,
    benjamini_hochberg,
    find_loop,
    two_proportion_p,
)

Record = dict[str, Any]
GAP_MS = 10_000  # between two events of a workflow


class Runner:
    """Workflows through a tracker, one event time for all, every alert kept."""

    def __init__(self, config: WorkflowConfig | None = None) -> None:
        self.tracker = WorkflowTracker(config or WorkflowConfig(window=200))
        self.t_ms = 0
        self.count = 0
        self.alerts: list[Record] = []

    def event(self, workflow: str, task: str, task_type: str, phase: str, **fields: Any) -> None:
        self.t_ms += GAP_MS
        record = {"workflow_id": workflow, "task_id": task, "task_type": task_type,
                  "phase": phase, "event_time": self.t_ms, "parent_task_id": f"{workflow}-root",
                  "step": None, "error_class": None, **fields}  # fmt: skip
        self.alerts += self.tracker.observe(record)

    def start(self, kind: str = "release") -> str:
        self.count += 1
        workflow = f"wf-{self.count}"
        self.event(workflow, f"{workflow}-root", kind, "STARTED", parent_task_id=None)
        return workflow

    def step(self, workflow: str, task_type: str, step: int, error: str | None = None) -> None:
        """A step that succeeds, or fails with ``error`` and is retried (the same step)."""
        task = f"{workflow}-{step}"
        self.event(workflow, task, task_type, "STARTED", step=step)
        if error is not None:
            self.event(workflow, task, task_type, "FAILED", step=step, error_class=error)
            task = f"{task}-retry"
            self.event(workflow, task, task_type, "STARTED", step=step)
        self.event(workflow, task, task_type, "SUCCEEDED", step=step)

    def end(self, workflow: str, failed: bool = False, kind: str = "release") -> None:
        phase = "FAILED" if failed else "SUCCEEDED"
        self.event(workflow, f"{workflow}-root", kind, phase, parent_task_id=None)
        self.flush()

    def flush(self) -> None:
        """Event time past the reorder allowance of everything seen."""
        reorder_ms = int(self.tracker.config.reorder_s * 1000)
        self.alerts += self.tracker.advance(self.t_ms + reorder_ms)

    def run(
        self,
        path: tuple[str, ...],
        failed: bool = False,
        errors: dict[int, str] | None = None,
        kind: str = "release",
    ) -> str:
        workflow = self.start(kind)
        for step, task_type in enumerate(path, start=1):
            self.step(workflow, task_type, step, (errors or {}).get(step))
        self.end(workflow, failed, kind)
        return workflow

    def fired(self, rule: str) -> list[Record]:
        return [a for a in self.alerts if a["rule"] == rule and a["status"] == "FIRING"]

    def resolved(self, rule: str) -> list[Record]:
        return [a for a in self.alerts if a["rule"] == rule and a["status"] == "RESOLVED"]


USUAL = ("plan", "build", "test", "deploy")


def test_a_rare_step_fires_with_its_evidence_and_resolves_with_the_outcome() -> None:
    runner = Runner()
    for _ in range(MIN_SUPPORT):
        runner.run(USUAL)
    workflow = runner.start()
    runner.step(workflow, "plan", 1)
    runner.step(workflow, "build", 2)
    assert runner.fired(RARE_PATH) == []
    runner.step(workflow, "summarise", 3)
    (alert,) = runner.fired(RARE_PATH)
    assert alert["entity"] == workflow and alert["severity"] == "INFO"
    labels = alert["labels"]
    assert (labels["workflow_kind"], labels["path"]) == ("release", "plan → build → summarise")
    assert (labels["rare_step"], labels["rare_position"], labels["took"]) == ("summarise", "3", "0")
    assert (labels["reached"], labels["usual_next"], labels["path_frequency"]) == (
        str(MIN_SUPPORT), "test", "0.0000"
    )  # fmt: skip
    assert "`summarise` after plan → build in 0 of 50 release workflows" in alert["summary"]
    runner.step(workflow, "deploy", 4)
    runner.end(workflow, failed=True)
    (resolved,) = runner.resolved(RARE_PATH)
    assert resolved["alert_id"] == alert["alert_id"]
    assert resolved["labels"]["outcome"] == "FAILED"


def test_events_out_of_order_within_the_reorder_allowance_count_in_step_order() -> None:
    runner = Runner()
    for _ in range(MIN_SUPPORT):
        runner.run(USUAL)
    t0, tracker = runner.t_ms, runner.tracker
    base = {"workflow_id": "late", "parent_task_id": "late-root", "error_class": None}
    root = base | {"task_id": "late-root", "task_type": "release", "parent_task_id": None,
                   "step": None}  # fmt: skip
    steps = [
        base | {"task_id": f"late-{n}", "task_type": t, "step": n, "phase": "STARTED",
                "event_time": t0 + 1000 * n}
        for n, t in enumerate(USUAL, start=1)
    ]  # fmt: skip
    end = root | {"phase": "SUCCEEDED", "event_time": t0 + 4500}
    arrivals = [root | {"phase": "STARTED", "event_time": t0}, steps[1], steps[0], end,
                steps[3], steps[2]]  # fmt: skip
    alerts = [a for event in arrivals for a in tracker.observe(event)]
    alerts += tracker.advance(t0 + 10_000)
    assert alerts == []
    assert tracker.kinds["release"].window[-1].path == USUAL


def test_paths_are_not_judged_before_enough_workflows_got_there() -> None:
    runner = Runner()
    for _ in range(MIN_SUPPORT - 1):
        runner.run(USUAL)
    runner.run(("plan", "summarise"))
    assert runner.fired(RARE_PATH) == []


def test_an_uncommon_step_is_not_rare() -> None:
    runner = Runner()
    for i in range(100):
        runner.run(USUAL if i % 20 else ("plan", "build", "deploy"))  # 5% skip test
    runner.run(("plan", "build", "deploy"))
    assert runner.fired(RARE_PATH) == []


def test_a_loop_fires_once_but_retries_are_no_loop() -> None:
    runner = Runner()
    retried = runner.run(USUAL, errors={2: "timeout", 3: "timeout"})
    looping = runner.run(("plan", "build", "test", "build", "test", "build", "test", "deploy"))
    (alert,) = runner.fired(LOOP)
    assert alert["entity"] == looping != retried
    assert (alert["labels"]["cycle"], alert["labels"]["repeats"]) == ("build → test", "3")
    assert find_loop(("a", "b", "b", "b"), 3) == (("b",), 3)
    assert find_loop(("a", "b", "c", "a", "b", "c"), 2) == (("a", "b", "c"), 2)
    assert find_loop(("a", "b", "a", "b"), 3) is None


def test_a_stall_is_judged_against_the_kinds_usual_gaps() -> None:
    runner = Runner(WorkflowConfig(window=200, stall_min_s=30.0))
    for _ in range(MIN_SUPPORT):
        runner.run(USUAL)  # every gap 10 s: stalled after max(30 s, 3 x 10 s)
    workflow = runner.start()
    runner.step(workflow, "plan", 1)
    runner.event(workflow, f"{workflow}-2", "build", "STARTED", step=2)
    quiet_from = runner.t_ms
    assert runner.tracker.advance(quiet_from + 29_000) == []
    (alert,) = runner.tracker.advance(quiet_from + 31_000)
    assert (alert["rule"], alert["entity"], alert["status"]) == (STALL, workflow, "FIRING")
    assert (alert["labels"]["quiet_s"], alert["labels"]["stall_after_s"]) == ("31", "30")
    assert "last step `build`" in alert["summary"]
    assert runner.tracker.advance(quiet_from + 60_000) == []  # fired once
    runner.t_ms = quiet_from + 61_000
    runner.event(workflow, f"{workflow}-2", "build", "SUCCEEDED", step=2)
    (resolved,) = runner.resolved(STALL)
    assert resolved["labels"]["outcome"] == "moved"


def test_an_event_stamped_ahead_of_the_clock_stalls_no_other_workflow() -> None:
    runner = Runner(WorkflowConfig(window=200, stall_min_s=30.0))
    for _ in range(MIN_SUPPORT):
        runner.run(USUAL)
    waiting = runner.start()
    runner.step(waiting, "plan", 1)
    now = runner.t_ms
    ahead = {"workflow_id": "ahead", "task_id": "a", "task_type": "release", "phase": "STARTED",
             "event_time": now + 1_800_000, "parent_task_id": None, "step": None,
             "error_class": None}  # fmt: skip
    assert runner.tracker.observe(ahead, clock_ms=now + 1000) == []
    assert runner.tracker.watermark_ms == now + 1000


def test_a_workflow_gone_quiet_is_dropped_unlearned() -> None:
    runner = Runner(WorkflowConfig(window=200, stall_min_s=30.0, idle_s=600.0))
    for _ in range(MIN_SUPPORT):
        runner.run(USUAL)
    workflow = runner.start()
    runner.step(workflow, "plan", 1)
    alerts = runner.tracker.advance(runner.t_ms + 40_000)
    alerts += runner.tracker.advance(runner.t_ms + 600_000)
    assert [(a["rule"], a["status"]) for a in alerts] == [(STALL, "FIRING"), (STALL, "RESOLVED")]
    assert alerts[1]["labels"]["outcome"] == "abandoned: no event for 10 min"
    assert workflow not in runner.tracker.flight and runner.tracker.dropped == 1
    assert runner.tracker.kinds["release"].total == MIN_SUPPORT
    runner.end(workflow)  # its end, come late, teaches nothing
    assert runner.tracker.kinds["release"].total == MIN_SUPPORT


def _precursor_history(runner: Runner) -> None:
    """60 releases: 10 with an oom they went on from, 9 of them failed; 10 with a timeout they
    went on from, 1 failed; 6 whose last step failed with disk_full, all failed; the rest
    succeeded."""
    for i in range(60):
        if i < 10:
            runner.run(USUAL, failed=i > 0, errors={2: "oom"})
        elif i < 20:
            runner.run(USUAL, failed=i == 10, errors={3: "timeout"})
        elif i < 26:
            workflow = runner.start()
            runner.step(workflow, "plan", 1)
            runner.event(workflow, f"{workflow}-2", "build", "STARTED", step=2)
            runner.event(workflow, f"{workflow}-2", "build", "FAILED", step=2,
                         error_class="disk_full")  # fmt: skip
            runner.end(workflow, failed=True)
        else:
            runner.run(USUAL)


def test_an_error_class_that_preceded_failures_fires_with_support_and_confidence() -> None:
    runner = Runner()
    _precursor_history(runner)
    runner.alerts.clear()
    workflow = runner.start()
    runner.step(workflow, "plan", 1, error="timeout")
    runner.step(workflow, "build", 2, error="disk_full")
    assert runner.fired(PRECURSOR) == []  # a timeout is no sign; disk_full ended workflows
    runner.step(workflow, "test", 3, error="oom")
    (alert,) = runner.fired(PRECURSOR)
    labels = alert["labels"]
    assert (labels["error_class"], labels["workflows"], labels["confidence"]) == (
        "oom", "10", "0.9000"
    )  # fmt: skip
    assert labels["support"] == f"{9 / 60:.4f}"
    assert labels["lift"] == f"{0.9 / (16 / 60):.2f}"
    assert "preceded a failed release in 90% of 10 workflows" in alert["summary"]


def _advice_run(runner: Runner, n: int, fail_with: int, fail_without: int) -> None:
    """``n`` releases, half with lint: every ``fail_with``-th of those fails, and every
    ``fail_without``-th of the others."""
    for i in range(n):
        with_lint = i % 2 == 0
        path = ("plan", "build", "lint", "test") if with_lint else ("plan", "build", "test")
        every = fail_with if with_lint else fail_without
        runner.run(path, failed=(i // 2) % every == 0)


def test_advice_is_published_when_significant_and_retracted_when_it_stops_holding() -> None:
    runner = Runner(WorkflowConfig(window=200))
    _advice_run(runner, 200, fail_with=20, fail_without=3)
    published = runner.fired(ADVICE)
    assert len(published) == 1, [a["summary"] for a in published]  # one split, one advice
    (advice,) = published
    assert advice["entity"] == "release:has:lint"
    labels = advice["labels"]
    # The first round, at 100 workflows: 3 of 50 with lint failed, 17 of 50 without.
    assert (labels["n_with"], labels["n_without"]) == ("50", "50")
    assert (labels["failure_rate_with"], labels["failure_rate_without"]) == ("0.0600", "0.3400")
    assert labels["test"] == "two-proportion z-test, Benjamini-Hochberg"
    assert float(labels["q_value"]) <= 0.01
    assert advice["summary"].startswith("release workflows with `lint` fail 82% less (6.0% vs")
    assert advice["value"] == pytest.approx(0.06 - 0.34)
    _advice_run(runner, 200, fail_with=5, fail_without=5)  # the window forgets the old ones
    (retracted,) = runner.resolved(ADVICE)
    assert retracted["alert_id"] == advice["alert_id"]
    assert retracted["summary"].startswith("retracted: release workflows with `lint`")


def test_the_tests_match_scipy() -> None:
    table = [[12, 188], [30, 170]]
    chi2 = stats.chi2_contingency(table, correction=False).pvalue
    assert two_proportion_p(12, 200, 30, 200) == pytest.approx(chi2)
    p_values = [0.001, 0.02, 0.03, 0.2, 0.04]
    assert benjamini_hochberg(p_values) == pytest.approx(
        list(stats.false_discovery_control(p_values))
    )
    assert two_proportion_p(0, 50, 0, 50) == 1.0


def test_memory_is_bounded() -> None:
    runner = Runner(WorkflowConfig(window=MIN_SUPPORT, max_workflows=3, max_kinds=2))
    for kind in ("a", "b"):
        for _ in range(MIN_SUPPORT + 10):
            runner.run(("x", "y"), kind=kind)
    assert [stats.total for stats in runner.tracker.kinds.values()] == [MIN_SUPPORT] * 2
    assert len(runner.tracker.kinds["a"].window) == MIN_SUPPORT
    runner.run(("x",), kind="c")
    assert list(runner.tracker.kinds) == ["b", "c"]
    for _ in range(4):
        runner.step(runner.start(), "x", 1)
    assert len(runner.tracker.flight) == 3 and runner.tracker.dropped == 1


def test_a_replay_is_deterministic() -> None:
    first, second = Runner(), Runner()
    for runner in (first, second):
        _precursor_history(runner)
        _advice_run(runner, 100, fail_with=20, fail_without=3)
    assert first.alerts == second.alerts


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"window": 10}, "window=10 must be >= 50"),
        ({"rare_share": 1.5}, "rare_share=1.5 must be in (0, 1)"),
        ({"idle_s": 30.0}, "idle_s=30.0 must be above the stall minimum"),
        ({"advice_alpha": 0.5}, "advice_alpha=0.5 must be in (0, 0.2)"),
    ],
)
def test_a_bad_config_names_what_to_change(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match="workflow settings") as raised:
        dataclasses.replace(WorkflowConfig(), **change)
    assert words in str(raised.value)
