"""Delayed labels: logged steps resolve right, the online model learns, quality is counted."""

from __future__ import annotations

import numpy as np

from models.base import FloatArray
from models.failure_outcomes import TREND_FEATURES, OutcomeTracker

STEP = 10_000
HORIZON_S = 600.0


def _x(memory_percent: float, slope_per_s: float = 0.0) -> FloatArray:
    """The trend features of a memory signal at ``memory_percent``, rising ``slope_per_s``."""
    in_horizon = slope_per_s * HORIZON_S / 100
    x = np.array([memory_percent / 100, in_horizon, in_horizon, 0.9 if slope_per_s else 0.0])
    assert len(x) == len(TREND_FEATURES)
    return x


def test_a_failure_resolves_the_steps_of_its_horizon_as_positives() -> None:
    tracker = OutcomeTracker(HORIZON_S)
    for k in range(100):
        tracker.log("web-1", k * STEP, _x(50), {"local_trend@1": 0.0})
    # Steps older than the horizon resolved as negatives as the log advanced.
    assert tracker.resolved == 100 - 61
    positives = tracker.label("web-1", 99 * STEP)
    assert positives == 61  # every step within 600 s before the failure
    assert tracker.resolved == 100
    assert tracker.label("web-1", 200 * STEP) == 0  # nothing left to resolve


def test_the_online_model_learns_what_precedes_failures() -> None:
    tracker = OutcomeTracker(HORIZON_S)
    rng = np.random.default_rng(0)
    t = 0
    for _ in range(30):  # 30 episodes: calm, then a leak that ends in a failure
        for _ in range(120):
            tracker.log("web-1", t, _x(40 + rng.normal(), 0.0), {})
            t += STEP
        for k in range(60):
            tracker.log("web-1", t, _x(60 + k * 0.6, 0.06), {})
            t += STEP
        tracker.label("web-1", t)
    assert tracker.score(_x(90, 0.06)) > 0.8
    assert tracker.score(_x(40, 0.0)) < 0.2


def test_precision_recall_and_accuracy_per_model() -> None:
    tracker = OutcomeTracker(HORIZON_S)
    for k in range(200):
        eager = 0.9 if k % 2 == 0 else 0.0  # alarms every other step, failure or not
        late = 0.9 if k >= 190 else 0.0  # alarms only at the very end
        tracker.log("web-1", k * STEP, _x(50), {"eager@1": eager, "late@1": late})
    tracker.label("web-1", 199 * STEP)
    eager_quality, late_quality = tracker.quality["eager@1"], tracker.quality["late@1"]
    assert late_quality.precision == 1.0
    assert 0.1 < late_quality.recall < 0.3  # 10 of the 61 steps before the failure
    assert eager_quality.precision < 0.4
    assert 0.4 < eager_quality.recall < 0.6
    # 139 calm steps rightly not alarmed by the late model, 10 failures caught, 51 missed.
    assert 0.65 < late_quality.accuracy < 0.85
    assert 0.4 < eager_quality.accuracy < 0.6  # every other call wrong


def test_memory_stays_bounded() -> None:
    tracker = OutcomeTracker(HORIZON_S, capacity=50)
    for k in range(1000):
        tracker.log("web-1", k, _x(50), {})  # a millisecond apart: nothing ages out
    assert tracker.resolved == 950


def test_a_slow_steady_drift_is_not_taken_for_a_leak() -> None:
    """Hosts whose memory creeps up along a line that fits almost exactly (a real host's, a
    cache warming) stay at a low risk beside leaks that end in failures: the model reads how
    much of the capacity the trend would use within the horizon, not how well it fits."""
    tracker = OutcomeTracker(HORIZON_S)
    rng = np.random.default_rng(1)
    t = 0
    drift = np.array([0.55, 0.002, 0.002, 0.99])  # 55 % used, a tiny slope, a near-perfect fit
    for _ in range(30):
        for _ in range(120):
            tracker.log("web-1", t, _x(40 + rng.normal(), 0.0), {})
            tracker.log("cache-1", t, drift, {})
            t += STEP
        for k in range(60):
            tracker.log("web-1", t, _x(60 + k * 0.6, 0.06), {})
            tracker.log("cache-1", t, drift, {})
            t += STEP
        tracker.label("web-1", t)
    assert tracker.score(drift) < 0.1
    assert tracker.score(_x(90, 0.06)) > 0.8
    assert tracker.score(_x(40, 0.0)) < 0.1
