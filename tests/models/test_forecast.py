"""Behaviour of the seasonal forecaster, on seeded synthetic series built here."""

from __future__ import annotations

import numpy as np
import pytest

from models import forecast
from models.base import FloatArray, Forecaster, StateArray, as_float64
from models.forecast import SeasonalForecaster

STEP_MS = 300_000
DAY = 288
MIDNIGHT_MS = 1_699_920_000_000
"""2023-11-14 00:00 UTC: series start at midnight so a planted phase is easy to read."""


def _times(n: int) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    return MIDNIGHT_MS + np.arange(n, dtype=np.int64) * STEP_MS


def _daily(n: int, peak_hour: float) -> FloatArray:
    """A unit daily sine peaking at ``peak_hour`` UTC."""
    hours = np.arange(n) * STEP_MS / 3_600_000.0
    cycle: FloatArray = np.cos(2 * np.pi * (hours - peak_hour) / 24.0)
    return cycle


def _learn(model: SeasonalForecaster, values: FloatArray) -> tuple[StateArray, int]:
    """Learn a ``(n_series, n_points)`` block point by point; the state and the last time."""
    state = model.init_state(values.shape[0])
    times = _times(values.shape[1])
    for i in range(values.shape[1]):
        model.learn(state, values[:, i], int(times[i]))
    return state, int(times[-1])


def test_implements_the_forecaster_protocol() -> None:
    model = SeasonalForecaster()
    assert isinstance(model, Forecaster)
    assert model.state_size <= 2048
    assert as_float64(model.init_state(3)).shape == (3, model.state_size)


def test_planted_trend_keeps_rising() -> None:
    rng = np.random.default_rng(1)
    n = 2 * DAY
    values = (10.0 + 0.05 * np.arange(n) + rng.normal(0, 0.2, n))[None, :]
    model = SeasonalForecaster()
    state, t_ms = _learn(model, values)
    mean, _, _ = model.forecast(state, t_ms, np.array([1, 6, 12, 24, 48]))
    assert np.all(np.diff(mean[0]) > 0), mean
    assert mean[0, -1] - values[0, -12:].mean() > 0.5 * 0.05 * 48, mean


def test_daily_cycle_is_forecast_in_phase_a_day_ahead() -> None:
    rng = np.random.default_rng(2)
    n = 6 * DAY
    truth = 50.0 + 20.0 * _daily(n + DAY, peak_hour=6.0)
    values = (truth[:n] + rng.normal(0, 2.0, n))[None, :]
    model = SeasonalForecaster()
    state, t_ms = _learn(model, values)
    mean, _, _ = model.forecast(state, t_ms, np.arange(1, DAY + 1))
    ahead = truth[n:]
    peak_hour = np.argmax(mean[0]) * STEP_MS / 3_600_000.0
    assert abs(peak_hour - 6.0) <= 1.0, peak_hour
    assert np.corrcoef(mean[0], ahead)[0, 1] > 0.95
    assert np.mean(np.abs(mean[0] - ahead)) < 3.0


def test_intervals_cover_most_held_out_truth_on_a_noisy_series() -> None:
    rng = np.random.default_rng(3)
    n_train, n_test = 7 * DAY, 2 * DAY
    n = n_train + n_test
    values = 40.0 + 10.0 * _daily(n, peak_hour=15.0) + rng.normal(0, 3.0, n)
    times = _times(n)
    model = SeasonalForecaster(coverage=0.9)
    state = model.init_state(1)
    horizons = np.arange(1, 13)
    inside = []
    for i in range(n):
        if i >= n_train and (i - n_train) % 12 == 0 and i + 12 <= n:
            _, lower, upper = model.forecast(state, int(times[i - 1]), horizons)
            truth = values[i : i + 12]
            inside.append((lower[0] <= truth) & (truth <= upper[0]))
        model.learn(state, values[i : i + 1], int(times[i]))
    coverage = float(np.mean(inside))
    assert 0.8 <= coverage <= 0.97, coverage


def test_a_new_series_interval_is_unknown_then_opens_at_every_horizon() -> None:
    """Before the first score the interval is NaN; a day in, the day-ahead bucket is still
    unscored and its interval is the widest scored bucket's, widened, never zero-wide."""
    rng = np.random.default_rng(10)
    model = SeasonalForecaster()
    horizons = np.array([1, 12, 288, 2000])
    state, t_ms = _learn(model, rng.normal(50, 3, (1, 1)))
    _, lower, upper = model.forecast(state, t_ms, horizons)
    assert np.all(np.isnan(lower)) and np.all(np.isnan(upper))
    state, t_ms = _learn(model, rng.normal(50, 3, (1, DAY // 2)))
    mean, lower, upper = model.forecast(state, t_ms, horizons)
    width = (upper - lower)[0]
    assert np.all(lower <= mean) and np.all(mean <= upper)
    assert np.all(width > 0) and np.all(np.diff(width) >= 0), width
    assert width[2] == width[3], "horizons past the last bucket share its interval"


def test_the_interval_covers_from_its_first_tens_of_scores() -> None:
    """The trackers' warm-up: over a new noisy series' first 100 one-step forecasts, a 90%
    interval holds most truths (with the steady step alone it held about a third)."""
    rng = np.random.default_rng(11)
    values = 40.0 + rng.normal(0, 3.0, 102)
    times = _times(values.size)
    model = SeasonalForecaster(coverage=0.9)
    state = model.init_state(1)
    inside = []
    for i, value in enumerate(values):
        if i >= 2:
            _, lower, upper = model.forecast(state, int(times[i - 1]), np.array([1]))
            inside.append(bool(lower[0, 0] <= value <= upper[0, 0]))
        model.learn(state, values[i : i + 1], int(times[i]))
    assert np.mean(inside) >= 0.75, np.mean(inside)
    steady, _ = _learn(SeasonalForecaster(quantile_warmup=0.0), values[None, :])
    warmed, t_ms = _learn(model, values[None, :])
    widths = [
        np.ptp(np.stack(m.forecast(s, t_ms, np.array([1]))[1:]))
        for m, s in ((SeasonalForecaster(quantile_warmup=0.0), steady), (model, warmed))
    ]
    assert widths[0] < widths[1], widths


def test_many_series_at_once_equal_each_series_alone() -> None:
    rng = np.random.default_rng(4)
    n = 3 * DAY
    values = np.stack(
        [
            20.0 + 5.0 * _daily(n, 3.0) + rng.normal(0, 1, n),
            0.1 + rng.exponential(0.05, n),
            np.full(n, 7.0),
            100.0 + 0.01 * np.arange(n) + rng.normal(0, 3, n),
        ]
    )
    values[1, rng.choice(n, 50, replace=False)] = np.nan
    values[3, :40] = np.nan
    model = SeasonalForecaster()
    horizons = np.array([1, 5, 12, 100, 288, 500])
    together, t_ms = _learn(model, values)
    batch = model.forecast(together, t_ms, horizons)
    for row in range(values.shape[0]):
        alone, _ = _learn(model, values[row : row + 1])
        np.testing.assert_array_equal(as_float64(alone)[0], as_float64(together)[row])
        for out_batch, out_alone in zip(batch, model.forecast(alone, t_ms, horizons), strict=True):
            np.testing.assert_allclose(out_alone[0], out_batch[row], rtol=1e-12)


def test_a_batch_past_a_chunk_equals_one_in_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(50, 5, (7, DAY + 20))
    values[2, ::7] = np.nan
    horizons = np.array([1, 12, 288])
    model = SeasonalForecaster()
    whole, t_ms = _learn(model, values)
    rows = np.array([6, 0, 3, 5])
    expected = model.forecast(whole[rows], t_ms, horizons)
    monkeypatch.setattr(forecast, "CHUNK", 3)  # 7 series: two chunks and a part
    chunked, _ = _learn(model, values)
    np.testing.assert_array_equal(as_float64(chunked), as_float64(whole))
    for got, want in zip(model.forecast(chunked, t_ms, horizons, rows), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_seeded_runs_are_deterministic() -> None:
    def run() -> tuple[FloatArray, ...]:
        rng = np.random.default_rng(5)
        values = rng.normal(10, 2, (2, 2 * DAY))
        model = SeasonalForecaster()
        state, t_ms = _learn(model, values)
        return (as_float64(state), *model.forecast(state, t_ms, np.arange(1, 289)))

    for first, second in zip(run(), run(), strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "series",
    [
        np.full(DAY, 42.0),
        np.zeros(DAY),
        np.full(DAY, 1e300),
        1e12 * np.random.default_rng(6).random(DAY),
        1e300 * np.random.default_rng(7).random(DAY),
        np.where(np.arange(DAY) % 3 == 0, np.nan, np.arange(DAY, dtype=np.float64)),
    ],
    ids=["constant", "zeros", "huge-constant", "large-noise", "huge-noise", "with-nan"],
)
def test_awkward_inputs_give_finite_forecasts(series: FloatArray) -> None:
    model = SeasonalForecaster()
    state, t_ms = _learn(model, series[None, :])
    for out in model.forecast(state, t_ms, np.array([1, 12, 288, 2000])):
        assert np.all(np.isfinite(out)), out


def test_constant_series_forecasts_the_constant_with_a_tight_interval() -> None:
    model = SeasonalForecaster()
    state, t_ms = _learn(model, np.full((1, DAY), 42.0))
    mean, lower, upper = model.forecast(state, t_ms, np.array([1, 288]))
    np.testing.assert_allclose(mean, 42.0)
    np.testing.assert_allclose(lower, 42.0)
    np.testing.assert_allclose(upper, 42.0)


def test_nan_is_skipped_without_touching_the_state() -> None:
    model = SeasonalForecaster()
    state, t_ms = _learn(model, np.random.default_rng(8).normal(5, 1, (2, 100)))
    before = as_float64(state)
    model.learn(state, np.array([np.nan, np.nan]), t_ms + STEP_MS)
    np.testing.assert_array_equal(as_float64(state), before)


def test_state_stays_bounded_on_a_long_stream() -> None:
    model = SeasonalForecaster()
    state, _ = _learn(model, np.random.default_rng(9).normal(5, 1, (1, 3 * DAY)))
    assert as_float64(state).shape == (1, model.state_size)
    assert state.nbytes <= 7 * 1024, "float32 profiles and rings: 6.5 KB a series"


def test_an_empty_series_forecasts_nan_and_bad_horizons_are_refused() -> None:
    model = SeasonalForecaster()
    mean, _, _ = model.forecast(model.init_state(1), MIDNIGHT_MS, np.array([1, 2]))
    assert np.all(np.isnan(mean))
    with pytest.raises(ValueError, match="horizons"):
        model.forecast(model.init_state(1), MIDNIGHT_MS, np.array([0, 1]))


def test_bad_settings_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="-5"):
        SeasonalForecaster(step_s=-5)
    with pytest.raises(ValueError, match="1000"):
        SeasonalForecaster(short_window=1000)
    with pytest.raises(ValueError, match=r"1\.5"):
        SeasonalForecaster(coverage=1.5)
    with pytest.raises(ValueError, match="-1"):
        SeasonalForecaster(quantile_warmup=-1)
