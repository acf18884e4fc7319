"""The stream's drift watch: when the error of enough entities changes for good, the model
has drifted (reported once); a few noisy entities, or a stable fleet, never say so."""

from __future__ import annotations

import numpy as np

from models.drift import ErrorDriftWatch, PageHinkley


def test_a_shifted_entity_is_reported_once_and_a_stable_fleet_never() -> None:
    rng = np.random.default_rng(4)
    watch = ErrorDriftWatch(PageHinkley(warmup=20))
    verdicts = []
    for i in range(400):
        for e in range(10):
            shift = 3.0 if e >= 7 and i >= 300 else 0.0  # 3 of 10 entities change
            watch.observe(f"host-{e}", 1.0 + shift + 0.2 * rng.normal())
        if i % 50 == 49:
            verdicts.append(watch.assess())
    assert [v.retrain_recommended for v in verdicts] == [False] * 6 + [True, False]
    assert "3 series" in verdicts[6].reasons[0]
    assert 1.0 < watch.mean_error < 4.0


def test_non_finite_errors_are_ignored() -> None:
    watch = ErrorDriftWatch()
    assert watch.observe("a", float("nan")) is False
    assert watch.assess().score == 0.0
