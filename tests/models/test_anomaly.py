"""Behaviour of the streaming anomaly detector, on seeded synthetic series."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from models.anomaly import StreamingAnomalyDetector
from models.base import AnomalyDetector, FloatArray, as_float64, score_series

STEP_MS = 60_000


def _noisy(n: int, seed: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    series: FloatArray = 10.0 + np.sin(2 * np.pi * t / 50.0) + 0.2 * rng.standard_normal(n)
    return series


def _times(n: int) -> FloatArray:
    return np.arange(n, dtype=np.float64) * STEP_MS


def test_implements_the_protocol_with_bounded_state() -> None:
    detector = StreamingAnomalyDetector()
    assert isinstance(detector, AnomalyDetector)
    assert detector.state_size <= 2048
    assert as_float64(detector.init_state(3)).shape == (3, detector.state_size)
    assert detector.init_state(1).nbytes <= 6 * 1024, "float32 profiles and table: 5.5 KB"


def test_planted_spike_scores_above_its_neighbourhood() -> None:
    values = _noisy(1500, seed=1)
    values[1200] += 8.0
    scores = score_series(StreamingAnomalyDetector(), values, _times(len(values)))
    neighbourhood = np.r_[scores[1100:1195], scores[1205:1300]]
    assert scores[1200] > 0.9
    assert scores[1200] > neighbourhood.max()


def test_planted_level_shift_is_detected_soon_after_it_starts() -> None:
    values = _noisy(1500, seed=2)
    values[1200:] += 5.0
    scores = score_series(StreamingAnomalyDetector(), values, _times(len(values)))
    assert scores[1200:1210].max() > 0.9
    assert scores[1200:1210].max() > scores[1000:1195].max()


def _daily_pulse(
    days: int, missing_day: int, seed: int
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Five-minute steps with a daily four-hour pulse, skipped on ``missing_day``; also returns
    the rows where the pulse should have been."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 288)
    phase = t % 288
    pulse = (phase >= 120) & (phase < 168)
    series: FloatArray = 10.0 + 10.0 * pulse + 0.3 * rng.standard_normal(len(t))
    gone = pulse & (t // 288 == missing_day)
    series[gone] -= 10.0
    return series, np.flatnonzero(gone)


def test_missing_daily_peak_is_detected_though_its_values_are_ordinary() -> None:
    detector = StreamingAnomalyDetector()
    values, rows = _daily_pulse(14, missing_day=12, seed=8)
    scores = score_series(detector, values, np.arange(len(values)) * 300_000)
    assert (values[rows] < values[: rows[0]].max()).all()
    assert scores[rows[0] : rows[0] + 24].max() >= detector.alert_level
    assert scores[rows].max() > 2.0 * scores[8 * 288 : 12 * 288].max()


def test_an_alert_soon_after_another_needs_stronger_evidence_for_a_while() -> None:
    values = _noisy(2200, seed=5)
    values[[1200, 1350, 1900]] += [8.0, 9.0, 10.0]
    rearmed = score_series(StreamingAnomalyDetector(), values, _times(len(values)))
    plain = score_series(StreamingAnomalyDetector(rearm_steps=0), values, _times(len(values)))
    assert rearmed[1200] == plain[1200] == 1.0
    assert (rearmed[1201:1301] == 0.0).all() and (plain[1201:1301] == 0.0).all()
    # Re-arming began 101 points after the alert with the full 0.1, and has faded for 49.
    assert plain[1350] == 1.0
    assert rearmed[1350] == pytest.approx(1.0 - 0.1 * (400 - 49) / 400)
    assert rearmed[1900] == plain[1900] == 1.0


def test_per_series_times_give_the_same_scores_as_each_series_alone() -> None:
    detector = StreamingAnomalyDetector()
    n = 600
    batch = np.stack([_noisy(n, seed) for seed in range(3)], axis=1)
    times = np.stack([np.arange(n) * STEP_MS + shift for shift in (0, 7_200_000, 13 * STEP_MS)], 1)
    state = detector.init_state(3)
    together = np.array([detector.score_learn(state, batch[i], times[i]) for i in range(n)])
    for k in range(3):
        alone = score_series(detector, batch[:, k], times[:, k])
        np.testing.assert_array_equal(together[:, k], alone)


def test_batch_of_series_equals_each_series_alone() -> None:
    detector = StreamingAnomalyDetector()
    batch = np.stack([_noisy(800, seed) for seed in range(4)], axis=1)
    batch[300, 1] = np.nan
    batch[500, 2] += 20.0
    state = detector.init_state(batch.shape[1])
    together = np.array(
        [detector.score_learn(state, batch[i], i * STEP_MS) for i in range(len(batch))]
    )
    for k in range(batch.shape[1]):
        alone = score_series(detector, batch[:, k], _times(len(batch)))
        np.testing.assert_array_equal(together[:, k], alone)


def test_seeded_runs_are_deterministic() -> None:
    values = _noisy(600, seed=3)
    first = score_series(StreamingAnomalyDetector(), values, _times(600))
    second = score_series(StreamingAnomalyDetector(), values, _times(600))
    np.testing.assert_array_equal(first, second)


def test_nan_scores_zero_and_leaves_state_unchanged() -> None:
    detector = StreamingAnomalyDetector()
    state = detector.init_state(2)
    for i, value in enumerate(_noisy(300, seed=4)):
        detector.score_learn(state, np.array([value, value + 1.0]), i * STEP_MS)
    before = state.copy()
    scores = detector.score_learn(state, np.array([np.nan, 3.0]), 300 * STEP_MS)
    assert scores[0] == 0.0
    np.testing.assert_array_equal(state[0], before[0])
    assert not np.array_equal(state[1], before[1])


def test_constant_huge_and_missing_inputs_give_finite_scores_in_unit_interval() -> None:
    n = 500
    cases = {
        "constant": np.full(n, 7.0),
        "zero": np.zeros(n),
        "huge": np.full(n, 1e300),
        "alternating_huge": np.where(np.arange(n) % 2 == 0, 1e300, -1e300),
        "missing": np.where(np.arange(n) % 3 == 0, np.nan, _noisy(n, seed=5)),
        "infinite": np.where(np.arange(n) % 7 == 0, np.inf, _noisy(n, seed=6)),
        "step_from_constant": np.r_[np.full(n // 2, 1.0), np.full(n - n // 2, 1e300)],
    }
    for name, values in cases.items():
        scores = score_series(StreamingAnomalyDetector(), values, _times(n))
        assert np.isfinite(scores).all(), name
        assert ((scores >= 0.0) & (scores <= 1.0)).all(), name


def test_state_stays_bounded_and_finite_on_a_long_stream() -> None:
    detector = StreamingAnomalyDetector()
    state = detector.init_state(1)
    rng = np.random.default_rng(7)
    for i, value in enumerate(rng.standard_cauchy(5000)):
        detector.score_learn(state, np.array([value]), i * STEP_MS)
    assert as_float64(state).shape == (1, detector.state_size)
    assert np.isfinite(as_float64(state)).all()


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"fast_alpha": 0.0}, "fast_alpha=0.0"),
        ({"warmup": 0}, "warmup=0"),
        ({"bins": 1}, "bins=1"),
        ({"season_alpha": 1.5}, "season_alpha=1.5"),
        ({"day_buckets": 0}, "day_buckets=0"),
        ({"season_min": 0}, "season_min=0"),
        ({"rearm_steps": -1}, "rearm_steps=-1"),
        ({"rearm_penalty": -0.1}, "rearm_penalty=-0.1"),
    ],
)
def test_bad_parameters_are_refused_with_the_value(
    parameters: dict[str, float], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        StreamingAnomalyDetector(**parameters)  # type: ignore[arg-type]


def test_a_calibrated_start_does_not_flag_noise_when_scoring_begins() -> None:
    rng = np.random.default_rng(11)
    values = 40.0 + rng.normal(size=(400, 50))
    first_scored = {}
    for calibrated in (True, False):
        detector = StreamingAnomalyDetector(
            warmup=120, novelty_margin=math.inf, quiet_steps=0, calibrated_start=calibrated
        )
        state = detector.init_state(50)
        for k in range(121):
            scores = detector.score_learn(state, values[k], 1_700_000_000_000 + k * 10_000)
        first_scored[calibrated] = scores
    assert float(first_scored[True].max()) < 0.3
    assert float(first_scored[False].mean()) > float(first_scored[True].mean()) + 0.2
