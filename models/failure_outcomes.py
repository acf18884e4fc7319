"""Delayed labels meet the predictions made before them: online failure learning and quality.

A failure is known only when it happens, long after the predictions that should have
warned of it. :class:`OutcomeTracker` logs, per entity, every step's failure-risk scores and
a few features *as they were at prediction time*; a FAILURE label for the entity at time T
resolves the logged steps in ``[T - horizon, T]`` as positives, and steps older than the
horizon with no failure after them resolve as negatives. The resolved steps

* teach an online logistic model (:class:`OnlineLogistic`) the failure risk from those
  features: the model learns from labels while the stream runs, with no batch job;
* score every failure-risk model seen (precision and recall at the alert threshold, with
  exponential forgetting), so a dashboard shows how each model version is doing.

State is bounded: a ring of ``capacity`` steps per entity and a weight vector.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from river import linear_model, optim

from models.base import FloatArray

Record = dict[str, Any]

TREND_FEATURES: tuple[str, ...] = (
    "used_fraction",
    "use_in_horizon_5m",
    "use_in_horizon_15m",
    "r2_15m",
)
"""What the online failure model reads of a step: the trend of the entity's riskiest
capacity-bound signal (``EntityPipeline.risk_features``): the share of its capacity in use,
the share its 5-minute and its 15-minute slope would use within the failure horizon (clipped
to [-2, 2]), and how well the 15-minute line fits. In those units a linear log-odds can say
"used plus what the trend adds reaches the capacity", whatever the horizon; slopes per minute
were too small beside the other features for the model to learn from, and it leaned on the
fit instead, which is as good on a real host's slow, steady drift as on a leak."""


class OnlineLogistic:
    """Logistic regression learned one resolved step at a time: River's, with AdaGrad.
    Labels arrive a few per minute at most, so River's per-example cost is no matter.

    Every step weighs the same, so the score is a probability: up-weighting the rare
    positives (by the running ratio of negatives to positives) lifted every healthy host's
    risk with them, to a median of 0.15 and up to 0.98 on simulated fleets.

    Examples
    --------
    >>> import numpy as np
    >>> model = OnlineLogistic(("a", "b"))
    >>> for _ in range(300):
    ...     model.learn(np.array([1.0, 0.0]), 1)
    ...     model.learn(np.array([0.0, 1.0]), 0)
    >>> model.predict(np.array([1.0, 0.0])) > 0.9 > model.predict(np.array([0.0, 1.0]))
    True
    >>> [name for name, term in model.drivers(np.array([1.0, 0.0]), top=3)]
    ['a']
    """

    def __init__(self, features: Sequence[str], rate: float = 0.5, prior: float = 0.01) -> None:
        self.features = tuple(features)
        # Before any label the risk is the prior: failures are rare.
        self.model = linear_model.LogisticRegression(
            optimizer=optim.AdaGrad(rate), intercept_init=math.log(prior / (1 - prior))
        )

    def _named(self, x: FloatArray) -> dict[str, float]:
        return dict(zip(self.features, x.tolist(), strict=True))

    def predict(self, x: FloatArray) -> float:
        probabilities = self.model.predict_proba_one(self._named(x))  # type: ignore[no-untyped-call]
        return float(probabilities[True])

    def drivers(self, x: FloatArray, top: int) -> list[tuple[str, float]]:
        """The ``top`` features by their term ``w_j x_j`` of the log-odds, largest first
        (the intercept aside; a zero term drives nothing)."""
        weights = self.model.weights
        terms = [(name, float(weights.get(name, 0.0)) * value)
                 for name, value in self._named(x).items()]  # fmt: skip
        return sorted((t for t in terms if t[1] != 0.0), key=lambda t: -abs(t[1]))[:top]

    def learn(self, x: FloatArray, y: int) -> None:
        self.model.learn_one(self._named(x), bool(y))


@dataclass
class Quality:
    """Forgetting counts of alarms against outcomes, for one model version."""

    half_life: float = 500.0
    true_positives: float = 0.0
    false_positives: float = 0.0
    false_negatives: float = 0.0
    true_negatives: float = 0.0

    def add(self, alarmed: bool, failed: bool) -> None:
        decay = 0.5 ** (1.0 / self.half_life)
        self.true_positives = decay * self.true_positives + float(alarmed and failed)
        self.false_positives = decay * self.false_positives + float(alarmed and not failed)
        self.false_negatives = decay * self.false_negatives + float(failed and not alarmed)
        self.true_negatives = decay * self.true_negatives + float(not (alarmed or failed))

    @property
    def precision(self) -> float:
        alarms = self.true_positives + self.false_positives
        return self.true_positives / alarms if alarms > 0 else math.nan

    @property
    def recall(self) -> float:
        failures = self.true_positives + self.false_negatives
        return self.true_positives / failures if failures > 0 else math.nan

    @property
    def accuracy(self) -> float:
        right = self.true_positives + self.true_negatives
        calls = right + self.false_positives + self.false_negatives
        return right / calls if calls > 0 else math.nan


@dataclass(frozen=True)
class _Logged:
    t_ms: int
    x: FloatArray
    scores: Mapping[str, float]  # "model@version" -> failure risk at prediction time


class OutcomeTracker:
    """Logs each entity's failure-risk steps and resolves them against FAILURE labels.

    Parameters
    ----------
    horizon_s
        The failure-risk horizon: a step is positive when a failure follows within it.
    threshold
        Score at which a model's prediction counts as an alarm (the alert rule's threshold).
    capacity
        Steps kept per entity (bounded memory); older unresolved steps resolve as negatives.

    Examples
    --------
    >>> import numpy as np
    >>> tracker = OutcomeTracker(horizon_s=600)
    >>> tracker.log("web-1", 0, np.array([0.9, 0.01, 0.01, 0.8]), {"local_trend@1": 0.9})
    >>> tracker.label("web-1", 300_000)
    1
    >>> tracker.quality["local_trend@1"].recall
    1.0
    """

    def __init__(self, horizon_s: float, threshold: float = 0.7, capacity: int = 720) -> None:
        self.horizon_ms = int(horizon_s * 1000)
        self.threshold = threshold
        self.capacity = capacity
        self.model = OnlineLogistic(TREND_FEATURES)
        self.quality: dict[str, Quality] = {}
        self.resolved = 0
        self._logged: dict[str, deque[_Logged]] = {}

    def log(self, entity: str, t_ms: int, x: FloatArray, scores: Mapping[str, float]) -> None:
        """Log a step; resolves as negatives the entity's steps now beyond the horizon."""
        ring = self._logged.setdefault(entity, deque())
        ring.append(_Logged(t_ms, x, dict(scores)))
        while ring and (ring[0].t_ms < t_ms - self.horizon_ms or len(ring) > self.capacity):
            self._resolve(ring.popleft(), failed=False)

    def label(self, entity: str, failure_ms: int) -> int:
        """A failure of ``entity`` at ``failure_ms``: its steps within the horizon before it
        are positives (and earlier ones negatives). Returns the positives resolved."""
        ring = self._logged.get(entity, deque())
        positives = 0
        while ring and ring[0].t_ms <= failure_ms:
            step = ring.popleft()
            failed = step.t_ms >= failure_ms - self.horizon_ms
            positives += failed
            self._resolve(step, failed)
        return positives

    def forget(self, entity: str) -> None:
        """``entity`` left (evicted after being idle longer than the horizon): its logged
        steps resolve as negatives, since no failure followed them in time."""
        for step in self._logged.pop(entity, deque()):
            self._resolve(step, failed=False)

    def score(self, x: FloatArray) -> float:
        """The online model's failure risk for features ``x``."""
        return self.model.predict(x)

    def _resolve(self, step: _Logged, failed: bool) -> None:
        self.model.learn(step.x, int(failed))
        for model, score in step.scores.items():
            self.quality.setdefault(model, Quality()).add(score >= self.threshold, failed)
        self.resolved += 1
