"""Training the batch failure-risk model: targets, temporal folds, a planted signal, compare."""

from __future__ import annotations

import doctest
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from models import training
from models.features import FeatureWindows, feature_set_hash
from models.training import (
    TrainingConfig,
    build_training_set,
    classification_metrics,
    compare_predictions,
    feature_table,
    temporal_folds,
    train_failure_risk,
)

Record = dict[str, Any]
MINUTE = 60_000


def synthetic_history(
    start_ms: int, hours: float, entities: int = 4, seed: int = 0, step_s: int = 60
) -> tuple[list[Record], list[Record], list[Record]]:
    """FeatureVectors (from the stream's own FeatureWindows), FAILURE labels and local-trend
    FAILURE_RISK predictions of hosts whose memory leaks now and then until it is full.

    A leak climbs from about 40% to 100% in about an hour; at 100% the host fails (a FAILURE
    label) and restarts at 40%. CPU is noise. So failures are predictable from the memory
    level and trend 30 minutes ahead, and from nothing else.
    """
    rng = np.random.default_rng(seed)
    features: list[Record] = []
    labels: list[Record] = []
    predictions: list[Record] = []
    steps = int(hours * 3600 / step_s)
    for e in range(entities):
        entity = f"host-{e}"
        windows = FeatureWindows(max_metrics=4)
        memory, leak = 40.0, 0.0
        for i in range(steps):
            t = start_ms + i * step_s * 1000
            if leak == 0.0 and rng.random() < step_s / (4 * 3600):
                leak = rng.uniform(0.8, 1.6) * step_s / 60  # percent per step
            memory += leak + rng.normal(0, 0.3)
            if memory >= 100.0:
                labels.append(
                    {"entity": entity, "kind": "FAILURE", "incident_type": "oom", "start_time": t,
                     "end_time": None, "metric": "memory_percent", "description": ""}
                )  # fmt: skip
                memory, leak = 40.0 + rng.normal(0, 1), 0.0
            cpu = 30 + 10 * rng.standard_normal()
            windows.add(t, ["memory_percent", "cpu_percent"], np.array([memory, cpu]))
            names, values = windows.features(t)
            features.append(
                {"entity": entity, "event_time": t, "names": list(names),
                 "values": values.tolist(), "feature_set": feature_set_hash()}
            )  # fmt: skip
            if leak > 0:
                predictions.append(
                    {"entity": entity, "ts": t, "score": float(np.clip((memory - 60) / 40, 0, 1))}
                )
    return features, labels, predictions


def test_targets_say_failure_within_the_horizon_of_the_same_entity() -> None:
    rows = [
        {"entity": entity, "event_time": t * MINUTE, "names": ["m:5m:mean", "m:1h:max"],
         "values": [float(t), 1.0], "feature_set": feature_set_hash()}
        for entity in ("a", "b") for t in range(60)
    ]  # fmt: skip
    rows.append(dict(rows[0], feature_set="another-definition"))
    rows.append(dict(rows[1], names=["m:5m:mean"]))  # one name, two values: malformed
    failure = [
        {"entity": "a", "kind": "FAILURE", "incident_type": "oom", "start_time": 30 * MINUTE}
    ]
    incident = [
        {"entity": "b", "kind": "INCIDENT", "incident_type": "x", "start_time": 30 * MINUTE}
    ]
    data = build_training_set(rows, failure + incident, horizon_s=600, label_until_ms=50 * MINUTE)
    rows_of = zip(data.entities, data.times_ms, data.target, strict=True)
    positive = {(e, int(t // MINUTE)) for e, t, y in rows_of if y}
    assert positive == {("a", t) for t in range(20, 30)}  # failure in (t, t + 10 min]
    assert data.times_ms.max() == 40 * MINUTE  # later rows' horizon is past the known labels
    assert data.dropped == {
        "other_feature_definition": 1,
        "horizon_past_labels": 38,
        "names_values_mismatch": 1,
    }
    assert data.features == ["m:5m:mean", "m:1h:max"]  # the feature definition's order
    assert np.all(np.diff(data.times_ms) >= 0)


def test_training_set_reads_the_sink_tables_with_timestamps() -> None:
    rows = [
        {"entity": "a", "event_time": t * MINUTE, "names": ["m:5m:mean"], "values": [1.0]}
        for t in range(10)
    ]
    table = feature_table(rows)
    table = table.set_column(1, "ts", table["ts"].cast(pa.timestamp("ms", tz="UTC")))
    labels = pa.table(
        {"entity": ["a"], "kind": ["FAILURE"], "ts": pa.array([5 * MINUTE], pa.timestamp("ms"))}
    )
    data = build_training_set(table, labels, horizon_s=120, label_until_ms=10 * MINUTE)
    assert data.target.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0]


def test_temporal_folds_never_train_on_the_future_or_near_the_test() -> None:
    rng = np.random.default_rng(3)
    times = rng.integers(0, 7 * 86_400_000, size=5000)
    gap = 1_800_000
    folds = temporal_folds(times, folds=4, gap_ms=gap)
    assert len(folds) == 4
    previous_train = np.zeros(0, dtype=np.int64)
    for fold in folds:
        assert times[fold.test].min() >= times[fold.train].max() + gap
        assert not np.intersect1d(fold.train, fold.test).size
        assert np.isin(previous_train, fold.train).all()  # expanding window
        previous_train = fold.train
    assert folds[-1].test_until_ms == times.max()


def test_too_many_folds_for_the_gap_is_refused() -> None:
    with pytest.raises(ValueError, match="no training rows"):
        temporal_folds(np.arange(10) * 1000, folds=4, gap_ms=5000)


def test_metrics_match_hand_computed_values() -> None:
    assert classification_metrics([0, 1, 0, 1], [0.5] * 4)["roc_auc"] == 0.5
    perfect = classification_metrics([0, 0, 1], [0.1, 0.2, 0.9], threshold=0.5)
    assert perfect == {
        "auc_pr": 1.0,
        "roc_auc": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "brier": pytest.approx((0.01 + 0.04 + 0.01) / 3),
    }
    none = classification_metrics([0, 0], [0.9, 0.1], threshold=0.5)
    assert none["roc_auc"] is None and none["auc_pr"] is None and none["recall"] is None


@pytest.fixture(scope="module")
def trained() -> tuple[Any, ...]:
    features, labels, predictions = synthetic_history(1_700_000_000_000, hours=48)
    baseline = pa.table(
        {
            "entity": [p["entity"] for p in predictions],
            "ts": [p["ts"] for p in predictions],
            "score": [p["score"] for p in predictions],
        }
    )
    data = build_training_set(features, labels, horizon_s=1800, baseline=baseline)
    model, reference, report = train_failure_risk(data, TrainingConfig(folds=4, rounds=100))
    return data, model, reference, report


def test_a_planted_signal_is_learned_and_beats_the_baselines(trained: tuple[Any, ...]) -> None:
    data, model, _, report = trained
    mean = report["cv"]["mean"]
    assert report["positives"] > 50
    assert mean["model"]["roc_auc"] > 0.9
    assert mean["model"]["auc_pr"] > 3 * report["prevalence"]
    assert mean["prevalence_baseline"]["roc_auc"] == 0.5
    assert mean["model"]["auc_pr"] > mean["prevalence_baseline"]["auc_pr"]
    assert "local_trend_baseline" in mean
    assert len(report["cv"]["folds"]) == 4
    for fold in report["cv"]["folds"]:
        assert fold["test_from"] > fold["train_until"]
    scores = model.score(
        [{"names": data.features, "values": row.tolist()} for row in data.matrix[:50]]
    )
    np.testing.assert_allclose(scores, model.score_matrix(data.matrix[:50]), rtol=1e-6)


def test_serving_aligns_feature_names_in_any_order(trained: tuple[Any, ...]) -> None:
    data, model, _, _ = trained
    row = data.matrix[100]
    shuffled = np.random.default_rng(0).permutation(len(data.features))
    vector = {
        "names": [data.features[j] for j in shuffled] + ["unknown:5m:mean"],
        "values": [*row[shuffled].tolist(), 5.0],
    }
    assert model.score([vector])[0] == pytest.approx(model.score_matrix(row[None, :])[0])


def test_search_tries_its_budget_on_the_temporal_folds_and_keeps_the_best() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    data = training.TrainingSet(
        x, (x[:, 0] + 0.5 * x[:, 1] > 1).astype(np.int8), np.arange(600) * 1000, ["h"] * 600,
        ["a:5m:mean", "b:5m:mean"], 1.0,
    )  # fmt: skip
    config = TrainingConfig(folds=2, rounds=5, search_trials=3)
    _, _, report = train_failure_risk(data, config)
    _, _, again = train_failure_risk(data, config)
    assert any(note.startswith("optuna: 3 trials") for note in report["notes"])
    searched = {"max_depth", "eta", "min_child_weight", "rounds"}
    assert searched <= set(report["params"])
    assert report["params"] == again["params"]  # seeded: the same search twice
    assert report["params"]["rounds"] != 5  # the search's value, not the config's


def test_compare_uses_only_steps_both_versions_scored_and_settled() -> None:
    predictions = pa.table(
        {
            "entity": ["a", "a", "a", "a", "a"],
            "ts": [0, 0, MINUTE, 2 * MINUTE, 10 * MINUTE],
            "model_version": ["1", "2", "1", "1", "2"],
            "score": [0.1, 0.9, 0.5, 0.5, 0.5],
        }
    )
    labels = pa.table({"entity": ["a"], "kind": ["FAILURE"], "ts": [30_000]})
    result = compare_predictions(predictions, labels, "1", "2", 60, now_ms=5 * MINUTE)
    assert result["steps"] == 1  # the step at 10 min is scored by both but not settled
    assert result["failures_within_horizon"] == 1
    assert result["challenger"]["brier"] < result["champion"]["brier"]


def test_module_examples_run() -> None:
    assert doctest.testmod(training).failed == 0
