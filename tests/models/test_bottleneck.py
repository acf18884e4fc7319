"""Behaviour of the time-to-exhaustion model and its predict_linear baseline, on seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from models.base import FloatArray, OnlineModel
from models.bottleneck import (
    ExhaustionModel,
    first_exhausted,
    linear_time_to_exhaustion,
    predict_linear,
)

STEP_MS = 300_000
DAY = 288
T0_MS = 1_699_920_000_000


def _times(n: int) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    return T0_MS + np.arange(n, dtype=np.int64) * STEP_MS


def _learn(model: ExhaustionModel, values: FloatArray) -> tuple[FloatArray, int]:
    """Learn a ``(n_series, n_points)`` block point by point; the state and the last time."""
    state = model.init_state(values.shape[0])
    times = _times(values.shape[1])
    for i in range(values.shape[1]):
        model.learn(state, values[:, i], int(times[i]))
    return state, int(times[-1])


def test_is_an_online_model_with_a_small_fixed_state() -> None:
    model = ExhaustionModel()
    assert isinstance(model, OnlineModel)
    state, _ = _learn(model, np.random.default_rng(0).normal(50, 1, (2, 3 * DAY)))
    assert state.shape == (2, model.state_size)
    assert model.state_size <= 128


def test_linear_fill_gives_the_true_time_with_an_interval_around_it() -> None:
    n = 2 * DAY
    hours = np.arange(n) / 12.0
    truth_s = (100.0 - (20.0 + 0.5 * hours[-1])) / 0.5 * 3600.0
    model = ExhaustionModel()
    errors, inside = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        values = (20.0 + 0.5 * hours + rng.normal(0, 1.0, n))[None, :]
        state, t_ms = _learn(model, values)
        seconds, lower, upper = model.time_to_exhaustion(state, t_ms, 100.0)
        errors.append(abs(seconds[0] - truth_s) / truth_s)
        inside.append(lower[0] <= truth_s <= upper[0])
        assert upper[0] - lower[0] < 0.2 * truth_s, (lower, upper)
    assert max(errors) < 0.05, errors
    assert np.mean(inside) >= 0.7, inside


def _seasonal_fill(seed: int, n: int) -> tuple[FloatArray, FloatArray, float]:
    """A noisy, spiky fill with a strong daily swing: values, the underlying line, slope/s."""
    rng = np.random.default_rng(seed)
    hours = np.arange(n) / 12.0
    slope_per_hour = rng.uniform(0.2, 0.6)
    line = 10.0 + slope_per_hour * hours
    swing = 15.0 * np.sin(2 * np.pi * hours / 24.0 + rng.uniform(0, 2 * np.pi))
    spikes = np.where(rng.random(n) < 0.02, rng.uniform(20, 40, n), 0.0)
    values: FloatArray = line + swing + spikes + rng.normal(0, 2.0, n)
    return values, line, slope_per_hour / 3600.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beats_predict_linear_on_a_noisy_seasonal_fill(seed: int) -> None:
    n = 5 * DAY
    values, line, slope = _seasonal_fill(seed, n)
    times = _times(n)
    model = ExhaustionModel()
    state = model.init_state(1)
    errors: dict[str, list[float]] = {"model": [], "1h": [], "6h": [], "24h": []}
    inside = []
    for i in range(n):
        model.learn(state, values[i : i + 1], int(times[i]))
        if i < 3 * DAY or i % 12:
            continue
        truth = float((100.0 - line[i]) / slope)
        if truth <= 0:
            break

        def relative_error(estimate: float, truth: float = truth) -> float:
            """Infinite or wild estimates count as ten times the truth."""
            return abs(min(estimate, 10 * truth) - truth) / truth

        seconds, lower, upper = model.time_to_exhaustion(state, int(times[i]), 100.0)
        errors["model"].append(relative_error(float(seconds[0])))
        inside.append(lower[0] <= truth <= upper[0])
        for name, window in (("1h", 12), ("6h", 72), ("24h", 288)):
            window_values = values[i - window + 1 : i + 1]
            linear = linear_time_to_exhaustion(
                times[i - window + 1 : i + 1], window_values, int(times[i]), 100.0
            )
            errors[name].append(relative_error(float(linear)))
    median = {name: float(np.median(e)) for name, e in errors.items()}
    assert median["model"] < 0.25, median
    for baseline in ("1h", "6h", "24h"):
        assert median["model"] < 0.5 * median[baseline], median
    assert np.mean(inside) >= 0.6


def test_flat_series_never_exhausts() -> None:
    rng = np.random.default_rng(3)
    n = 3 * DAY
    flat = np.stack([np.full(n, 40.0), 40.0 + rng.normal(0, 2.0, n)])
    model = ExhaustionModel()
    state, t_ms = _learn(model, flat)
    seconds, _, upper = model.time_to_exhaustion(state, t_ms, 100.0)
    assert np.all(np.isinf(seconds)), seconds
    assert np.all(np.isinf(upper)), upper


def test_falling_series_never_exhausts_and_a_full_one_is_exhausted_now() -> None:
    n = DAY
    values = np.stack([80.0 - 0.05 * np.arange(n), np.full(n, 100.0)])
    model = ExhaustionModel()
    state, t_ms = _learn(model, values)
    seconds, lower, upper = model.time_to_exhaustion(state, t_ms, np.array([100.0, 100.0]))
    assert np.isinf(seconds[0])
    assert seconds[1] == 0.0
    assert lower[1] == 0.0
    assert upper[1] == 0.0


def test_the_bottleneck_is_the_resource_that_fills_first() -> None:
    rng = np.random.default_rng(4)
    n = 2 * DAY
    hours = np.arange(n) / 12.0
    values = np.stack([40 + 0.5 * hours, 60 + 0.2 * hours, np.full(n, 30.0)])
    values += rng.normal(0, 1.0, values.shape)
    model = ExhaustionModel()
    state, t_ms = _learn(model, values)
    seconds, lower, upper = model.time_to_exhaustion(state, t_ms, 100.0)
    call = first_exhausted(["memory", "disk", "cpu"], seconds, lower, upper)
    assert call is not None
    assert call.resource == "memory"
    assert call.lower <= call.seconds <= call.upper
    inf = np.full(2, np.inf)
    assert first_exhausted(["a", "b"], inf, inf, inf) is None
    with pytest.raises(ValueError, match="3 resource names for 2"):
        first_exhausted(["a", "b", "c"], inf, inf, inf)


def test_many_series_at_once_equal_each_series_alone() -> None:
    rng = np.random.default_rng(5)
    n = 2 * DAY
    values = np.stack(
        [
            10 + 0.02 * np.arange(n) + rng.normal(0, 1, n),
            np.full(n, 55.0),
            50 + 10 * np.sin(np.arange(n) / 40.0) + rng.normal(0, 1, n),
        ]
    )
    values[0, rng.choice(n, 30, replace=False)] = np.nan
    model = ExhaustionModel()
    together, t_ms = _learn(model, values)
    batch = model.time_to_exhaustion(together, t_ms, 100.0)
    for row in range(values.shape[0]):
        alone, _ = _learn(model, values[row : row + 1])
        np.testing.assert_allclose(alone[0], together[row], rtol=1e-12)
        for out_alone, out_batch in zip(
            model.time_to_exhaustion(alone, t_ms, 100.0), batch, strict=True
        ):
            np.testing.assert_allclose(out_alone[0], out_batch[row], rtol=1e-12)


def test_seeded_runs_are_deterministic_and_nan_is_skipped() -> None:
    values = np.random.default_rng(6).normal(50, 5, (2, DAY))
    model = ExhaustionModel()
    first, t_ms = _learn(model, values)
    second, _ = _learn(model, values)
    np.testing.assert_array_equal(first, second)
    before = first.copy()
    model.learn(first, np.array([np.nan, np.nan]), t_ms + STEP_MS)
    np.testing.assert_array_equal(first, before)


@pytest.mark.parametrize("size", [1.0, 1e12, 1e300])
def test_huge_and_constant_inputs_give_no_nan(size: float) -> None:
    values = np.stack([np.full(DAY, size), size * (1 + 0.001 * np.arange(DAY))])
    model = ExhaustionModel()
    state, t_ms = _learn(model, values)
    level, _, slope, _ = model.trend(state, t_ms)
    assert np.all(np.isfinite(level))
    assert np.all(np.isfinite(slope))
    for out in model.time_to_exhaustion(state, t_ms, np.inf):
        assert not np.any(np.isnan(out)), out


def test_predict_linear_is_ordinary_least_squares_anchored_at_the_evaluation_time() -> None:
    rng = np.random.default_rng(7)
    times = _times(72)
    values = 5.0 + 0.001 * (times - times[0]) / 1000.0 + rng.normal(0, 0.5, 72)
    at_ms = int(times[-1])
    slope, intercept = np.polyfit((times - at_ms) / 1000.0, values, 1)
    np.testing.assert_allclose(
        predict_linear(times, values, at_ms, 3600.0), intercept + slope * 3600
    )
    expected = (100.0 - intercept) / slope
    np.testing.assert_allclose(linear_time_to_exhaustion(times, values, at_ms, 100.0), expected)
    falling = linear_time_to_exhaustion(times, values[::-1], at_ms, 100.0)
    assert np.isinf(falling)


def test_bad_arguments_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="-1"):
        ExhaustionModel(memory_s=-1)
    model = ExhaustionModel()
    with pytest.raises(ValueError, match=r"\(3,\)"):
        model.time_to_exhaustion(model.init_state(2), T0_MS, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="5 points per series but times_ms has 4"):
        predict_linear(_times(4), np.zeros(5), T0_MS, 60.0)


def test_an_uncertain_level_above_capacity_is_not_called_exhausted() -> None:
    """A few noisy samples of a resource at 20-60%: early on the fitted level can stray far
    above capacity with a huge standard error; that must not read as exhausted now."""
    model = ExhaustionModel()
    rng = np.random.default_rng(0)
    t0 = 1_700_000_000_000
    for _ in range(50):
        state = model.init_state(1)
        step = int(rng.choice([5_000, 10_000, 15_000]))
        base = rng.uniform(0.1, 0.6)
        for k in range(int(rng.integers(2, 30))):
            value = float(np.clip(base + rng.normal(0, 0.05) + k * rng.uniform(0, 0.01), 0, 1))
            model.learn(state, np.array([value]), t0 + k * step)
            seconds = model.time_to_exhaustion(state, t0 + k * step, 1.0)[0]
            assert seconds[0] > 0 or value >= 0.95, (k, value, model.trend(state, t0 + k * step))
    full = model.init_state(1)
    for k in range(60):  # and one truly at capacity still is
        model.learn(full, np.array([1.0]), t0 + k * 10_000)
    assert model.time_to_exhaustion(full, t0 + 59 * 10_000, 1.0)[0][0] == 0.0
