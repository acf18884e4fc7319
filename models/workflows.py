"""Workflow patterns: the usual paths through each kind of workflow, the error classes that
precede a failed one, and the shapes of workflow that fail less or more.

A workflow is the tree of tasks whose AgentEvents carry one ``workflow_id``. Its root task
(no ``parent_task_id``) names its kind (the root's task type) and spans it: the root's
SUCCEEDED or FAILED ends the workflow with that outcome. The other tasks are its steps, and
its path is their task types in ``step`` order; a retry keeps the step it retries, so it
replaces that attempt in the path rather than lengthening it.

:class:`WorkflowTracker` follows the workflows in flight and learns, per kind, from the last
``window`` finished ones (:class:`KindStats`: exact counts over a sliding window, so what
stops holding leaves the counts within ``window`` workflows). On each workflow it flags:

* a **rare path**: a step that fewer than ``rare_share`` of the kind's workflows took after
  the same path so far (judged once :data:`MIN_SUPPORT` of them reached that point);
* a **loop**: a cycle of one to three task types repeated ``loop_repeats`` times in a row;
* a **stall**: no event for ``stall_factor`` times the kind's 95th percentile of its
  finished workflows' longest quiet gap (and at least ``stall_min_s``);
* a **precursor**: a step failed with an error class that preceded the failure of the kind's
  workflows with confidence at least ``precursor_confidence`` and lift at least
  :data:`PRECURSOR_LIFT` (the association rule "error class => workflow failed", with its
  support). An error class precedes when the workflow went on after it (a retry or a later
  step started): the error of the step that ended a workflow is its failure, not a sign of
  it.

Each is an alert on the workflow, carrying its evidence in its labels: it fires once and
resolves when the workflow ends (with the outcome), or for a stall when it moves again.

Best-practice advice: every :data:`ADVICE_EVERY` finished workflows of a kind, each shape
feature (a task type present; one task type directly followed by another) splits the window
in two, and a two-proportion z-test compares the halves' failure rates, with the
Benjamini-Hochberg correction over the features tested together. A feature at q <=
``advice_alpha`` whose failure rate differs by at least :data:`ADVICE_MIN_EFFECT` (relative)
is published as a ``workflow_advice`` alert; it is retracted (resolved) when q exceeds five
times ``advice_alpha``, the difference falls under :data:`ADVICE_RETRACT_EFFECT` or changes
sign, or too few workflows are left to test it. Features that split the window almost alike
(agreeing on :data:`ADVICE_SAME_SPLIT` of it, or as one's complement) are one piece of
advice, said by the simplest. Fisher's exact test would need no normal approximation, but
costs 1.4 ms a table with SciPy here against microseconds; the z-test runs only where each
half holds at least :data:`ADVICE_MIN_N` workflows.

River: the stall threshold's quantile is River's ``RollingQuantile`` over the window (0.6 us
an update here). River has no sequence mining, association rules or contingency tests, so
the paths, precursors and advice are counters of the window's workflows.

The events of one workflow come from several agents, so through several partitions, and
may arrive out of order: each event's steps are judged, and the root's end taken,
``reorder_s`` of event time after it (a step that arrives by then still counts in order).

Examples
--------
>>> tracker = WorkflowTracker(WorkflowConfig(window=100))  # reorder_s=5
>>> def event(task, kind, phase, t, parent="root", step=None):
...     return {"workflow_id": "wf-1", "task_id": task, "task_type": kind, "phase": phase,
...             "event_time": t, "parent_task_id": parent, "step": step, "error_class": None}
>>> tracker.observe(event("root", "release", "STARTED", 0, parent=None))
[]
>>> [tracker.observe(event(f"t{i}", "test", "STARTED", 1000 * i, step=i)) for i in (1, 2, 3)]
[[], [], []]
>>> [a["rule"] for a in tracker.advance(8000)]
['workflow_loop']
>>> tracker.observe(event("root", "release", "SUCCEEDED", 9000, parent=None))
[]
>>> [(a["status"], a["labels"]["outcome"]) for a in tracker.advance(14_000)]
[('RESOLVED', 'SUCCEEDED')]
>>> tracker.kinds["release"].total
1
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from river import stats

from models.alerts import alert_record

Record = dict[str, Any]

#: Workflows that must have reached a point of a path (or finished, for stalls) before a
#: step there is judged.
MIN_SUPPORT = 50
#: Steps of a path that are learned and judged; a longer path is cut (a loop is flagged
#: before it gets there).
MAX_PATH = 32
#: Tasks one workflow may have; later ones are not followed (a bound on a hostile sender).
MAX_TASKS = 1024
#: Finished workflows of a kind between two rounds of advice.
ADVICE_EVERY = 50
#: Workflows each side of a feature needs before it is tested.
ADVICE_MIN_N = 30
#: Relative difference of failure rates that advice needs to be published, and under which
#: it is retracted.
ADVICE_MIN_EFFECT = 0.2
ADVICE_RETRACT_EFFECT = 0.1
#: Share of the window on which two features (or one and the other's complement) must agree
#: to be one piece of advice.
ADVICE_SAME_SPLIT = 0.95
#: A precursor's confidence over the kind's failure rate, at least.
PRECURSOR_LIFT = 2.0
#: Workflows with an error class before it can be a precursor.
PRECURSOR_MIN_COUNT = 5

RARE_PATH, LOOP, STALL, PRECURSOR, ADVICE = (
    "workflow_rare_path", "workflow_loop", "workflow_stall", "workflow_precursor",
    "workflow_advice",
)  # fmt: skip
_SEVERITY = {RARE_PATH: "INFO", LOOP: "WARNING", STALL: "WARNING", PRECURSOR: "WARNING",
             ADVICE: "INFO"}  # fmt: skip
#: The rules of the alerts the tracker raises (on a workflow, or on a kind's shape).
WORKFLOW_RULES: frozenset[str] = frozenset(_SEVERITY)


@dataclass(frozen=True)
class WorkflowConfig:
    """How workflows are learned and judged (the ``FORESIGHT_WORKFLOW_*`` settings)."""

    max_workflows: int = 50_000
    window: int = 2_000
    rare_share: float = 0.02
    loop_repeats: int = 3
    stall_factor: float = 3.0
    stall_min_s: float = 60.0
    idle_s: float = 3_600.0
    precursor_confidence: float = 0.5
    advice_alpha: float = 0.01
    reorder_s: float = 5.0
    max_kinds: int = 1_000

    def __post_init__(self) -> None:
        problems = [
            f"{name}={value!r} must be {need}"
            for name, value, ok, need in (
                ("max_workflows", self.max_workflows, self.max_workflows >= 1, ">= 1"),
                ("window", self.window, self.window >= MIN_SUPPORT, f">= {MIN_SUPPORT}"),
                ("rare_share", self.rare_share, 0 < self.rare_share < 1, "in (0, 1)"),
                ("loop_repeats", self.loop_repeats, self.loop_repeats >= 2, ">= 2"),
                ("stall_factor", self.stall_factor, self.stall_factor >= 1, ">= 1"),
                ("stall_min_s", self.stall_min_s, self.stall_min_s > 0, "> 0"),
                ("idle_s", self.idle_s, self.idle_s > self.stall_min_s, "above the stall minimum"),
                (
                    "precursor_confidence",
                    self.precursor_confidence,
                    0 < self.precursor_confidence <= 1,
                    "in (0, 1]",
                ),
                ("advice_alpha", self.advice_alpha, 0 < self.advice_alpha < 0.2, "in (0, 0.2)"),
                (
                    "reorder_s",
                    self.reorder_s,
                    0 <= self.reorder_s < self.stall_min_s,
                    "in [0, stall_min_s)",
                ),
                ("max_kinds", self.max_kinds, self.max_kinds >= 1, ">= 1"),
            )
            if not ok
        ]
        if problems:
            raise ValueError("workflow settings: " + "; ".join(problems))


@dataclass(frozen=True)
class FinishedWorkflow:
    """What a finished workflow teaches its kind."""

    path: tuple[str, ...]
    failed: bool
    errors: frozenset[str]
    longest_gap_ms: int

    @property
    def shapes(self) -> frozenset[str]:
        return _shapes(self.path[:MAX_PATH])


def shape_features(path: tuple[str, ...]) -> set[str]:
    """The shape features of a path: ``has:X`` for each task type in it, ``X>Y`` for each
    task type Y that directly follows X.

    >>> sorted(shape_features(("build", "lint", "test")))
    ['build>lint', 'has:build', 'has:lint', 'has:test', 'lint>test']
    """
    return {f"has:{t}" for t in path} | {f"{a}>{b}" for a, b in itertools.pairwise(path)}


@functools.lru_cache(maxsize=4096)
def _shapes(path: tuple[str, ...]) -> frozenset[str]:
    """:func:`shape_features`, cached: a kind's workflows take few distinct paths."""
    return frozenset(shape_features(path))


def feature_words(feature: str) -> str:
    """A shape feature for a person: ``with `lint```, ``where `test` directly follows `lint```."""
    if feature.startswith("has:"):
        return f"with `{feature[4:]}`"
    before, _, after = feature.partition(">")
    return f"where `{after}` directly follows `{before}`"


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of ``x1/n1`` against ``x2/n2``.

    >>> f"{two_proportion_p(25, 400, 120, 800):.2g}"
    '1.2e-05'
    """
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return math.erfc(abs(x1 / n1 - x2 / n2) / se / math.sqrt(2))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given.

    >>> benjamini_hochberg([0.01, 0.04, 0.03])
    [0.03, 0.04, 0.04]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q = [1.0] * m
    smallest = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        smallest = min(smallest, p_values[i] * m / rank)
        q[i] = smallest
    return q


def find_loop(path: tuple[str, ...], repeats: int) -> tuple[tuple[str, ...], int] | None:
    """The cycle (one to three task types) that the end of ``path`` repeats at least
    ``repeats`` times in a row, with how many times; None when there is none.

    >>> find_loop(("plan", "test", "fix", "test", "fix", "test", "fix"), 3)
    (('test', 'fix'), 3)
    >>> find_loop(("plan", "test", "test"), 3) is None
    True
    """
    for size in (1, 2, 3):
        cycle = path[-size:]
        if len(cycle) < size or len(set(cycle)) < size:
            continue  # ("a", "a") is the one-type cycle ("a",)
        count = 1
        while (count + 1) * size <= len(path) and path[
            len(path) - (count + 1) * size : len(path) - count * size
        ] == cycle:
            count += 1
        if count >= repeats:
            return cycle, count
    return None


@dataclass(frozen=True)
class RareStep:
    """A step few workflows of the kind took at that point: evidence of a rare path."""

    position: int
    took: int
    reached: int
    usual: str
    usual_took: int


@dataclass(frozen=True)
class Precursor:
    """The association rule "error class => the workflow failed" in a kind's window."""

    error_class: str
    workflows: int  # finished workflows of the window in which the error class occurred
    confidence: float
    support: float
    lift: float


@dataclass
class _Advice:
    started_ms: int
    relative: float
    difference: float


class KindStats:
    """What the last ``window`` finished workflows of one kind say: their paths (counts per
    path prefix and next step), failures, error classes, shapes and longest quiet gaps."""

    def __init__(self, window: int) -> None:
        self.capacity = window
        self.window: deque[FinishedWorkflow] = deque()
        self.nexts: dict[tuple[str, ...], Counter[str]] = {}
        self.failures = 0
        self.errors: Counter[str] = Counter()
        self.errors_failed: Counter[str] = Counter()
        self.shapes: Counter[str] = Counter()
        self.shapes_failed: Counter[str] = Counter()
        self.gaps = stats.RollingQuantile(q=0.95, window_size=window)
        self.since_advice = 0
        self.advice: dict[str, _Advice] = {}

    @property
    def total(self) -> int:
        return len(self.window)

    def learn(self, workflow: FinishedWorkflow) -> None:
        """Add a finished workflow; the oldest leaves once the window is full."""
        self._count(workflow, 1)
        self.window.append(workflow)
        if len(self.window) > self.capacity:
            self._count(self.window.popleft(), -1)
        self.gaps.update(workflow.longest_gap_ms)
        self.since_advice += 1

    def _count(self, workflow: FinishedWorkflow, sign: int) -> None:
        path = workflow.path[:MAX_PATH]
        for i, task_type in enumerate(path):
            _add(self.nexts.setdefault(path[:i], Counter()), task_type, sign)
            if not self.nexts[path[:i]]:
                del self.nexts[path[:i]]
        self.failures += sign * workflow.failed
        for error in workflow.errors:
            _add(self.errors, error, sign)
            if workflow.failed:
                _add(self.errors_failed, error, sign)
        for feature in workflow.shapes:
            _add(self.shapes, feature, sign)
            if workflow.failed:
                _add(self.shapes_failed, feature, sign)

    def reached(self, prefix: tuple[str, ...]) -> int:
        """Workflows of the window whose path began with ``prefix``."""
        if not prefix:
            return self.total
        return self.nexts.get(prefix[:-1], Counter())[prefix[-1]]

    def rare_step(self, path: tuple[str, ...], start: int, rare_share: float) -> RareStep | None:
        """The first step of ``path`` from position ``start`` that fewer than ``rare_share``
        of the workflows at the same point took; None if none, or too few got that far."""
        for i in range(start, min(len(path), MAX_PATH)):
            reached = self.reached(path[:i])
            if reached < MIN_SUPPORT:
                return None
            nexts = self.nexts.get(path[:i], Counter())
            took = nexts[path[i]]
            if took < rare_share * reached:
                usual, usual_took = (nexts.most_common(1) or [("(the end)", reached)])[0]
                return RareStep(i, took, reached, usual, usual_took)
        return None

    def stall_after_ms(self, config: WorkflowConfig) -> float | None:
        """Quiet time after which a workflow of the kind has stalled; None until
        :data:`MIN_SUPPORT` workflows have finished."""
        if self.total < MIN_SUPPORT:
            return None
        return max(config.stall_min_s * 1000, config.stall_factor * self.gap_p95_ms())

    def gap_p95_ms(self) -> float:
        """95th percentile of the window's longest quiet gap per workflow (0 before any)."""
        return float(self.gaps.get() or 0.0)

    def precursor(self, error_class: str, config: WorkflowConfig) -> Precursor | None:
        """The rule "``error_class`` => failed" if it holds in the window, else None."""
        workflows = self.errors[error_class]
        if workflows < PRECURSOR_MIN_COUNT or not self.failures:
            return None
        failed = self.errors_failed[error_class]
        confidence = failed / workflows
        lift = confidence / (self.failures / self.total)
        if confidence < config.precursor_confidence or lift < PRECURSOR_LIFT:
            return None
        return Precursor(error_class, workflows, confidence, failed / self.total, lift)

    def advise(self, kind: str, config: WorkflowConfig, t_ms: int) -> list[Record]:
        """Test every shape feature; publish the advice that became significant and retract
        what stopped holding (FIRING and RESOLVED ``workflow_advice`` alerts)."""
        self.since_advice = 0
        tests: list[tuple[str, int, int, int, int, float]] = []
        for feature, n_with in sorted(self.shapes.items()):
            n_without = self.total - n_with
            if min(n_with, n_without) < ADVICE_MIN_N:
                continue
            failed_with = self.shapes_failed[feature]
            failed_without = self.failures - failed_with
            p = two_proportion_p(failed_with, n_with, failed_without, n_without)
            tests.append((feature, n_with, failed_with, n_without, failed_without, p))
        evidence = [
            _AdviceEvidence(kind, feature, n_with, failed_with / n_with, n_without,
                            failed_without / n_without, p, q)
            for (feature, n_with, failed_with, n_without, failed_without, p), q in zip(
                tests, benjamini_hochberg([t[-1] for t in tests]), strict=True)
        ]  # fmt: skip
        alerts = []
        for e in evidence:
            published = self.advice.get(e.feature)
            if published is not None and (
                e.q > min(1.0, 5 * config.advice_alpha)
                or abs(e.relative) < ADVICE_RETRACT_EFFECT
                or (e.relative > 0) != (published.relative > 0)
            ):
                del self.advice[e.feature]
                alerts.append(e.alert(False, published.started_ms, t_ms))
        tested = {e.feature for e in evidence}
        for feature in sorted(set(self.advice) - tested):
            alerts.append(self.retract(kind, feature, t_ms, "too few workflows left to test it"))
        # has: features first, then the shortest name: the simplest words for a split.
        for e in sorted(evidence, key=lambda e: (not e.feature.startswith("has:"),
                                                 len(e.feature), e.feature)):  # fmt: skip
            holds = e.q <= config.advice_alpha and abs(e.relative) >= ADVICE_MIN_EFFECT
            if holds and e.feature not in self.advice and not self._said(e.feature):
                self.advice[e.feature] = _Advice(t_ms, e.relative, e.difference)
                alerts.append(e.alert(True, t_ms, t_ms))
        return alerts

    def _said(self, feature: str) -> bool:
        """Whether published advice splits the window (almost) as ``feature`` does, or as
        its complement: "with lint" and "test directly follows build" say one thing."""
        if not self.advice:
            return False
        agree = Counter[str]()
        for workflow in self.window:
            has = feature in workflow.shapes
            for published in self.advice:
                agree[published] += has == (published in workflow.shapes)
        share = ADVICE_SAME_SPLIT * self.total
        return any(n >= share or n <= self.total - share for n in agree.values())

    def retract(self, kind: str, feature: str, t_ms: int, why: str) -> Record:
        """The RESOLVED alert of published advice that can no longer be tested."""
        published = self.advice.pop(feature)
        summary = f"{kind} workflows {feature_words(feature)}: advice retracted, {why}"
        labels = {"workflow_kind": kind, "feature": feature, "retracted": why}
        return alert_record(
            ADVICE, _SEVERITY[ADVICE], f"{kind}:{feature}", False, published.started_ms, t_ms,
            summary, published.difference, labels,
        )  # fmt: skip


@dataclass(frozen=True)
class _AdviceEvidence:
    """One shape feature's test in a kind's window."""

    kind: str
    feature: str
    n_with: int
    rate_with: float
    n_without: int
    rate_without: float
    p: float
    q: float

    @property
    def relative(self) -> float:
        """How much more (> 0) or less (< 0) often workflows with the feature fail."""
        if self.rate_without == 0:
            return 0.0 if self.rate_with == 0 else math.inf
        return (self.rate_with - self.rate_without) / self.rate_without

    @property
    def difference(self) -> float:
        return self.rate_with - self.rate_without

    def alert(self, firing: bool, started_ms: int, t_ms: int) -> Record:
        if math.isinf(self.relative):
            change = "fail more"
        else:
            change = f"fail {abs(self.relative):.0%} {'more' if self.relative > 0 else 'less'}"
        summary = (
            f"{self.kind} workflows {feature_words(self.feature)} {change} "
            f"({self.rate_with:.1%} vs {self.rate_without:.1%}, n = {self.n_with:,} vs "
            f"{self.n_without:,}; two-proportion z-test, Benjamini-Hochberg q = {self.q:.2g})"
        )
        if not firing:
            summary = f"retracted: {summary}"
        labels = {
            "workflow_kind": self.kind, "feature": self.feature,
            "failure_rate_with": f"{self.rate_with:.4f}",
            "failure_rate_without": f"{self.rate_without:.4f}",
            "n_with": str(self.n_with), "n_without": str(self.n_without),
            "test": "two-proportion z-test, Benjamini-Hochberg",
            "p_value": f"{self.p:.3g}", "q_value": f"{self.q:.3g}",
        }  # fmt: skip
        return alert_record(ADVICE, _SEVERITY[ADVICE], f"{self.kind}:{self.feature}", firing,
                            started_ms, t_ms, summary, self.difference, labels)  # fmt: skip


def _add(counter: Counter[str], key: str, sign: int) -> None:
    counter[key] += sign
    if counter[key] <= 0:
        del counter[key]


@dataclass
class _Workflow:
    """One workflow in flight."""

    workflow_id: str
    last_ms: int
    kind: str | None = None
    root_task: str | None = None
    steps: dict[int, str] = field(default_factory=dict)  # step -> task type
    task_steps: dict[str, int] = field(default_factory=dict)  # task id -> step
    errors: set[str] = field(default_factory=set)  # of failed steps the workflow went on from
    unfollowed: set[str] = field(default_factory=set)  # of failed steps nothing started after
    longest_gap_ms: int = 0
    judged: int = 0  # path positions judged
    end: tuple[int, bool] | None = None  # the root's end (time, failed), taken after the reorder
    fired: set[str] = field(default_factory=set)
    firing: dict[str, tuple[int, float]] = field(default_factory=dict)  # rule -> start, value

    def path(self) -> tuple[str, ...]:
        return tuple(self.steps[s] for s in sorted(self.steps))


class WorkflowTracker:
    """Every workflow a worker follows, and what each kind of workflow has taught it (see
    the module docstring).

    Memory is bounded: at most ``max_workflows`` in flight (a new one makes the least
    recently active leave), ``max_kinds`` kinds (the least recently finished leaves, its
    advice retracted), ``window`` finished workflows per kind, :data:`MAX_TASKS` tasks per
    workflow; a workflow with no event for ``idle_s`` is dropped unlearned.
    """

    def __init__(self, config: WorkflowConfig | None = None) -> None:
        self.config = config or WorkflowConfig()
        self.kinds: OrderedDict[str, KindStats] = OrderedDict()
        self.flight: OrderedDict[str, _Workflow] = OrderedDict()  # least recently active first
        self._ended: OrderedDict[str, None] = OrderedDict()  # late events of these are ignored
        self._due: list[tuple[int, int, str]] = []  # (event time, order, workflow) to judge
        self._order = itertools.count()
        self.watermark_ms = 0
        self._swept_ms = 0
        self._reorder_ms = int(self.config.reorder_s * 1000)
        self.learned = 0  # workflows followed to their end
        self.dropped = 0  # workflows given up on

    def observe(self, event: Record, clock_ms: int | None = None) -> list[Record]:
        """One AgentEvent of a workflow; the alerts it raises or resolves.

        ``clock_ms`` (the wall clock, when there is one) bounds how far the event moves
        event time on: one stamped ahead of it must not make every other workflow look
        stalled."""
        workflow_id, t_ms = event["workflow_id"], event["event_time"]
        if workflow_id in self._ended:
            return []
        alerts: list[Record] = []
        workflow = self.flight.get(workflow_id)
        if workflow is None:
            if len(self.flight) >= self.config.max_workflows:
                oldest = next(iter(self.flight.values()))
                alerts += self._drop(oldest, t_ms, "dropped: the worker follows too many")
            workflow = self.flight[workflow_id] = _Workflow(workflow_id, t_ms)
        else:
            self.flight.move_to_end(workflow_id)
        workflow.longest_gap_ms = max(workflow.longest_gap_ms, t_ms - workflow.last_ms)
        workflow.last_ms = max(workflow.last_ms, t_ms)
        if STALL in workflow.firing:
            alerts.append(self._resolve(workflow, STALL, t_ms, "moved"))
        task, phase = event["task_id"], event["phase"]
        if event["parent_task_id"] is None and workflow.root_task in (None, task):
            if workflow.root_task is None:
                workflow.root_task, workflow.kind = task, event["task_type"]
            if phase != "STARTED" and workflow.end is None:
                workflow.end = (t_ms, phase == "FAILED")
        else:
            if task not in workflow.task_steps and len(workflow.task_steps) < MAX_TASKS:
                step = event["step"]
                if step is None:
                    step = max(workflow.steps, default=0) + 1
                workflow.task_steps[task] = step
                workflow.steps[step] = event["task_type"]
            if phase == "STARTED":  # the workflow went on after its failed steps
                workflow.errors |= set(
                    list(workflow.unfollowed)[: MAX_TASKS - len(workflow.errors)]
                )
                workflow.unfollowed.clear()
            elif (
                phase == "FAILED" and event["error_class"] and len(workflow.unfollowed) < MAX_TASKS
            ):
                workflow.unfollowed.add(event["error_class"])
                alerts += self._precursor(workflow, event["error_class"], t_ms)
        due = t_ms + self._reorder_ms
        heapq.heappush(self._due, (due, next(self._order), workflow_id))
        return alerts + self.advance(t_ms if clock_ms is None else min(t_ms, clock_ms))

    def _judge(self, workflow: _Workflow, t_ms: int) -> list[Record]:
        """Rare-path and loop alerts of the steps added to the workflow's path since it was
        last judged."""
        if workflow.kind is None:
            return []
        stats = self.kinds.get(workflow.kind)
        path, alerts = workflow.path(), []
        start, workflow.judged = workflow.judged, len(path)
        if stats is not None and RARE_PATH not in workflow.fired:
            rare = stats.rare_step(path, start, self.config.rare_share)
            if rare is not None:
                alerts.append(self._rare(workflow, path, rare, t_ms))
        repeats, tail = self.config.loop_repeats, 3 * (self.config.loop_repeats + 1)
        for end in range(start + 1, len(path) + 1):
            loop = (
                None
                if LOOP in workflow.fired
                else find_loop(path[max(0, end - tail) : end], repeats)
            )
            if loop is not None:
                cycle, count = loop
                shown = " → ".join(cycle)
                summary = f"{workflow.workflow_id} ({workflow.kind}) loops: {shown} {count} times"
                alerts.append(self._fire(workflow, LOOP, t_ms, summary, float(count),
                                         {"cycle": shown, "repeats": str(count)}))  # fmt: skip
        return alerts

    def _rare(
        self, workflow: _Workflow, path: tuple[str, ...], rare: RareStep, t_ms: int
    ) -> Record:
        before = " → ".join(path[: rare.position]) or "the start"
        step = path[rare.position]
        share = rare.took / rare.reached
        summary = (
            f"{workflow.workflow_id} ({workflow.kind}) took a rare path: `{step}` after {before} "
            f"in {rare.took} of {rare.reached:,} {workflow.kind} workflows ({share:.1%}); "
            f"usual next: `{rare.usual}` ({rare.usual_took / rare.reached:.0%})"
        )
        evidence = {
            "rare_step": step, "rare_position": str(rare.position + 1),
            "path_frequency": f"{share:.4f}", "took": str(rare.took),
            "reached": str(rare.reached), "usual_next": rare.usual,
        }  # fmt: skip
        return self._fire(workflow, RARE_PATH, t_ms, summary, share, evidence)

    def _precursor(self, workflow: _Workflow, error_class: str, t_ms: int) -> list[Record]:
        stats = self.kinds.get(workflow.kind or "")
        if stats is None or PRECURSOR in workflow.fired:
            return []
        rule = stats.precursor(error_class, self.config)
        if rule is None:
            return []
        summary = (
            f"{workflow.workflow_id} ({workflow.kind}): a step failed with `{error_class}`, "
            f"which preceded a failed {workflow.kind} in {rule.confidence:.0%} of "
            f"{rule.workflows:,} workflows (support {rule.support:.1%}, lift {rule.lift:.1f})"
        )
        evidence = {
            "error_class": error_class, "confidence": f"{rule.confidence:.4f}",
            "support": f"{rule.support:.4f}", "lift": f"{rule.lift:.2f}",
            "workflows": str(rule.workflows),
        }  # fmt: skip
        return [self._fire(workflow, PRECURSOR, t_ms, summary, rule.confidence, evidence)]

    def advance(self, watermark_ms: int) -> list[Record]:
        """Event time has reached ``watermark_ms``: flag stalled workflows and drop idle
        ones (a sweep at most once a second of event time)."""
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        now = self.watermark_ms
        alerts = []
        while self._due and self._due[0][0] <= now:
            due, _, workflow_id = heapq.heappop(self._due)
            workflow = self.flight.get(workflow_id)
            if workflow is None:
                continue  # ended or dropped since
            alerts += self._judge(workflow, due)
            if workflow.end is not None and workflow.end[0] + self._reorder_ms <= now:
                alerts += self._finish(workflow, workflow.end[1], workflow.end[0])
        if now - self._swept_ms < 1000:
            return alerts
        self._swept_ms = now
        floor_ms, idle_ms = self.config.stall_min_s * 1000, self.config.idle_s * 1000
        idle = []
        for workflow in self.flight.values():
            quiet = now - workflow.last_ms
            if quiet < floor_ms:
                break  # the rest were active since
            if quiet >= idle_ms:
                idle.append(workflow)
            elif STALL not in workflow.firing and workflow.end is None:
                stats = self.kinds.get(workflow.kind or "")
                after = None if stats is None else stats.stall_after_ms(self.config)
                if stats is not None and after is not None and quiet >= after:
                    alerts.append(self._stall(workflow, stats, quiet, after, now))
        for workflow in idle:
            alerts += self._drop(workflow, now, f"abandoned: no event for {_span(idle_ms)}")
        return alerts

    def _stall(
        self, workflow: _Workflow, stats: KindStats, quiet: float, after: float, t_ms: int
    ) -> Record:
        path = workflow.path()
        last = f"; last step `{path[-1]}`" if path else ""
        summary = (
            f"{workflow.workflow_id} ({workflow.kind}) stalled: no event for {_span(quiet)} "
            f"(the longest quiet gap of 95% of {stats.total:,} {workflow.kind} workflows is "
            f"under {_span(stats.gap_p95_ms())}; stalled after {_span(after)}){last}"
        )
        evidence = {"quiet_s": f"{quiet / 1000:.0f}", "stall_after_s": f"{after / 1000:.0f}"}
        return self._fire(workflow, STALL, t_ms, summary, quiet / 1000, evidence)

    def _fire(
        self,
        workflow: _Workflow,
        rule: str,
        t_ms: int,
        summary: str,
        value: float,
        evidence: dict[str, str],
    ) -> Record:
        workflow.fired.add(rule)
        workflow.firing[rule] = (t_ms, value)
        return alert_record(rule, _SEVERITY[rule], workflow.workflow_id, True, t_ms, t_ms,
                            summary, value, {**self._labels(workflow), **evidence})  # fmt: skip

    def _resolve(self, workflow: _Workflow, rule: str, t_ms: int, outcome: str) -> Record:
        started_ms, value = workflow.firing.pop(rule)
        summary = f"{workflow.workflow_id} ({workflow.kind}): {rule} ended, {outcome}"
        labels = {**self._labels(workflow), "outcome": outcome}
        return alert_record(rule, _SEVERITY[rule], workflow.workflow_id, False, started_ms,
                            t_ms, summary, value, labels)  # fmt: skip

    def _labels(self, workflow: _Workflow) -> dict[str, str]:
        return {"workflow_kind": workflow.kind or "", "path": " → ".join(workflow.path())}

    def _finish(self, workflow: _Workflow, failed: bool, t_ms: int) -> list[Record]:
        """The workflow ended: its kind learns it, its alerts resolve with the outcome, and
        the kind's advice is reviewed when due."""
        outcome = "FAILED" if failed else "SUCCEEDED"
        alerts = [self._resolve(workflow, rule, t_ms, outcome) for rule in list(workflow.firing)]
        self._forget(workflow)
        self.learned += 1
        kind = workflow.kind or ""
        stats = self.kinds.get(kind)
        if stats is None:
            if len(self.kinds) >= self.config.max_kinds:
                old_kind, old = self.kinds.popitem(last=False)
                alerts += [old.retract(old_kind, f, t_ms, "its kind is no longer followed")
                           for f in sorted(old.advice)]  # fmt: skip
            stats = self.kinds[kind] = KindStats(self.config.window)
        self.kinds.move_to_end(kind)
        stats.learn(FinishedWorkflow(workflow.path(), failed, frozenset(workflow.errors),
                                     workflow.longest_gap_ms))  # fmt: skip
        if stats.since_advice >= ADVICE_EVERY:
            alerts += stats.advise(kind, self.config, t_ms)
        return alerts

    def _drop(self, workflow: _Workflow, t_ms: int, why: str) -> list[Record]:
        """Stop following a workflow whose end will not come (or not be waited for)."""
        self.dropped += 1
        alerts = [self._resolve(workflow, rule, t_ms, why) for rule in list(workflow.firing)]
        self._forget(workflow)
        return alerts

    def _forget(self, workflow: _Workflow) -> None:
        del self.flight[workflow.workflow_id]
        self._ended[workflow.workflow_id] = None
        if len(self._ended) > self.config.max_workflows:
            self._ended.popitem(last=False)


def _span(ms: float) -> str:
    """A duration for a person: ``45 s``, ``31 min``, ``2.5 h``."""
    s = ms / 1000
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
