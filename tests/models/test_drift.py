"""Drift detectors: planted shifts found fast, stationary series quiet, state bounded."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from models import drift
from models.alerts import AlertState
from models.drift import FeatureDrift, FeatureReference, PageHinkley, assess_drift, drift_alert
from schemas.codec import Codec


def test_a_planted_mean_shift_is_detected_within_a_few_points() -> None:
    rng = np.random.default_rng(11)
    detector = PageHinkley()
    n_series, shift_at = 50, 2000
    state = detector.init_state(n_series)
    scale = rng.uniform(0.01, 100.0, n_series)  # standardised: the unit does not matter
    series = rng.normal(5.0, 1.0, size=(3000, n_series)) * scale
    direction = np.where(np.arange(n_series) % 2 == 0, 1.0, -1.0)
    series[shift_at:] += 2.0 * scale * direction  # two standard deviations, up or down
    first = np.full(n_series, -1)
    for i, x in enumerate(series):
        hits = detector.update(state, x)
        first[hits & (first < 0)] = i
    delay = first - shift_at
    assert (delay >= 0).all(), "an alarm before the shift"
    assert delay.max() <= 25 and np.median(delay) <= 12


def test_a_stationary_series_raises_no_alarm_over_a_long_run() -> None:
    rng = np.random.default_rng(5)
    detector = PageHinkley()
    state = detector.init_state(5)
    alarms = 0
    for x in rng.normal(0.3, 2.0, size=(20_000, 5)):
        alarms += int(detector.update(state, x).sum())
    assert alarms == 0
    assert state.shape == (5, detector.state_size)


def test_missing_values_leave_the_series_untouched() -> None:
    detector = PageHinkley()
    state = detector.init_state(2)
    detector.update(state, np.array([1.0, 2.0]))
    before = state.copy()
    assert not detector.update(state, np.array([np.nan, np.nan])).any()
    np.testing.assert_array_equal(state, before)


def test_feature_drift_sees_shifts_not_noise_in_bounded_state() -> None:
    rng = np.random.default_rng(2)
    training = rng.normal(size=(20_000, 3))
    training[:, 2] = rng.exponential(size=20_000)
    monitor = FeatureDrift(FeatureReference.fit(training), window=500)
    state = monitor.init_state()
    for _ in range(20):
        monitor.update_many(state, np.column_stack(
            [rng.normal(size=500), rng.normal(size=500), rng.exponential(size=500)]
        ))  # fmt: skip
    psi, ks = monitor.distances(state)
    assert (psi < 0.1).all() and (ks < 0.1).all()
    assert state.shape == (3, 10) and state.sum(axis=1).max() <= 500 + 1e-6
    shifted = np.column_stack(
        [rng.normal(size=1500), rng.normal(0, 2.0, size=1500), rng.exponential(2.0, size=1500)]
    )
    monitor.update_many(state, shifted)
    psi, _ = monitor.distances(state)
    assert psi[0] < 0.1 and psi[1] > 0.25 and psi[2] > 0.25


def test_batched_updates_equal_single_updates() -> None:
    rng = np.random.default_rng(4)
    monitor = FeatureDrift(FeatureReference.fit(rng.normal(size=(1000, 2))), window=50)
    rows = rng.normal(size=(200, 2))
    rows[::7, 1] = np.nan
    one, many = monitor.init_state(), monitor.init_state()
    for row in rows:
        monitor.update(one, row)
    monitor.update_many(many, rows)
    np.testing.assert_allclose(one, many)


def test_too_few_values_are_not_judged() -> None:
    rng = np.random.default_rng(4)
    monitor = FeatureDrift(FeatureReference.fit(rng.normal(size=(1000, 1))), min_count=100)
    state = monitor.init_state()
    monitor.update_many(state, rng.normal(5.0, size=(50, 1)))
    assert np.isnan(monitor.distances(state)[0]).all()


def test_reference_round_trips_through_an_array() -> None:
    reference = FeatureReference.fit(np.random.default_rng(0).normal(size=(300, 4)), bins=5)
    again = FeatureReference.from_array(reference.to_array())
    np.testing.assert_array_equal(again.edges, reference.edges)
    np.testing.assert_array_equal(again.proportions, reference.proportions)
    with pytest.raises(ValueError, match="2 \\* bins - 1"):
        FeatureReference.from_array(np.zeros((4, 4)))


def test_drift_becomes_one_alert_with_a_retrain_flag() -> None:
    codec = Codec()
    state = AlertState()
    calm = assess_drift(np.zeros(4, bool), list("abcd"), np.array([0.01, 0.05]), ["x", "y"])
    drifted = assess_drift(np.zeros(4, bool), list("abcd"), np.array([0.01, 0.5]), ["x", "y"])
    assert not calm.retrain_recommended and drifted.retrain_recommended
    assert drifted.worst == "y" and drifted.reasons == ("feature y: PSI 0.50 >= 0.25",)
    t = 1_700_000_000_000
    assert drift_alert(calm, state, "failure_risk", "3", t) is None
    fired = drift_alert(drifted, state, "failure_risk", "3", t + 1)
    assert fired is not None and fired["status"] == "FIRING"
    assert fired["labels"]["retrain"] == "true" and fired["labels"]["version"] == "3"
    codec.encode("alert", fired)
    assert drift_alert(drifted, state, "failure_risk", "3", t + 2) is None  # one per episode
    resolved = [drift_alert(calm, state, "failure_risk", "3", t + 3 + i) for i in range(30)]
    assert [r["status"] for r in resolved if r] == ["RESOLVED"]
    with pytest.raises(ValueError, match="pair up"):
        assess_drift(np.zeros(2, bool), ["a"], np.zeros(1), ["x"])


def test_module_examples_run() -> None:
    assert doctest.testmod(drift).failed == 0
