"""The contract every online model in ``models.catalog`` keeps.

The suite is River's idea: one set of checks over every model, so a new model cannot forget
the contract. Whatever its verbs (score, forecast, time to exhaustion), a model must give
the same numbers for many series at once as for each alone, the same numbers on every run,
a state that does not grow, and finite outputs on constant, missing and huge input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from models.base import AnomalyDetector, FloatArray, Forecaster, OnlineModel, as_float64
from models.bottleneck import ExhaustionModel
from models.catalog import ONLINE_MODELS
from models.entity_anomaly import EntityAnomalyDetector
from models.failure_risk import LocalTrendRisk
from models.features import FeatureWindows, WindowArena

T0 = 1_700_000_000_000
STEP_MS = 300_000


class _Runner:
    """Drives a model over ``n`` series with its own verbs. A model that reads the entity's
    rolling windows (the local-trend failure risk) gets windows fed with the same points.
    An entity model sees each series as an entity of three metrics made from it."""

    def __init__(self, model: OnlineModel, n: int) -> None:
        self.model = model
        self.state = model.init_state(n)
        self.entity_state = np.zeros((0, 0))
        if isinstance(model, EntityAnomalyDetector):
            self.state = model.init_state(3 * n)
            self.entity_state = model.init_entity_state(n)
        self.names = [f"s{i}" for i in range(n)]
        self.arena = WindowArena()
        self.windows = FeatureWindows(n, self.arena)

    def step(self, x: FloatArray, t_ms: int) -> FloatArray:
        """One step; every output the model gives, as one row per series."""
        model, state = self.model, self.state
        if isinstance(model, EntityAnomalyDetector):
            metrics = np.stack([x, 0.5 * x + 10.0, -x], axis=1)
            starts = np.arange(len(x) + 1) * 3
            step = model.score_learn(state, self.entity_state, metrics.reshape(-1), starts)
            return np.concatenate([step.scores[:, None], step.contributions.reshape(-1, 3)], 1)
        if isinstance(model, AnomalyDetector):
            return model.score_learn(state, x, t_ms)[:, None]
        if isinstance(model, Forecaster):
            model.learn(state, x, t_ms)
            mean, lower, upper = model.forecast(state, t_ms, np.array([1, 12, 288]))
            return np.concatenate([mean, lower, upper], axis=1)
        if isinstance(model, ExhaustionModel):
            model.learn(state, x, t_ms)
            seconds: FloatArray = np.stack(model.time_to_exhaustion(state, t_ms, 100.0), axis=1)
            return seconds
        if isinstance(model, LocalTrendRisk):
            seen = np.isfinite(x)  # the worker never windows a missing value
            self.windows.add(t_ms, [n for n, s in zip(self.names, seen, strict=True) if s], x[seen])
            w = self.windows
            rows = np.array([w.index.get(n, -1) for n in self.names])
            known = w.grid(t_ms)
            grid = np.full((len(rows), *known.shape[1:]), np.nan)
            grid[rows >= 0] = known[rows[rows >= 0]]
            risk = model.assess(grid, np.full(len(rows), 100.0))
            return np.stack([risk.risk, risk.eta, risk.lower, risk.upper], axis=1)
        raise AssertionError(f"{type(model).__name__} speaks no verb the suite knows")

    def arrays(self) -> list[FloatArray]:
        """Everything the model keeps between steps."""
        return [as_float64(self.state), self.entity_state, *self.arena.states.parts.values()]


def _run(model: OnlineModel, values: npt.NDArray[np.float64]) -> FloatArray:
    runner = _Runner(model, values.shape[1])
    steps = [runner.step(values[k], T0 + k * STEP_MS) for k in range(len(values))]
    stacked: FloatArray = np.stack(steps)
    return stacked


def _series(steps: int = 600, n: int = 3, seed: int = 0) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    k = np.arange(steps)[:, None]
    daily = 10 * np.sin(2 * np.pi * k / 288)
    series: npt.NDArray[np.float64] = 50 + daily + 0.02 * k + rng.normal(0, 1, (steps, n))
    return series


MODELS = pytest.mark.parametrize("make", ONLINE_MODELS.values(), ids=list(ONLINE_MODELS))


@MODELS
def test_many_series_at_once_equal_each_alone(make: Callable[[], OnlineModel]) -> None:
    values = _series()
    together = _run(make(), values)
    for i in range(values.shape[1]):
        alone = _run(make(), values[:, i : i + 1])
        np.testing.assert_array_equal(together[:, i : i + 1], alone)


@MODELS
def test_seeded_runs_are_deterministic(make: Callable[[], OnlineModel]) -> None:
    np.testing.assert_array_equal(_run(make(), _series()), _run(make(), _series()))


@MODELS
def test_state_stays_bounded(make: Callable[[], OnlineModel]) -> None:
    model = make()
    assert model.state_size <= 2048, "at most 16 KB per series"
    runner = _Runner(model, 2)
    shapes = [a.shape for a in runner.arrays()]
    for k, x in enumerate(_series(3000, 2)):
        runner.step(x, T0 + k * STEP_MS)
    assert [a.shape for a in runner.arrays()] == shapes
    for state in runner.arrays():
        assert np.isfinite(state[~np.isnan(state)]).all()


@MODELS
@pytest.mark.parametrize(
    "values",
    [
        np.full((400, 2), 42.0),
        np.where(np.arange(400)[:, None] % 7 == 0, np.nan, _series(400, 2)),
        np.full((400, 2), 1e300),
        np.concatenate([_series(300, 2), np.full((100, 2), 1e300)]),
    ],
    ids=["constant", "missing", "huge", "jump-to-huge"],
)
def test_odd_input_gives_usable_outputs(
    make: Callable[[], OnlineModel], values: npt.NDArray[np.float64]
) -> None:
    model = make()
    out = _run(model, values)
    if isinstance(model, AnomalyDetector):
        assert np.isfinite(out).all()
        assert ((out >= 0) & (out <= 1)).all()
    elif isinstance(model, EntityAnomalyDetector):  # a score, and contributions summing to it
        assert np.isfinite(out).all()
        assert ((out[:, :, 0] >= 0) & (out[:, :, 0] <= 1)).all()
        np.testing.assert_allclose(out[:, :, 1:].sum(axis=2), out[:, :, 0], atol=1e-9)
    elif isinstance(model, Forecaster):
        assert np.isfinite(out[-1]).all(), "a forecaster that has learned must forecast"
    elif isinstance(model, LocalTrendRisk):  # a probability, and when: seconds or +inf
        assert ((out[:, :, 0] >= 0) & (out[:, :, 0] <= 1)).all()
        assert not np.isnan(out[:, :, 1:]).any()
        assert (out[:, :, 1:] >= 0).all()
    else:  # times to exhaustion: a number of seconds, or +inf when not heading there
        assert not np.isnan(out[-1]).any()
        assert (out[-1] >= 0).all()
