"""Code-quality forecasts and technical-debt alerts, per repository, one commit at a time.

A repository's quality is a series with one point per commit (a CodeQualitySnapshot):
complexity, size, tests, lint, duplication, coverage, churn. :class:`RepositoryQuality`
learns each snapshot, forecasts every metric a few commits ahead with an interval, and
raises two debt alerts:

* ``complexity_trend``: the mean cyclomatic complexity is above its limit, or its forecast
  crosses the limit within the horizon ("mean complexity crosses 12 in about 3 weeks");
* ``test_ratio_falling``: the test-to-code ratio (test lines over source lines) has not risen
  for ``falling_commits`` commits in a row and is lower than before them.

The forecaster is :class:`CommitForecaster`, stepped once per commit: the last value and a
damped drift, blended per horizon by their recent errors, with intervals from the blend's own
errors. The project's :class:`~models.forecast.SeasonalForecaster` was tried first, stepped on
a clock of one week per commit so that its daily and weekly profiles stay flat: its point
forecasts came out as good, but its seasonal-naive candidate is then scored against the value
one commit old at every horizon, so it wins at long horizons on errors it never makes, and its
90% intervals held the truth 20 commits ahead only 6 to 47% of the time on four histories
(``foresight bench quality`` measures both). A horizon in commits becomes a time through the
repository's recent commit rate.

Everything is plain arrays and records: the quality processor (:mod:`streams.quality`), the
walk-forward evaluation (:func:`walk_forward`) and the tests use the same class.

Examples
--------
>>> quality = RepositoryQuality("shop", QualityConfig(max_complexity=6.0, min_history=5))
>>> day, raised = 86_400_000, []
>>> for i in range(30):  # complexity up 0.1 a commit, a commit a day, tests standing still
...     batch, alerts = quality.observe({"commit": f"c{i}", "event_time": i * day,
...         "mean_complexity": 3.0 + 0.1 * i, "max_complexity": 9.0, "lines": 1000 + 10 * i,
...         "functions": 50, "test_count": 40, "test_lines": 800, "churn_added": 10,
...         "churn_deleted": 0})
...     raised += [(i, a["summary"]) for a in alerts]
>>> for alert in raised:
...     print(*alert)
10 repo:shop: test-to-code ratio falling for 10 commits: 0.8 to 0.727 (-9%)
22 repo:shop: mean complexity 6.01 crosses 6 in about 3 weeks (22 commits at 1 a day)
>>> sorted(set(batch["metrics"]))[:3]
['quality.churn', 'quality.functions', 'quality.lines']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.alerts import AlertRule, AlertState, evaluate
from models.base import FloatArray, Forecaster
from models.forecast import blend_weights, damped_steps, horizon_steps, learned_rows
from schemas.predictions import PredictionColumns

Record = dict[str, Any]
IntArray = npt.NDArray[np.int64]

METRICS: tuple[str, ...] = (
    "mean_complexity",
    "max_complexity",
    "lines",
    "functions",
    "test_count",
    "test_to_code_ratio",
    "lint_warnings",
    "duplication",
    "coverage",
    "churn",
)
"""The metrics forecast for every repository, in their rows' order; on ``predictions`` each
is named ``quality.<metric>``."""
COMPLEXITY = METRICS.index("mean_complexity")
RATIO = METRICS.index("test_to_code_ratio")
_WEEK_MS = 7 * 86_400_000
_DAY_S = 86_400.0
COMMIT_BUCKETS = np.array([1, 5, 20], dtype=np.int64)
"""Horizons (in commits) at which the candidates' errors and the interval are tracked."""


def _debt_rule(name: str, resolve_steps: int) -> AlertRule:
    """A debt rule: its condition's 1 fires at once, ``resolve_steps`` 0s in a row resolve."""
    return AlertRule(
        name=name,
        kind="FORECAST",
        threshold=1.0,
        clear=0.5,
        for_steps=1,
        resolve_steps=resolve_steps,
        severity="WARNING",
        summary="{entity}: {detail}",
    )


COMPLEXITY_RULE = _debt_rule("complexity_trend", 3)
"""Fires at the first commit whose forecast (or value) reaches the complexity limit within
the horizon; resolves after three commits that do not."""
RATIO_RULE = _debt_rule("test_ratio_falling", 1)
"""Fires when the test-to-code ratio has fallen for the configured run of commits; resolves
at the first commit that raises it."""


@dataclass(frozen=True)
class QualityConfig:
    """What a repository's forecasts look at and when its debt alerts fire.

    Parameters
    ----------
    max_complexity
        The mean cyclomatic complexity the code should stay under
        (``FORESIGHT_QUALITY_MAX_COMPLEXITY``, default 12).
    horizon_days
        How far ahead a forecast crossing of ``max_complexity`` alerts
        (``FORESIGHT_QUALITY_HORIZON_DAYS``, default 30).
    falling_commits
        Commits in a row without a rise of the test-to-code ratio, with a fall overall, that
        make the falling alert (``FORESIGHT_QUALITY_FALLING_COMMITS``, default 10).
    horizons
        Commits ahead of each published forecast (default 1, 5 and 20).
    min_history
        Snapshots learned before forecasts are published and the crossing alert is judged
        (default 10).
    rate_window
        Recent commits whose span gives the commit rate that turns commits into time
        (default 20).
    max_horizon
        The most commits ahead a crossing is looked for, whatever the rate (default 500).
    """

    max_complexity: float = 12.0
    horizon_days: float = 30.0
    falling_commits: int = 10
    horizons: tuple[int, ...] = (1, 5, 20)
    min_history: int = 10
    rate_window: int = 20
    max_horizon: int = 500

    def __post_init__(self) -> None:
        if not (self.max_complexity > 0 and self.horizon_days > 0):
            raise ValueError(
                f"max_complexity ({self.max_complexity}) and horizon_days "
                f"({self.horizon_days}) must be positive"
            )
        if self.falling_commits < 2 or self.rate_window < 2:
            raise ValueError(
                f"falling_commits ({self.falling_commits}) and rate_window "
                f"({self.rate_window}) must be at least 2"
            )
        if not self.horizons or min(self.horizons) < 1 or self.max_horizon < 1:
            raise ValueError(
                f"horizons ({self.horizons}) and max_horizon ({self.max_horizon}) must be "
                "at least one commit ahead"
            )


class CommitForecaster:
    """Forecasts series with one point per commit: the last value, a recent median and a
    damped drift, blended per horizon by how each has done, with intervals from the blend's
    own recent errors.

    Implements :class:`models.base.Forecaster`, with a step of one commit (``t_ms`` is
    ignored: commits have no clock). Code metrics move like random walks: most commits leave a
    metric where it was and a few move it, and a trend seen over the last commits rarely goes
    on (on three real histories, carrying the last 20 commits' drift forward had 1.4 to 1.7
    times the last value's error). So each horizon follows whichever candidate has been best
    there lately: the last value for levels (lines, complexity), the median for a noisy
    per-commit count (churn), the drift only while a trend has held.

    For each horizon bucket (1, 5 and 20 commits) the model scores, at every new point, the
    forecasts the candidates made that many commits earlier (recomputed from the kept
    values): an exponentially weighted mean absolute error per candidate sets the blend
    weights (proportional to ``mae ** -weight_power``), and the blend's signed errors, the
    last ``error_window`` of them, give the interval as their empirical quantiles. Horizons
    past the last bucket use its weights, and its error quantiles widened by the square root
    of the horizon's ratio to it (a random walk's spread).

    State per series: ``history`` values, a count, and per bucket three errors, a position and
    ``error_window`` signed errors (461 floats, under 4 KB, by default).

    Parameters
    ----------
    history
        Values kept (default 64); the drift is measured over the last ``drift_window``.
    drift_window
        Commits the drift is measured over (default 16).
    phi
        Damping of the drift per commit ahead (default 0.9: it levels off at 9 commits'
        worth).
    error_rate
        Rate of the candidates' weighted errors (default 0.01, about the last 100 commits: a
        shorter memory switched candidates on noise); a young series averages its first
        errors equally.
    weight_power
        Blend weights proportional to ``mae ** -weight_power`` (default 20: in effect the
        best candidate, hedged only between near ties).
    median_window
        Commits in the median candidate (default 8).
    error_window
        Signed errors per bucket the interval is read from (default 128).
    coverage
        Nominal coverage of the interval (default 0.9).

    Examples
    --------
    >>> import numpy as np
    >>> model = CommitForecaster()
    >>> state = model.init_state(1)
    >>> for i in range(200):
    ...     model.learn(state, np.array([100.0 + 2 * i]), 0)
    >>> mean, lower, upper = model.forecast(state, 0, np.array([1, 20]))
    >>> [round(v) for v in mean[0]]
    [500, 514]
    """

    name = "commit_forecaster"
    version = "1"

    def __init__(
        self,
        history: int = 64,
        drift_window: int = 16,
        phi: float = 0.9,
        error_rate: float = 0.01,
        weight_power: float = 20.0,
        median_window: int = 8,
        error_window: int = 128,
        coverage: float = 0.9,
    ) -> None:
        if drift_window < 1 or drift_window + int(COMMIT_BUCKETS[-1]) >= history:
            raise ValueError(
                f"history ({history}) must exceed drift_window ({drift_window}) plus the "
                f"longest bucket ({COMMIT_BUCKETS[-1]}), and drift_window be at least 1"
            )
        if not (0 <= phi <= 1 and 0 < error_rate <= 1 and 0 < coverage < 1):
            raise ValueError(
                f"phi ({phi}) must be in [0, 1], error_rate ({error_rate}) in (0, 1], "
                f"coverage ({coverage}) in (0, 1)"
            )
        if error_window < 2:
            raise ValueError(f"error_window must be at least 2, got {error_window}")
        self.history = history
        self.drift_window = drift_window
        self.phi = phi
        self.error_rate = error_rate
        self.weight_power = weight_power
        self.error_window = error_window
        self.median_window = median_window
        self.coverage = coverage
        buckets = len(COMMIT_BUCKETS)
        self._mae = history + 1
        self._position = self._mae + 3 * buckets
        self._errors = self._position + buckets
        self._size = self._errors + buckets * error_window

    @property
    def state_size(self) -> int:
        """Floats of state per series."""
        return self._size

    def init_state(self, n_series: int) -> FloatArray:
        """Fresh state: no values (NaN), no errors."""
        state = np.zeros((n_series, self._size), dtype=np.float64)
        state[:, : self.history] = np.nan
        state[:, self._errors :] = np.nan
        return state

    def _candidates(
        self, s: FloatArray, count: IntArray, back: IntArray, steps: FloatArray
    ) -> FloatArray:
        """The last value, the median of the last ``median_window`` and the damped drift,
        ``back`` points before the newest, ``steps`` ahead: shape ``(n, len(steps), 3)``."""
        at = count - 1 - back
        rows = np.arange(s.shape[0])
        last = s[rows, np.mod(at, self.history)]
        span = np.clip(at, 0, self.drift_window)
        first = s[rows, np.mod(at - span, self.history)]
        slope = np.where(span > 0, (last - first) / np.maximum(span, 1), 0.0)
        drift = last[:, None] + slope[:, None] * damped_steps(steps, self.phi)[None, :]
        recent = np.arange(self.median_window)[None, :]
        window = s[rows[:, None], np.mod(at[:, None] - recent, self.history)]
        median = _quantile(np.where(recent <= at[:, None], window, np.nan), 0.5)
        return np.stack(np.broadcast_arrays(last[:, None], median[:, None], drift), axis=-1)

    def _weights(self, mae: FloatArray) -> FloatArray:
        return blend_weights(mae, self.weight_power)

    def learn(
        self, state: FloatArray, x: FloatArray, t_ms: int, rows: IntArray | None = None
    ) -> None:
        """Learn one point per series (``state`` in place; NaN skipped): first score the
        forecasts made 1, 5 and 20 commits ago, then keep the point."""
        finite, at = learned_rows(x, rows)
        if finite.size == 0:
            return
        s = state[at]
        value = x[finite]
        count = s[:, self.history].astype(np.int64)
        for b, h in enumerate(COMMIT_BUCKETS):
            scored = count >= h
            if not scored.any():
                continue
            made = self._candidates(s, count, np.full(len(s), h - 1), np.array([float(h)]))[:, 0]
            mae = s[:, self._mae + 3 * b : self._mae + 3 * b + 3]
            blend = np.sum(self._weights(mae) * made, axis=-1)
            seen = (count - h + 1).astype(np.float64)
            rate = np.maximum(self.error_rate, 1.0 / np.maximum(seen, 1.0))[:, None]
            updated = mae + rate * (np.abs(value[:, None] - made) - mae)
            s[:, self._mae + 3 * b : self._mae + 3 * b + 3] = np.where(
                scored[:, None], updated, mae
            )
            position = s[:, self._position + b].astype(np.int64)
            column = self._errors + b * self.error_window + position % self.error_window
            index = np.flatnonzero(scored)
            s[index, column[index]] = (value - blend)[index]
            s[:, self._position + b] = np.where(scored, position + 1, position)
        s[np.arange(len(s)), np.mod(count, self.history)] = value
        s[:, self.history] = count + 1
        state[at] = s

    def forecast(
        self, state: FloatArray, t_ms: int, horizons: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mean, lower and upper ``horizons`` commits (each >= 1) after the last point."""
        steps = horizon_steps(horizons)
        count = state[:, self.history].astype(np.int64)
        made = self._candidates(state, count, np.zeros(len(state), np.int64), steps.astype(float))
        bucket = np.clip(np.searchsorted(COMMIT_BUCKETS, steps, side="right") - 1, 0, None)
        buckets = len(COMMIT_BUCKETS)
        mae = state[:, self._mae : self._position].reshape(-1, buckets, 3)[:, bucket]
        mean: FloatArray = np.sum(self._weights(mae) * made, axis=-1)
        errors = state[:, self._errors :].reshape(-1, buckets, self.error_window)
        enough = np.sum(np.isfinite(errors), axis=-1) >= 2
        low, high = (
            np.where(enough, _quantile(errors, tau), 0.0)[:, bucket]
            for tau in ((1 - self.coverage) / 2, (1 + self.coverage) / 2)
        )
        widen = np.sqrt(np.maximum(steps / COMMIT_BUCKETS[bucket], 1.0))[None, :]
        lower = mean + np.minimum(low, 0.0) * widen
        upper = mean + np.maximum(high, 0.0) * widen
        empty = (count == 0)[:, None]
        mean[empty[:, 0]] = np.nan
        return mean, np.where(empty, np.nan, lower), np.where(empty, np.nan, upper)


def _quantile(values: FloatArray, tau: float) -> FloatArray:
    """The ``tau`` quantile of each row's finite values (last axis; linear interpolation, as
    numpy's default), NaN for a row of none. Sorting puts NaN last, so one vectorised pass
    serves every row, where ``nanquantile`` and ``nanmedian`` loop over them."""
    ordered = np.sort(values, axis=-1)
    last = np.sum(np.isfinite(ordered), axis=-1) - 1
    position = tau * np.maximum(last, 0)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.maximum(last, 0))
    lo = np.take_along_axis(ordered, below[..., None], -1)[..., 0]
    hi = np.take_along_axis(ordered, above[..., None], -1)[..., 0]
    quantile: FloatArray = np.where(last >= 0, lo + (position - below) * (hi - lo), np.nan)
    return quantile


def quality_forecaster() -> CommitForecaster:
    """The forecaster of every quality metric."""
    return CommitForecaster()


def quality_vector(snapshot: Mapping[str, Any]) -> FloatArray:
    """The snapshot's value of every metric of :data:`METRICS`; NaN for one not measured."""
    lines, test_lines = snapshot.get("lines"), snapshot.get("test_lines")
    derived = {
        "test_to_code_ratio": test_lines / lines if lines and test_lines is not None else None,
        "churn": (snapshot.get("churn_added") or 0) + (snapshot.get("churn_deleted") or 0),
    }
    values = [derived[m] if m in derived else snapshot.get(m) for m in METRICS]
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _about(seconds: float) -> str:
    """A duration in the largest whole unit a person would say: '3 weeks', '2 days'."""
    for unit, size in (("year", 365 * _DAY_S), ("month", 30 * _DAY_S), ("week", 7 * _DAY_S),
                       ("day", _DAY_S), ("hour", 3600.0)):  # fmt: skip
        if seconds >= size:
            count = max(1, round(seconds / size))
            return f"{count} {unit}{'s' * (count > 1)}"
    return "less than an hour"


def _rate(per_second: float) -> str:
    """A commit rate in words: '6.3 a week', '2 a day'."""
    per_day = per_second * _DAY_S
    if per_day >= 1:
        return f"{per_day:.2g} a day"
    return f"{per_day * 7:.2g} a week"


class RepositoryQuality:
    """One repository's forecaster state, recent history and alert states.

    The state is bounded: one forecaster row per metric, the last ``rate_window`` commit
    times and hashes, and the last ``falling_commits + 1`` test-to-code ratios.
    """

    def __init__(self, repository: str, config: QualityConfig | None = None) -> None:
        self.repository = repository
        self.entity = f"repo:{repository}"
        self.config = config or QualityConfig()
        self.forecaster = quality_forecaster()
        self.state = self.forecaster.init_state(len(METRICS))
        self.count = 0
        self.times: list[int] = []
        self.commits: list[str] = []
        self.ratios: list[float] = []
        self.last = np.full(len(METRICS), math.nan)
        self.complexity_alert = AlertState()
        self.ratio_alert = AlertState()

    def seconds_per_commit(self) -> float:
        """The mean interval between the recent commits (NaN before two)."""
        if len(self.times) < 2:
            return math.nan
        return (self.times[-1] - self.times[0]) / 1000 / (len(self.times) - 1)

    def learn(self, snapshot: Mapping[str, Any]) -> bool:
        """Learn one snapshot; False for a commit among the recent ones (a resend)."""
        if snapshot["commit"] in self.commits:
            return False
        x = quality_vector(snapshot)
        self.forecaster.learn(self.state, x, int(snapshot["event_time"]))
        self.last = np.where(np.isfinite(x), x, self.last)
        self.count += 1
        window = self.config.rate_window
        self.times = [*self.times, int(snapshot["event_time"])][-window:]
        self.commits = [*self.commits, str(snapshot["commit"])][-window:]
        if math.isfinite(x[RATIO]):
            self.ratios = [*self.ratios, float(x[RATIO])][-(self.config.falling_commits + 1) :]
        return True

    def forecast(self, horizons: Sequence[int]) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mean, lower and upper of every metric ``horizons`` commits ahead, each of shape
        ``(len(METRICS), len(horizons))``; NaN where a metric was never measured."""
        steps = np.asarray(horizons, dtype=np.int64)
        return self.forecaster.forecast(self.state, self.times[-1], steps)

    def observe(self, snapshot: Mapping[str, Any]) -> tuple[Record | None, list[Record]]:
        """Learn one snapshot; its PredictionBatch (None for a resend, or while the history is
        shorter than ``min_history``) and the debt alerts it fires or resolves."""
        if not self.learn(snapshot):
            return None, []
        if self.count < self.config.min_history:
            return None, []
        t_ms = int(snapshot["event_time"])
        alerts = [a for a in (self._complexity(t_ms), self._ratio(t_ms)) if a is not None]
        return self._predictions(snapshot, t_ms), alerts

    def _predictions(self, snapshot: Mapping[str, Any], t_ms: int) -> Record:
        mean, lower, upper = self.forecast(self.config.horizons)
        horizons = np.asarray(self.config.horizons, dtype=np.int64)
        interval = self.seconds_per_commit()
        horizon_s = np.rint(horizons * (interval if math.isfinite(interval) else 0.0))
        row, at = np.nonzero(np.isfinite(mean))
        columns = PredictionColumns()
        model = (self.forecaster.name, self.forecaster.version)
        names = [f"quality.{METRICS[i]}" for i in row]
        columns.add(
            "FORECAST", model, names, horizon_s[at], mean[row, at], np.zeros(len(row)),
            lower[row, at], upper[row, at],
        )  # fmt: skip
        return {
            "prediction_id": f"{self.entity}@{snapshot['commit']}",
            "entity": self.entity,
            "event_time": t_ms,
            "emitted_at": t_ms,
            "latency_ms": 0.0,
            **columns.record(),
        }

    def crossing(self) -> tuple[int, float] | None:
        """Commits until the mean complexity's forecast reaches the limit within the horizon
        (0: it is there already) and the forecast value then; None when it does not."""
        limit = self.config.max_complexity
        now = float(self.last[COMPLEXITY])
        if now >= limit:
            return 0, now
        interval = self.seconds_per_commit()
        if not interval > 0:
            return None
        reach = math.ceil(self.config.horizon_days * _DAY_S / interval)
        steps = np.arange(1, min(reach, self.config.max_horizon) + 1, dtype=np.int64)
        mean, _, _ = self.forecaster.forecast(self.state[[COMPLEXITY]], self.times[-1], steps)
        over = np.flatnonzero(mean[0] >= limit)
        return None if over.size == 0 else (int(steps[over[0]]), float(mean[0, over[0]]))

    def _complexity(self, t_ms: int) -> Record | None:
        found = self.crossing()
        labels = {"repository": self.repository, "limit": f"{self.config.max_complexity:g}"}
        detail = ""
        if found is not None:
            commits, value = found
            limit = f"{self.config.max_complexity:g}"
            if commits == 0:
                detail = f"mean complexity is {value:.3g}, at or above {limit}"
            else:
                per_commit = self.seconds_per_commit()
                detail = (
                    f"mean complexity {value:.3g} crosses {limit} in about "
                    f"{_about(commits * per_commit)} ({commits} commit{'s' * (commits > 1)} at "
                    f"{_rate(1 / per_commit)})"
                )
                labels["commits_to_cross"] = str(commits)
        alert = evaluate(
            COMPLEXITY_RULE, self.complexity_alert, self.entity, float(found is not None),
            "quality.mean_complexity", t_ms, labels, detail,
        )  # fmt: skip
        if alert is not None and found is not None:
            alert["value"] = found[0] * self.seconds_per_commit() if found[0] else 0.0
        return alert

    def falling(self) -> bool:
        """Has the test-to-code ratio not risen for ``falling_commits`` commits, and fallen?"""
        ratios = self.ratios
        if len(ratios) <= self.config.falling_commits:
            return False
        steps = np.diff(ratios)
        return bool(np.all(steps <= 0) and ratios[-1] < ratios[0])

    def _ratio(self, t_ms: int) -> Record | None:
        falling = self.falling()
        detail = ""
        if falling:
            first, last = self.ratios[0], self.ratios[-1]
            detail = (
                f"test-to-code ratio falling for {self.config.falling_commits} commits: "
                f"{first:.3g} to {last:.3g} ({(last - first) / first:+.0%})"
            )
        alert = evaluate(
            RATIO_RULE, self.ratio_alert, self.entity, float(falling),
            "quality.test_to_code_ratio", t_ms, {"repository": self.repository}, detail,
        )  # fmt: skip
        if alert is not None and falling:
            alert["value"] = self.ratios[-1]
        return alert


@dataclass(frozen=True)
class HorizonError:
    """Walk-forward forecast error of one metric at one horizon (in commits)."""

    metric: str
    horizon: int
    points: int
    mae: float
    naive_mae: float
    coverage: float

    @property
    def relative(self) -> float:
        """The forecaster's mean absolute error over the last-value forecast's (below 1:
        better than carrying the last value forward)."""
        return self.mae / self.naive_mae if self.naive_mae > 0 else math.nan


def walk_forward(
    snapshots: Sequence[Mapping[str, Any]],
    horizons: Sequence[int],
    warmup: int = 20,
    forecaster: Forecaster | None = None,
) -> list[HorizonError]:
    """Forecast every metric ``horizons`` commits ahead from each commit after ``warmup``,
    knowing only the commits up to it, and score against the commits that came; the naive
    baseline carries the last value forward. Metrics never measured are left out.

    ``forecaster`` defaults to :func:`quality_forecaster`'s; it is stepped on a clock of one
    week per commit, which keeps a seasonal forecaster's profiles flat."""
    series = np.array([quality_vector(s) for s in snapshots])
    steps = np.asarray(horizons, dtype=np.int64)
    forecaster = forecaster or quality_forecaster()
    state = forecaster.init_state(len(METRICS))
    made: list[tuple[int, FloatArray, FloatArray, FloatArray]] = []
    for i, x in enumerate(series):
        forecaster.learn(state, x, i * _WEEK_MS)
        if i + 1 >= warmup and i + int(steps.min()) < len(series):
            made.append((i, *forecaster.forecast(state, i * _WEEK_MS, steps)))
    errors = []
    for m, metric in enumerate(METRICS):
        for k, h in enumerate(steps):
            rows = [(series[i + h, m], mean[m, k], lo[m, k], hi[m, k], series[i, m])
                    for i, mean, lo, hi in made if i + h < len(series)]  # fmt: skip
            scored = np.array([r for r in rows if all(math.isfinite(v) for v in r)])
            if len(scored) == 0:
                continue
            truth, mean_, lo_, hi_, last = scored.T
            errors.append(
                HorizonError(
                    metric,
                    int(h),
                    len(scored),
                    float(np.mean(np.abs(truth - mean_))),
                    float(np.mean(np.abs(truth - last))),
                    float(np.mean((lo_ <= truth) & (truth <= hi_))),
                )
            )
    return errors
