"""Code-quality forecasts and debt alerts, on series made here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from models.quality import (
    METRICS,
    CommitForecaster,
    QualityConfig,
    RepositoryQuality,
    quality_vector,
    walk_forward,
)

DAY_MS = 86_400_000


def _snapshot(i: int, **metrics: Any) -> dict[str, Any]:
    base = {"commit": f"c{i}", "event_time": i * DAY_MS, "mean_complexity": 3.0,
            "max_complexity": 9.0, "lines": 1000, "functions": 50, "test_count": 40,
            "test_lines": 800, "churn_added": 10, "churn_deleted": 2}  # fmt: skip
    return {**base, **metrics}


def _run(model: CommitForecaster, values: np.ndarray) -> np.ndarray:
    state = model.init_state(values.shape[1])
    for x in values:
        model.learn(state, x, 0)
    return state


def test_a_constant_is_forecast_as_itself_with_a_closed_interval() -> None:
    model = CommitForecaster()
    state = _run(model, np.full((50, 1), 7.0))
    mean, lower, upper = model.forecast(state, 0, np.array([1, 20, 100]))
    for made in (mean, lower, upper):
        np.testing.assert_allclose(made, np.full((1, 3), 7.0), rtol=1e-12)


def test_each_series_follows_the_candidate_that_has_done_best() -> None:
    rng = np.random.default_rng(3)
    steps = np.arange(120.0)
    trend = 100 + 2 * steps  # the drift wins
    noise = 50 + rng.normal(0, 10, 120)  # the median wins
    # A level that jumps now and then (the last value), its last jump 10 commits ago.
    walk = 100 + np.repeat(np.cumsum(rng.choice([-20.0, 20.0], 12)), 10)
    model = CommitForecaster()
    state = _run(model, np.stack([trend, noise, walk], axis=1))
    mean, _, _ = model.forecast(state, 0, np.array([5]))
    assert mean[0, 0] > trend[-1] + 5
    assert mean[1, 0] == pytest.approx(np.median(noise[-8:]), rel=1e-3)
    assert mean[2, 0] == pytest.approx(walk[-1], abs=0.5)


def test_the_interval_holds_a_random_walk_about_as_often_as_it_says() -> None:
    rng = np.random.default_rng(7)
    walk = np.cumsum(rng.normal(0, 1, 2000))
    model = CommitForecaster()
    state = model.init_state(1)
    held = []
    for i, x in enumerate(walk[:-5]):
        model.learn(state, np.array([x]), 0)
        if i >= 100:
            _, lower, upper = model.forecast(state, 0, np.array([5]))
            held.append(lower[0, 0] <= walk[i + 5] <= upper[0, 0])
    assert 0.8 <= np.mean(held) <= 0.97


def test_nothing_learned_forecasts_nan_and_missing_values_are_skipped() -> None:
    model = CommitForecaster()
    state = model.init_state(2)
    for x in (1.0, 2.0, 3.0):
        model.learn(state, np.array([x, math.nan]), 0)
    mean, lower, upper = model.forecast(state, 0, np.array([1]))
    assert math.isfinite(mean[0, 0]) and np.isnan([mean[1, 0], lower[1, 0], upper[1, 0]]).all()
    with pytest.raises(ValueError, match="horizons"):
        model.forecast(state, 0, np.array([0]))


def test_the_vector_derives_the_ratio_and_churn_and_leaves_the_unmeasured_nan() -> None:
    x = dict(zip(METRICS, quality_vector(_snapshot(0, coverage=None)), strict=True))
    assert x["test_to_code_ratio"] == 0.8 and x["churn"] == 12.0
    assert math.isnan(x["coverage"]) and math.isnan(x["lint_warnings"])
    assert math.isnan(quality_vector(_snapshot(0, lines=0))[METRICS.index("test_to_code_ratio")])


def test_forecasts_come_after_the_history_with_horizons_at_the_commit_rate() -> None:
    quality = RepositoryQuality("shop", QualityConfig(min_history=10))
    batches = [quality.observe(_snapshot(i, lines=1000 + i))[0] for i in range(12)]
    assert batches[:9] == [None] * 9
    batch = batches[-1]
    assert batch is not None
    assert (batch["entity"], batch["prediction_id"]) == ("repo:shop", "repo:shop@c11")
    assert set(batch["kinds"]) == {"FORECAST"} and batch["models"] == ["commit_forecaster"]
    assert "quality.coverage" not in batch["metrics"]  # never measured
    assert sorted(set(batch["horizons_s"])) == [86_400, 5 * 86_400, 20 * 86_400]
    lines = batch["metrics"].index("quality.lines")
    at = [k for k, m in enumerate(batch["metric_index"]) if m == lines]
    assert next(batch["values"][k] for k in at) == pytest.approx(1012.0, abs=1.0)
    assert all(batch["lowers"][k] <= batch["values"][k] <= batch["uppers"][k] for k in at)


def test_a_commit_sent_again_is_learned_once() -> None:
    quality = RepositoryQuality("shop", QualityConfig(min_history=2))
    assert quality.observe(_snapshot(0))[0] is None
    assert quality.observe(_snapshot(1))[0] is not None
    assert quality.observe(_snapshot(1)) == (None, [])
    assert quality.count == 2


def test_complexity_on_course_to_cross_the_limit_fires_once_then_resolves() -> None:
    quality = RepositoryQuality("shop", QualityConfig(max_complexity=6.0, min_history=5))
    fired: list[tuple[int, dict[str, Any]]] = []
    for i in range(40):
        complexity = 3.0 + 0.1 * min(i, 24) - 0.2 * max(0, i - 24)  # up, then refactored
        _, alerts = quality.observe(_snapshot(i, mean_complexity=complexity))
        fired += [(i, a) for a in alerts if a["rule"] == "complexity_trend"]
    (start, firing), (end, resolved) = fired
    assert start < 24 and firing["status"] == "FIRING" and firing["severity"] == "WARNING"
    assert "crosses 6 in about" in firing["summary"] and firing["entity"] == "repo:shop"
    assert firing["dedup_key"] == "complexity_trend/repo:shop" and firing["value"] > 0
    assert int(firing["labels"]["commits_to_cross"]) >= 1
    assert resolved["status"] == "RESOLVED" and resolved["alert_id"] == firing["alert_id"]
    assert end > 24


def test_complexity_already_over_the_limit_says_so() -> None:
    quality = RepositoryQuality("shop", QualityConfig(max_complexity=6.0, min_history=3))
    alerts = [a for i in range(3) for a in quality.observe(_snapshot(i, mean_complexity=7.5))[1]]
    assert [a["summary"] for a in alerts] == [
        "repo:shop: mean complexity is 7.5, at or above 6"
    ]  # fmt: skip
    assert alerts[0]["value"] == 0.0


def test_a_test_ratio_falling_for_the_run_fires_and_a_rise_resolves_it() -> None:
    quality = RepositoryQuality("shop", QualityConfig(falling_commits=4, min_history=1))
    events = []
    for i, lines in enumerate([1000, 1000, 1100, 1100, 1200, 1300, 1300, 1000]):
        for alert in quality.observe(_snapshot(i, lines=lines))[1]:
            events.append((i, alert["status"], alert["summary"]))
    assert events == [
        (4, "FIRING", "repo:shop: test-to-code ratio falling for 4 commits: 0.8 to 0.667 (-17%)"),
        (7, "RESOLVED", "repo:shop: -"),
    ]


def test_a_ratio_standing_still_is_not_falling() -> None:
    quality = RepositoryQuality("shop", QualityConfig(falling_commits=3, min_history=1))
    assert not any(quality.observe(_snapshot(i))[1] for i in range(10))


def test_walk_forward_scores_every_measured_metric_against_the_last_value() -> None:
    rng = np.random.default_rng(0)
    snapshots = [_snapshot(i, lines=1000 + 10 * i, churn_added=int(rng.integers(0, 100)))
                 for i in range(120)]  # fmt: skip
    errors = {(e.metric, e.horizon): e for e in walk_forward(snapshots, [1, 5])}
    assert {m for m, _ in errors} == set(METRICS) - {"lint_warnings", "coverage", "duplication"}
    lines = errors[("lines", 5)]
    assert lines.points == 120 - 20 - 5 + 1 and lines.naive_mae == 50.0
    assert lines.relative < 0.5  # a steady trend: the drift wins
    assert errors[("churn", 1)].relative < 1.0  # noise: the median beats the last value
    assert math.isnan(errors[("mean_complexity", 1)].relative)  # constant: nothing to beat


def test_a_config_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="falling_commits"):
        QualityConfig(falling_commits=1)
    with pytest.raises(ValueError, match="history"):
        CommitForecaster(history=20, drift_window=16)
