"""Learned agent selection: who should take a task, how much an agent should hold at once, in
what order tasks should wait, and when the pool needs more agents.

:class:`RoutingPolicy` is a discounted Thompson-sampling bandit over the expected time to a
success. For each task type, every agent (arm) keeps a discounted Normal posterior of its mean
log-duration (durations of software tasks are close to log-normal) and a discounted Beta
posterior of its success rate. A decision samples both for every candidate, adds the wait its
load predicts (tasks in flight and assigned beyond its concurrency limit queue behind it), and
takes the smallest sampled time to a success: the uncertain are tried now and then, the known
good most of the time. Every outcome of a task type discounts all its arms (Raj and Kalyani,
*Taming non-stationary bandits: a Bayesian approach*, 2017), so a degraded agent's own
outcomes soon outweigh its past, and an agent left alone grows uncertain again and is retried:
the policy follows agents that degrade and recover.

:class:`ConcurrencyCurve` learns, per agent, how its run time climbs with the tasks it runs at
once, from ``(in flight at start, duration)``; the recommended limit is the concurrency just
before the climb. :func:`task_order_key` orders waiting tasks; :class:`ScalingAdvisor` turns
a pool's forecast demand into "add N agents before T".

Why not River's ``bandit`` module: its policies keep undiscounted reward distributions (no
forgetting, so a degraded agent keeps its traffic for as long as its history outweighs it),
sample the spread of rewards rather than the uncertainty of their mean, choose one arm without
a runner-up or a prediction interval, and take no per-decision penalty such as an agent's
queue. ``foresight bench routing`` runs River's Thompson sampling beside this policy to show
the difference.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.agents import RecentPairs
from schemas.predictions import PredictionColumns

Record = dict[str, Any]
FloatArray = npt.NDArray[np.float64]
_Z90 = 1.6448536269514722
MODEL = ("agent_bandit", "1")
#: The most decided-but-not-started tasks counted in one agent's load.
MAX_PENDING = 4096


@dataclass(frozen=True)
class PolicyConfig:
    """How the policy learns and explores.

    Parameters
    ----------
    half_life
        Outcomes of a task type after which an old observation of any of its agents weighs
        half (default 100): small enough to follow a degrading agent within tens of its
        tasks, large enough to average out log-normal noise.
    max_weight
        The most evidence an agent's estimate holds (default 10 outcomes): however much
        traffic it takes, its estimate follows its own latest outcomes.
    prior_sigma
        Spread of log-durations assumed before evidence (default 0.5, a factor of 1.6).
    prior_weight
        Pseudo-observations behind the prior (default 1): an agent new to a task type is
        believed as fast as the others' average, with the uncertainty of one observation.
    explore
        Sample the posteriors (Thompson sampling; default). False ranks by posterior means
        only, the standing advice.
    pending_ttl_ms
        How long a decision counts in its agent's load before the task starts (default five
        minutes): a task that never starts must not weigh on its agent for ever.
    """

    half_life: float = 100.0
    max_weight: float = 10.0
    prior_sigma: float = 0.5
    prior_weight: float = 1.0
    explore: bool = True
    pending_ttl_ms: int = 300_000

    @property
    def discount(self) -> float:
        return float(0.5 ** (1.0 / self.half_life))


class _Arms:
    """The discounted posteriors of every agent on one task type, as arrays."""

    def __init__(self) -> None:
        self.agents: list[str] = []
        self.index: dict[str, int] = {}
        self.n = np.zeros(0)  # discounted successes with a duration
        self.mean = np.zeros(0)  # their discounted mean log-duration
        self.m2 = np.zeros(0)  # and sum of squared deviations
        self.ok = np.zeros(0)  # discounted successes
        self.failed = np.zeros(0)  # discounted failures

    def slot(self, agent: str) -> int:
        at = self.index.get(agent)
        if at is None:
            at = self.index[agent] = len(self.agents)
            self.agents.append(agent)
            for name in ("n", "mean", "m2", "ok", "failed"):
                setattr(self, name, np.append(getattr(self, name), 0.0))
        return at

    def drop(self, agent: str) -> None:
        at = self.index.pop(agent)
        last = len(self.agents) - 1
        if at != last:
            moved = self.agents[last]
            self.agents[at] = moved
            self.index[moved] = at
        self.agents.pop()
        for name in ("n", "mean", "m2", "ok", "failed"):
            values = getattr(self, name)
            values[at] = values[last]
            setattr(self, name, values[:last])

    def pooled_mean(self, fallback: float) -> float:
        total = float(self.n.sum())
        return float((self.n * self.mean).sum() / total) if total > 0 else fallback


@dataclass
class AgentLoad:
    """What the router knows of an agent's load: tasks running (from its events), tasks
    decided for it that have not started (with the time of each decision), its limit.

    A decision's cost does not grow with the tasks pending: they expire from a heap of their
    decision times (an entry whose task started or was decided again is stale and skipped).

    Examples
    --------
    >>> load = AgentLoad(in_flight=1)
    >>> for i, at in enumerate((1_000, 2_000, 3_000)):
    ...     load.assign(f"t{i}", at)
    >>> load.start("t1")
    >>> load.total(now_ms=3_500, ttl_ms=2_000)  # t0 expired, t1 started: 1 + t2
    2
    """

    in_flight: int = 0
    limit: int = 1
    pending: dict[str, int] = field(default_factory=dict)
    decided: list[tuple[int, str]] = field(default_factory=list)  # a heap, with stale entries

    def assign(self, task_id: str, now_ms: int) -> None:
        """``task_id`` was decided for this agent at ``now_ms``; past :data:`MAX_PENDING`
        the oldest decisions are let go."""
        self.pending[task_id] = now_ms
        heapq.heappush(self.decided, (now_ms, task_id))
        while len(self.pending) > MAX_PENDING:
            self._pop_oldest()
        if len(self.decided) > 2 * len(self.pending) + 64:  # mostly stale: rebuild
            self.decided = [(at, task) for task, at in self.pending.items()]
            heapq.heapify(self.decided)

    def start(self, task_id: str) -> None:
        self.pending.pop(task_id, None)

    def total(self, now_ms: int, ttl_ms: int) -> int:
        """Tasks in flight and decisions younger than ``ttl_ms``."""
        while self.decided and now_ms - self.decided[0][0] > ttl_ms:
            self._pop_oldest()
        return self.in_flight + len(self.pending)

    def _pop_oldest(self) -> None:
        at, task_id = heapq.heappop(self.decided)
        if self.pending.get(task_id) == at:
            del self.pending[task_id]


@dataclass(frozen=True)
class Option:
    """One candidate as the policy sees it (posterior means), for the decision's record."""

    agent: str
    duration_ms: float  # median run time
    lower_ms: float  # 90% interval of the run time
    upper_ms: float
    success_probability: float
    wait_ms: float  # predicted wait behind the agent's load
    time_to_success_ms: float  # (wait + mean run time) / success probability
    seen: float  # discounted outcomes behind the estimate
    load: int
    limit: int


@dataclass(frozen=True)
class Choice:
    """A decision: the agent, the runner-up, every option, and why."""

    agent: str
    runner_up: str | None
    options: tuple[Option, ...]  # the chosen first, then by expected time to success
    explored: bool  # the sample chose another agent than the posterior means would
    reason: str

    @property
    def chosen(self) -> Option:
        return self.options[0]

    def deadline_miss_probability(self, now_ms: int, deadline_ms: int | None) -> float | None:
        """The chance the chosen agent finishes after ``deadline_ms`` (log-normal run time
        after the predicted wait); None without a deadline."""
        if deadline_ms is None:
            return None
        option = self.chosen
        budget = deadline_ms - now_ms - option.wait_ms
        if budget <= 0:
            return 1.0
        sigma = max(math.log(option.upper_ms / option.duration_ms) / _Z90, 1e-6)
        z = (math.log(budget) - math.log(option.duration_ms)) / sigma
        return 0.5 * math.erfc(z / math.sqrt(2.0))


class RoutingPolicy:
    """Discounted Thompson sampling over expected time to a success (see the module).

    Parameters
    ----------
    config
        Learning and exploration (:class:`PolicyConfig`).
    seed
        Seed of the sampling: the same seed and inputs give the same decisions.
    max_pairs
        Agent x task type posteriors held; the least recently seen are forgotten.

    Examples
    --------
    >>> policy = RoutingPolicy(seed=1)
    >>> for i in range(40):
    ...     policy.learn("fast", "triage", 1000.0, True)
    ...     policy.learn("slow", "triage", 4000.0, True)
    >>> policy.decide("triage", ["fast", "slow"], 0).agent
    'fast'
    >>> policy.observe_load("fast", in_flight=8, limit=2)
    >>> choice = policy.decide("triage", ["fast", "slow"], 0)
    >>> choice.agent, choice.runner_up, round(choice.options[1].wait_ms)
    ('slow', 'fast', 3540)
    """

    def __init__(
        self, config: PolicyConfig | None = None, seed: int = 0, max_pairs: int = 10_000
    ) -> None:
        self.config = config or PolicyConfig()
        self.rng = np.random.default_rng(seed)
        self.arms: dict[str, _Arms] = {}
        self.loads: dict[str, AgentLoad] = {}
        self._recent = RecentPairs(max_pairs)
        self._recent_loads = RecentPairs(max_pairs)
        self._prior_mean = math.log(60_000.0)

    # -- learning --------------------------------------------------------------------------
    def _arms(self, task_type: str, agent: str) -> tuple[_Arms, int]:
        for old_type, old_agent in self._recent.seen(task_type, agent):
            self._forget(old_type, old_agent)
        arms = self.arms.setdefault(task_type, _Arms())
        return arms, arms.slot(agent)

    def _forget(self, task_type: str, agent: str) -> None:
        arms = self.arms.get(task_type)
        if arms is not None and agent in arms.index:
            arms.drop(agent)
            if not arms.agents:
                del self.arms[task_type]

    def learn(self, agent: str, task_type: str, duration_ms: float | None, succeeded: bool) -> None:
        """A finished task: discount every arm of the task type, then add the outcome."""
        arms, at = self._arms(task_type, agent)
        gamma = self.config.discount
        for values in (arms.n, arms.m2, arms.ok, arms.failed):
            values *= gamma
        if not succeeded:
            arms.failed[at] += 1.0
            self._hold(arms.ok[at] + arms.failed[at], at, arms.ok, arms.failed)
            return  # a failed run is cut short: its duration says nothing of speed
        arms.ok[at] += 1.0
        self._hold(arms.ok[at] + arms.failed[at], at, arms.ok, arms.failed)
        if duration_ms is None or not duration_ms > 0 or not math.isfinite(duration_ms):
            return
        x = math.log(duration_ms)
        arms.n[at] += 1.0
        delta = x - arms.mean[at]
        arms.mean[at] += delta / arms.n[at]
        arms.m2[at] += delta * (x - arms.mean[at])
        self._hold(arms.n[at], at, arms.n, arms.m2)

    def _hold(self, weight: float, at: int, *arrays: FloatArray) -> None:
        """Hold an arm's evidence ``weight`` to ``max_weight`` (scaling ``arrays`` alike), so
        its estimate follows its own latest outcomes however much traffic it takes."""
        if weight > self.config.max_weight:
            for values in arrays:
                values[at] *= self.config.max_weight / weight

    def _load(self, agent: str) -> AgentLoad:
        for gone, _ in self._recent_loads.seen(agent, ""):
            self.loads.pop(gone, None)
        return self.loads.setdefault(agent, AgentLoad())

    def observe_load(self, agent: str, in_flight: int, limit: int) -> None:
        """The agent's tasks in flight (all task types) and its recommended limit."""
        load = self._load(agent)
        load.in_flight, load.limit = max(0, in_flight), max(1, limit)

    def assigned(self, agent: str, task_id: str, now_ms: int) -> None:
        """A decision sent ``task_id`` to ``agent``: it weighs on the agent until it starts
        (the oldest are let go past :data:`MAX_PENDING`)."""
        self._load(agent).assign(task_id, now_ms)

    def started(self, agent: str, task_id: str) -> None:
        """``task_id`` started: it is in the agent's in-flight count from now on."""
        load = self.loads.get(agent)
        if load is not None:
            load.start(task_id)

    def load_of(self, agent: str, now_ms: int) -> tuple[int, int]:
        """The agent's load (in flight and pending) and its limit."""
        load = self.loads.get(agent)
        if load is None:
            return 0, 1
        return load.total(now_ms, self.config.pending_ttl_ms), load.limit

    # -- deciding --------------------------------------------------------------------------
    def decide(
        self, task_type: str, candidates: Sequence[str], now_ms: int, explore: bool | None = None
    ) -> Choice:
        """The agent among ``candidates`` (every agent known for the task type when empty)
        with the smallest sampled time to a success, and the runner-up.

        Raises
        ------
        ValueError
            When there is no candidate and no agent is known for the task type.
        """
        arms = self.arms.get(task_type) or _Arms()
        names = list(dict.fromkeys(candidates)) or list(arms.agents)
        if not names:
            raise ValueError(
                f"no candidates for task type {task_type!r}, and no agent has reported a task "
                "of that type yet: name the candidates in the request"
            )
        cfg = self.config
        at = np.array([arms.index.get(a, -1) for a in names])
        known = at >= 0
        every_known = bool(known.all())
        rows = at if every_known else np.where(known, at, 0)

        def gather(values: FloatArray) -> FloatArray:
            if not len(values):
                return np.zeros(len(names))
            gathered: FloatArray = (
                values[rows] if every_known else np.where(known, values[rows], 0.0)
            )
            return gathered

        n, m2, ok, failed = gather(arms.n), gather(arms.m2), gather(arms.ok), gather(arms.failed)
        mean = np.where(n > 0, gather(arms.mean), arms.pooled_mean(self._prior_mean))
        w0 = cfg.prior_weight
        spread = (m2 + w0 * cfg.prior_sigma**2) / (n + w0)  # variance of a log-duration
        mean_var = spread / (n + w0)  # variance of the mean log-duration
        loads = np.array([self.load_of(a, now_ms) for a in names], dtype=np.float64)
        load, limit = loads[:, 0], loads[:, 1]
        behind = np.maximum(0.0, load + 1.0 - limit) / limit  # run times to wait

        def time_to_success(log_mean: FloatArray, success: FloatArray) -> FloatArray:
            run = np.exp(log_mean + spread / 2.0)
            result: FloatArray = (behind + 1.0) * run / success
            return result

        p_mean = (ok + 1.0) / (ok + failed + 2.0)
        expected = time_to_success(mean, p_mean)
        by_mean = np.lexsort((np.arange(len(names)), expected))
        if cfg.explore if explore is None else explore:
            sampled = time_to_success(
                self.rng.normal(mean, np.sqrt(mean_var)), self.rng.beta(ok + 1.0, failed + 1.0)
            )
            order = np.lexsort((np.arange(len(names)), sampled))
        else:
            order = by_mean
        ranked = [int(order[0])] + [int(i) for i in by_mean if i != order[0]]
        # Python numbers from here: reading arrays an item at a time costs more than the
        # arithmetic on them.
        mu, var, wait = mean.tolist(), spread.tolist(), behind.tolist()
        width = (_Z90 * np.sqrt(spread + mean_var)).tolist()
        success, tts, seen = p_mean.tolist(), expected.tolist(), (ok + failed).tolist()
        in_flight, limits = load.astype(int).tolist(), limit.astype(int).tolist()
        options = tuple(
            Option(
                agent=names[i],
                duration_ms=math.exp(mu[i]),
                lower_ms=math.exp(mu[i] - width[i]),
                upper_ms=math.exp(mu[i] + width[i]),
                success_probability=success[i],
                wait_ms=wait[i] * math.exp(mu[i] + var[i] / 2.0),
                time_to_success_ms=tts[i],
                seen=seen[i],
                load=in_flight[i],
                limit=limits[i],
            )
            for i in ranked
        )
        runner_up = names[int(order[1])] if len(names) > 1 else None
        explored = bool(order[0] != by_mean[0])
        return Choice(
            options[0].agent, runner_up, options, explored, _why(options, runner_up, explored)
        )

    # -- the record --------------------------------------------------------------------------
    def decision_record(
        self,
        task_type: str,
        choice: Choice,
        now_ms: int,
        task_id: str | None = None,
        deadline_ms: int | None = None,
        priority: int = 0,
    ) -> Record:
        """The RoutingDecision record of ``choice``."""
        best = choice.chosen
        return {
            "task_type": task_type,
            "task_id": task_id,
            "agent": choice.agent,
            "expected_duration_ms": best.duration_ms,
            "success_probability": best.success_probability,
            "alternatives": [
                {
                    "agent": o.agent,
                    "expected_duration_ms": o.duration_ms,
                    "success_probability": o.success_probability,
                }
                for o in choice.options[1:]
            ],
            "model": MODEL[0],
            "model_version": MODEL[1],
            "event_time": now_ms,
            "duration_lower_ms": best.lower_ms,
            "duration_upper_ms": best.upper_ms,
            "expected_wait_ms": best.wait_ms,
            "runner_up": choice.runner_up,
            "reason": choice.reason,
            "explored": choice.explored,
            "priority": priority,
            "deadline": deadline_ms,
            "deadline_miss_probability": choice.deadline_miss_probability(now_ms, deadline_ms),
            "recommended_concurrency": best.limit,
        }


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.3g} s"


def _why(options: Sequence[Option], runner_up: str | None, explored: bool) -> str:
    """The decision in words: what made the chosen agent best, who was passed over for its
    load, and what the runner-up would have cost."""
    best = options[0]
    parts = [
        f"{best.agent}: expected {_seconds(best.time_to_success_ms)} to a success "
        f"({_seconds(best.duration_ms)} run, {best.success_probability:.0%} succeed"
        + (f", {_seconds(best.wait_ms)} wait behind {best.load} tasks" if best.wait_ms else "")
        + ")"
    ]
    if explored:
        parts.append(f"explored: {best.seen:.0f} recent outcomes behind its estimate")
    busy = [o for o in options[1:] if o.wait_ms > 0 and o.duration_ms < best.duration_ms]
    if busy:
        parts.append(
            f"{busy[0].agent} runs faster but holds {busy[0].load} tasks (limit "
            f"{busy[0].limit}): {_seconds(busy[0].wait_ms)} wait"
        )
    runner = next((o for o in options if o.agent == runner_up), None)
    if runner is not None:
        parts.append(f"runner-up {runner.agent} at {_seconds(runner.time_to_success_ms)}")
    return "; ".join(parts)


class ConcurrencyCurve:
    """How an agent's run time climbs with the tasks it runs at once.

    Each finished task adds its log-duration's residual (against the agent's own mean for the
    task type) to the forgetting average of the concurrency it started at. The recommended
    limit is the last concurrency before the average climbs ``climb`` (default 25%) above the
    lowest concurrency seen; until a climb is seen, the highest concurrency with evidence.

    Examples
    --------
    >>> curve = ConcurrencyCurve()
    >>> for _ in range(30):
    ...     for k in range(1, 7):
    ...         curve.observe(k, 0.0 if k <= 3 else 0.4 * (k - 3))
    >>> curve.limit()
    3
    """

    def __init__(
        self, levels: int = 32, half_life: float = 30.0, climb: float = 0.25, evidence: float = 3
    ) -> None:
        self.weight = np.zeros(levels + 1)
        self.residual = np.zeros(levels + 1)
        self._decay = 0.5 ** (1.0 / half_life)
        self._climb = math.log1p(climb)
        self._evidence = evidence

    def observe(self, concurrency: int, residual: float) -> None:
        """A task that started as one of ``concurrency`` running, ``residual`` its
        log-duration minus the agent's mean for its task type."""
        k = min(max(concurrency, 1), len(self.weight) - 1)
        self.weight[k] = self._decay * self.weight[k] + 1.0
        self.residual[k] += (residual - self.residual[k]) / self.weight[k]

    def limit(self) -> int:
        """The recommended concurrency (1 before any evidence)."""
        seen = np.flatnonzero(self.weight >= self._evidence)
        if not len(seen):
            return 1
        base = self.residual[seen[0]]
        for k in seen:
            base = min(base, self.residual[k])
            if self.residual[k] - base > self._climb:
                return max(1, int(k) - 1)
        return int(seen[-1])


class AgentConcurrency:
    """Each agent's tasks in flight (all task types) and its :class:`ConcurrencyCurve`, from
    its STARTED and finished events; at most ``max_open`` open tasks are remembered per agent.
    """

    def __init__(self, max_agents: int = 10_000, max_open: int = 1024) -> None:
        self.curves: dict[str, ConcurrencyCurve] = {}
        self.open: dict[str, dict[str, int]] = {}  # agent -> task id -> concurrency at start
        self._max_agents = max_agents
        self._max_open = max_open

    def _running(self, agent: str) -> dict[str, int]:
        running = self.open.get(agent)
        if running is None:
            running = self.open[agent] = {}
            while len(self.open) > self._max_agents:
                gone = next(iter(self.open))
                self.open.pop(gone)
                self.curves.pop(gone, None)
        return running

    def started(self, agent: str, task_id: str) -> int:
        """A task started; returns the agent's tasks in flight."""
        running = self._running(agent)
        running[task_id] = len(running) + 1
        while len(running) > self._max_open:
            del running[next(iter(running))]
        return len(running)

    def finished(self, agent: str, task_id: str, residual: float | None) -> int:
        """A task finished, ``residual`` its log-duration against the agent's mean for its
        type (None when it says nothing of speed); returns the tasks still in flight."""
        running = self._running(agent)
        concurrency = running.pop(task_id, None)
        if concurrency is not None and residual is not None and math.isfinite(residual):
            self.curves.setdefault(agent, ConcurrencyCurve()).observe(concurrency, residual)
        return len(running)

    def in_flight(self, agent: str) -> int:
        return len(self.open.get(agent, ()))

    def limit(self, agent: str) -> int:
        curve = self.curves.get(agent)
        return curve.limit() if curve is not None else 1


def task_order_key(
    priority: int, deadline_ms: int | None, expected_ms: float, now_ms: int
) -> tuple[int, int, float]:
    """Where a waiting task goes in a queue (smaller first): higher priority first; within a
    priority, a task whose deadline is at risk (less slack than twice its expected run time)
    by deadline, then the others shortest expected first.

    >>> tasks = {"low": (0, None, 10.0), "urgent": (1, 150, 100.0), "short": (1, None, 5.0),
    ...          "long": (1, 10_000, 50.0)}
    >>> sorted(tasks, key=lambda t: task_order_key(*tasks[t], now_ms=0))
    ['urgent', 'short', 'long', 'low']
    """
    if deadline_ms is not None and deadline_ms - now_ms < 2.0 * expected_ms:
        return (-priority, 0, float(deadline_ms))
    return (-priority, 1, expected_ms)


@dataclass(frozen=True)
class ScalingAdvice:
    """Add ``agents`` agents that take ``task_type`` before ``by_ms`` (0 agents: none needed).

    ``utilisation`` and ``queue`` are the forecasts at ``by_ms`` (or at the horizon)."""

    task_type: str
    agents: int
    by_ms: int
    utilisation: float
    queue: float


class ScalingAdvisor:
    """Forecasts each task type's demand on its pool of agents and says when to add agents.

    Demand is the pool's work in the system (tasks in flight and waiting), sampled at most
    once per ``period_ms``; Holt's linear trend (level ``alpha``, trend ``beta``) projects it
    ``horizon_ms`` ahead. Utilisation is demand over the pool's capacity (the sum of its
    agents' recommended limits), the forecast queue the demand beyond it. When utilisation is
    forecast to reach ``target`` within the horizon, the advice is the number of agents of the
    pool's average limit that keep it at ``target``, and the moment it gets there.

    Examples
    --------
    >>> advisor = ScalingAdvisor()
    >>> for minute in range(10):
    ...     advice = advisor.observe("deploy", minute * 60_000, demand=4.0 + 0.5 * minute,
    ...                              agents=4, capacity=16.0)
    >>> advice.agents, (advice.by_ms - 9 * 60_000) // 60_000
    (2, 9)
    """

    def __init__(
        self,
        target: float = 0.8,
        horizon_ms: int = 900_000,
        period_ms: int = 60_000,
        alpha: float = 0.5,
        beta: float = 0.3,
        max_types: int = 10_000,
    ) -> None:
        self.target, self.horizon_ms, self.period_ms = target, horizon_ms, period_ms
        self.alpha, self.beta = alpha, beta
        self.state: dict[str, tuple[int, float, float]] = {}  # type -> (t, level, trend/ms)
        self._recent = RecentPairs(max_types)

    def due(self, task_type: str, now_ms: int) -> bool:
        """Whether a demand sample of ``task_type`` at ``now_ms`` would be taken."""
        held = self.state.get(task_type)
        return held is None or now_ms - held[0] >= self.period_ms

    def observe(
        self, task_type: str, now_ms: int, demand: float, agents: int, capacity: float
    ) -> ScalingAdvice | None:
        """A demand sample; the advice, or None when no sample was due."""
        if not self.due(task_type, now_ms):
            return None
        for gone, _ in self._recent.seen(task_type, ""):
            self.state.pop(gone, None)
        held = self.state.get(task_type)
        if held is None:
            level, trend = demand, 0.0
        else:
            t0, level0, trend0 = held
            elapsed = now_ms - t0
            guess = level0 + trend0 * elapsed
            level = self.alpha * demand + (1 - self.alpha) * guess
            trend = self.beta * (level - level0) / elapsed + (1 - self.beta) * trend0
        self.state[task_type] = (now_ms, level, trend)
        return self._advice(task_type, now_ms, level, trend, agents, capacity)

    def _advice(
        self, task_type: str, now_ms: int, level: float, trend: float, agents: int, capacity: float
    ) -> ScalingAdvice:
        capacity = max(capacity, 1.0)
        steps = np.arange(0, self.horizon_ms + 1, self.period_ms, dtype=np.float64)
        demand = np.maximum(level + trend * steps, 0.0)
        over = np.flatnonzero(demand / capacity >= self.target)
        at = int(over[0]) if len(over) else len(steps) - 1
        by_ms = now_ms + int(steps[at])
        peak = float(demand[at:].max()) if len(over) else float(demand[at])
        per_agent = capacity / max(agents, 1)
        needed = math.ceil(peak / (self.target * per_agent) - 1e-9) - agents if len(over) else 0
        return ScalingAdvice(
            task_type, max(needed, 0), by_ms, float(demand[at] / capacity),
            max(float(demand[at]) - capacity, 0.0),
        )  # fmt: skip


def scaling_predictions(advice: Iterable[ScalingAdvice], now_ms: int) -> Record:
    """SCALING predictions of a pool, the PredictionBatch's prediction fields: the value is
    the agents to add, the horizon the seconds until they are needed, the score the forecast
    utilisation (capped at 1), the bounds the forecast queue."""
    columns = PredictionColumns()
    for a in advice:
        columns.add(
            "SCALING", MODEL, [a.task_type], [max(0, (a.by_ms - now_ms) // 1000)], [a.agents],
            [min(a.utilisation, 1.0)], [a.queue], [a.queue],
        )  # fmt: skip
    return columns.record()
