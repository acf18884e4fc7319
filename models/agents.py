"""Agent execution statistics and advice: how long a task will take, and who should take it.

Per agent x task type, :class:`AgentTaskStats` keeps exponentially forgetting statistics of
the log-duration (durations of software tasks are close to log-normal), the success rate, the
tasks in flight and the throughput. It predicts the run time with an interval, and
:func:`advise` ranks the agents able to take a task type by expected time to a success.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from scipy.special import betainc

from models.alerts import AlertRule, AlertState, evaluate
from schemas.predictions import PredictionColumns

Record = dict[str, Any]
_Z90 = 1.6448536269514722
_LOG_MAX = math.log(sys.float_info.max)


def _exp(x: float) -> float:
    """``exp``, saturating at the largest double: any finite duration is valid input, and
    one near ``1e308`` ms must not overflow the statistics built on its logarithm."""
    return math.exp(min(x, _LOG_MAX))


@dataclass
class AgentTaskStats:
    """Forgetting statistics of one agent on one task type.

    Parameters
    ----------
    half_life
        Finished tasks after which an old observation weighs half (default 50): recent
        behaviour dominates, so a degrading agent shows up within tens of tasks.

    Examples
    --------
    >>> s = AgentTaskStats()
    >>> for d in (1000.0, 1100.0, 900.0, 1000.0):
    ...     s.started(0)
    ...     s.finished(d, True, 60_000)
    >>> round(s.expected_duration_ms()), s.in_flight
    (997, 0)
    """

    half_life: float = 50.0
    weight: float = 0.0
    log_mean: float = 0.0
    log_var: float = 0.0
    successes: float = 0.0
    attempts: float = 0.0
    in_flight: int = 0
    throughput_per_min: float = 0.0
    last_finish_ms: int = 0

    @property
    def _decay(self) -> float:
        return float(0.5 ** (1.0 / self.half_life))

    def started(self, t_ms: int) -> None:
        self.in_flight += 1

    def finished(self, duration_ms: float | None, succeeded: bool, t_ms: int) -> None:
        """Learn a finished task (SUCCEEDED or FAILED)."""
        self.in_flight = max(0, self.in_flight - 1)
        decay = self._decay
        self.successes = decay * self.successes + float(succeeded)
        self.attempts = decay * self.attempts + 1.0
        # Failed runs are cut short or time out: only successes say how long a task takes.
        if succeeded and duration_ms is not None and duration_ms > 0:
            x = math.log(duration_ms)
            self.weight = decay * self.weight + 1.0
            delta = x - self.log_mean
            self.log_mean += delta / self.weight
            self.log_var = decay * self.log_var + delta * (x - self.log_mean)
        if self.last_finish_ms and t_ms > self.last_finish_ms:
            rate = 60_000.0 / (t_ms - self.last_finish_ms)
            self.throughput_per_min = decay * self.throughput_per_min + (1 - decay) * rate
        self.last_finish_ms = max(self.last_finish_ms, t_ms)

    @property
    def success_rate(self) -> float:
        """Forgetting success rate with a Laplace prior: 0.5 before any evidence."""
        return (self.successes + 1.0) / (self.attempts + 2.0)

    @property
    def sigma(self) -> float:
        if self.weight <= 1.0:
            return 1.0  # wide until there is evidence
        return math.sqrt(max(self.log_var / (self.weight - 1.0), 1e-6))

    def expected_duration_ms(self) -> float:
        """Median run time (the log-normal's exp(mu))."""
        return _exp(self.log_mean) if self.weight > 0 else math.nan

    def interval_ms(self) -> tuple[float, float]:
        """A 90% interval of the run time."""
        return (
            _exp(self.log_mean - _Z90 * self.sigma),
            _exp(self.log_mean + _Z90 * self.sigma),
        )

    def p95_ms(self) -> float:
        return _exp(self.log_mean + _Z90 * self.sigma)

    def features(self) -> dict[str, float]:
        """The agent x task type features, by name."""
        return {
            "success_rate": self.success_rate,
            "duration_mean_ms": _exp(self.log_mean + self.sigma**2 / 2)
            if self.weight
            else math.nan,
            "duration_p95_ms": self.p95_ms() if self.weight else math.nan,
            "in_flight": float(self.in_flight),
            "throughput_per_min": self.throughput_per_min,
        }


def expected_time_to_success(stats: AgentTaskStats) -> float:
    """Median run time divided by the success rate: retries make failures cost time."""
    return stats.expected_duration_ms() / max(stats.success_rate, 0.01)


def advise(task_type: str, candidates: dict[str, AgentTaskStats], t_ms: int) -> Record | None:
    """A RoutingDecision for ``task_type`` from the candidates' statistics, best first."""
    known = {a: s for a, s in candidates.items() if s.weight > 0}
    if not known:
        return None
    ranked = sorted(known, key=lambda a: (expected_time_to_success(known[a]), a))
    best = known[ranked[0]]
    return {
        "task_type": task_type,
        "task_id": None,
        "agent": ranked[0],
        "expected_duration_ms": best.expected_duration_ms(),
        "success_probability": best.success_rate,
        "alternatives": [
            {
                "agent": a,
                "expected_duration_ms": known[a].expected_duration_ms(),
                "success_probability": known[a].success_rate,
            }
            for a in ranked[1:]
        ],
        "model": "agent_lognormal",
        "model_version": "1",
        "event_time": t_ms,
    }


# What an agent's usual failure rate starts from, as if it had run this many tasks and failed
# this many: 5 %, worth a hundred tasks, so a new agent's first failures are judged against a
# plausible rate, and one failing most of its tasks from the start is called out (with a
# prior of 20 tasks, its own failures became its usual rate before they could alarm).
_PRIOR_TASKS = 100.0
_PRIOR_FAILURES = 5.0


@dataclass
class AgentHealth:
    """How an agent is doing across its task types: recent failures and slowdown.

    ``failure_rate`` forgets quickly (half-life ``fast`` tasks), so a burst of failures shows
    within minutes. :meth:`failure_surprise` weighs the recent failures against the agent's
    own usual rate (half-life ``slow`` tasks): as many failures among as many tasks is
    ordinary for a flaky agent and alarming for a reliable one. ``slowdown`` compares each
    finished task's log-duration with the agent's own long-run baseline for that task type
    (half-life ``slow``), so mixing fast and slow task types is not mistaken for a slowdown;
    its forgetting average is read as a ratio.

    Examples
    --------
    >>> reliable, flaky = AgentHealth(), AgentHealth()
    >>> for i in range(300):
    ...     reliable.observe("triage", 900.0, succeeded=i % 50 != 0)  # 2 % fail
    ...     flaky.observe("triage", 900.0, succeeded=i % 3 != 0)  # 33 % fail
    >>> for _ in range(4):  # then 4 failures in a row, for both
    ...     reliable.observe("triage", None, succeeded=False)
    ...     flaky.observe("triage", None, succeeded=False)
    >>> round(reliable.failure_surprise(), 4), round(flaky.failure_surprise(), 2)
    (1.0, 0.97)
    >>> reliable.failure_detail()
    '29% of its recent tasks failed, against 4% usually'
    """

    fast: float = 8.0
    slow: float = 200.0
    log_slowdown: float = 0.0
    baselines: dict[str, tuple[float, float]] | None = None  # task type -> (mean, weight)
    # The recent tasks' forgetting sums: weights, squared weights, weighted failures.
    recent_weight: float = 0.0
    recent_weight_sq: float = 0.0
    recent_failures: float = 0.0
    usual_tasks: float = _PRIOR_TASKS
    usual_failures: float = _PRIOR_FAILURES

    def observe(self, task_type: str, duration_ms: float | None, succeeded: bool) -> None:
        fast = 0.5 ** (1.0 / self.fast)
        slow = 0.5 ** (1.0 / self.slow)
        failed = float(not succeeded)
        self.recent_weight = fast * self.recent_weight + 1.0
        self.recent_weight_sq = fast * fast * self.recent_weight_sq + 1.0
        self.recent_failures = fast * self.recent_failures + failed
        self.usual_tasks = slow * self.usual_tasks + 1.0
        self.usual_failures = slow * self.usual_failures + failed
        if not succeeded or duration_ms is None or duration_ms <= 0:
            return  # failed runs are cut short: their durations say nothing of speed
        baselines = self.baselines if self.baselines is not None else {}
        self.baselines = baselines
        x = math.log(duration_ms)
        mean, weight = baselines.get(task_type, (x, 0.0))
        if weight >= 5:  # compare only against a baseline with some evidence
            self.log_slowdown = fast * self.log_slowdown + (1 - fast) * (x - mean)
        weight = slow * weight + 1.0
        baselines[task_type] = (mean + (x - mean) / weight, weight)

    @property
    def failure_rate(self) -> float:
        """The recent failures' forgetting average, from no failures before the first task:
        the FAILURE_RISK of the agent's next task."""
        kept = 0.5 ** (1.0 / self.fast)  # float ** float is Any to mypy (it may be complex)
        return float((1.0 - kept) * self.recent_failures)

    def recent_failure_share(self) -> float:
        """The share of the recent tasks (weighted as they are forgotten) that failed."""
        return self.recent_failures / self.recent_weight if self.recent_weight else 0.0

    def usual_failure_rate(self) -> float:
        """The agent's long-run failure rate (from a 5 % prior, see ``_PRIOR_TASKS``)."""
        return self.usual_failures / self.usual_tasks

    def failure_surprise(self) -> float:
        """1 - the chance of at least the recent share of failures at the usual rate.

        The recent tasks are weighed as they are forgotten, so they count as the effective
        number of tasks of their weights (``(sum w)^2 / sum w^2``, about 23 at the default
        half-life) in a binomial tail; 0.999 means a chance of 1 in 1,000."""
        if self.recent_failures <= 0:
            return 0.0
        tasks = self.recent_weight**2 / self.recent_weight_sq
        failures = self.recent_failure_share() * tasks
        chance = float(betainc(failures, tasks - failures + 1.0, self.usual_failure_rate()))
        return 1.0 - chance

    def failure_detail(self) -> str:
        """The recent failures against the usual rate, for a person."""
        return (
            f"{self.recent_failure_share():.0%} of its recent tasks failed, against "
            f"{self.usual_failure_rate():.0%} usually"
        )

    def slowdown_score(self) -> float:
        """0 at the usual speed, 1 at twice the usual run time or slower."""
        return min(max(math.expm1(min(self.log_slowdown, 1.0)), 0.0), 1.0)


AGENT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        name="agent_failures",
        kind="ANOMALY",
        metric="task_failures",
        threshold=0.99995,
        clear=0.9,
        for_steps=3,
        severity="WARNING",
        summary="{entity}: {detail}",
    ),
    AlertRule(
        name="agent_slowdown",
        kind="ANOMALY",
        metric="task_duration",
        threshold=0.6,
        clear=0.25,
        for_steps=5,
        severity="WARNING",
        summary="{entity}: tasks run slower than usual (score {value:.2f})",
    ),
)


@dataclass
class AgentStep:
    """What one finished task changes: the records to publish."""

    features: Record
    predictions: Record
    alerts: list[Record]
    stats: AgentTaskStats


class RecentPairs:
    """The ``(outer, inner)`` name pairs seen most recently, at most ``capacity`` of them.

    >>> recent = RecentPairs(capacity=2)
    >>> recent.seen("a1", "triage"), recent.seen("a2", "triage"), recent.seen("a1", "triage")
    ([], [], [])
    >>> recent.seen("a3", "deploy")
    [('a2', 'triage')]
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()

    def seen(self, outer: str, inner: str) -> list[tuple[str, str]]:
        """Note a pair as the most recent; returns the pairs that fell out to make room."""
        self._order[(outer, inner)] = None
        self._order.move_to_end((outer, inner))
        dropped = []
        while len(self._order) > self.capacity:
            dropped.append(self._order.popitem(last=False)[0])
        return dropped


class AgentTracker:
    """Statistics, health and alert state of every agent a worker sees.

    At most ``max_pairs`` agent x task type statistics are held (agents come and go, and a
    sender can name new ones without end): the least recently seen are forgotten, and an
    agent with its last one.

    Examples
    --------
    >>> tracker = AgentTracker()
    >>> event = {"agent": "a1", "task_id": "t1", "task_type": "triage", "phase": "STARTED",
    ...          "event_time": 0, "duration_ms": None}
    >>> tracker.observe(event) is None
    True
    >>> step = tracker.observe(dict(event, phase="SUCCEEDED", duration_ms=900.0, event_time=9))
    >>> step.predictions["kinds"]
    ['DURATION', 'FAILURE_RISK', 'ANOMALY', 'ANOMALY']
    """

    def __init__(self, rules: tuple[AlertRule, ...] = AGENT_RULES, max_pairs: int = 10_000) -> None:
        self.rules = rules
        self.stats: dict[str, dict[str, AgentTaskStats]] = {}
        self.health: dict[str, AgentHealth] = {}
        self.alert_states: dict[str, dict[str, AlertState]] = {}
        self._recent = RecentPairs(max_pairs)

    def observe(self, event: Record) -> AgentStep | None:
        """Learn one AgentEvent; a finished task gives the records to publish."""
        agent, task_type, t_ms = event["agent"], event["task_type"], event["event_time"]
        for old_agent, old_task_type in self._recent.seen(agent, task_type):
            self._forget(old_agent, old_task_type)
        stats = self.stats.setdefault(agent, {}).setdefault(task_type, AgentTaskStats())
        if event["phase"] == "STARTED":
            stats.started(t_ms)
            return None
        succeeded = event["phase"] == "SUCCEEDED"
        stats.finished(event["duration_ms"], succeeded, t_ms)
        health = self.health.setdefault(agent, AgentHealth())
        health.observe(task_type, event["duration_ms"], succeeded)
        entity = f"{agent}:{task_type}"
        features = stats.features()
        lower, upper = stats.interval_ms()
        model = ("agent_lognormal", "1")
        predictions = PredictionColumns()
        predictions.add("DURATION", model, [task_type], [0], [stats.expected_duration_ms()],
                        [1.0 - stats.success_rate], [lower], [upper])  # fmt: skip
        predictions.add("FAILURE_RISK", model, ["task_failure_rate"], [0],
                        [health.failure_rate], [health.failure_rate])  # fmt: skip
        predictions.add("ANOMALY", model, ["task_duration"], [0],
                        [_exp(health.log_slowdown)], [health.slowdown_score()])  # fmt: skip
        predictions.add("ANOMALY", model, ["task_failures"], [0],
                        [health.recent_failure_share()], [health.failure_surprise()])  # fmt: skip
        states = self.alert_states.setdefault(agent, {r.name: AlertState() for r in self.rules})
        alerts = []
        for rule in self.rules:
            value, metric = predictions.worst(rule.kind, rule.min_metrics, rule.metric)
            detail = health.failure_detail if metric == "task_failures" else ""
            alert = evaluate(rule, states[rule.name], agent, value, metric, t_ms, detail=detail)
            if alert is not None:
                alerts.append(alert)
        return AgentStep(
            features={
                "entity": entity, "event_time": t_ms, "names": list(features),
                "values": list(features.values()), "feature_set": "agent_task_stats_v1",
            },
            predictions={
                "prediction_id": f"{agent}@{event['task_id']}", "entity": agent,
                "event_time": t_ms, "emitted_at": t_ms, "latency_ms": 0.0,
                **predictions.record(),
            },
            alerts=alerts,
            stats=stats,
        )  # fmt: skip

    def _forget(self, agent: str, task_type: str) -> None:
        tasks = self.stats.get(agent, {})
        tasks.pop(task_type, None)
        health = self.health.get(agent)
        if health is not None and health.baselines:
            health.baselines.pop(task_type, None)
        if not tasks:
            for held in (self.stats, self.health, self.alert_states):
                held.pop(agent, None)
