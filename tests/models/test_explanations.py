"""Every FAILURE_RISK and entity ANOMALY prediction of the stream carries what drove it, and
an alert's summary names those drivers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from models.entity import (
    BatchModel,
    EntityPipeline,
    ModelSet,
    PipelineConfig,
    step_many,
)
from models.explain import ENTITY_METRIC, describe, features_read
from models.failure_risk import LocalTrendRisk
from models.training import FailureRiskModel, TrainingConfig
from schemas.predictions import prediction_rows
from tests.models.test_entity_anomaly import NAMES, _host

T0 = 1_700_000_000_000
Record = dict[str, Any]


def _rows(batch: Record, kind: str, model: str) -> list[Record]:
    return [p for p in prediction_rows(batch) if p["kind"] == kind and p["model"] == model]


def test_the_entity_score_carries_its_top_metrics_and_the_alert_names_them() -> None:
    values = _host(2600, seed=2)
    values[2400:, 2] -= 25.0  # latency falls while load says it should not
    pipeline = EntityPipeline("web-1", ModelSet(PipelineConfig()))
    fired: list[Record] = []
    for k, v in enumerate(values):
        pipeline.add(T0 + k * 10_000, NAMES, v)
        _, batch, alerts = pipeline.step(T0 + k * 10_000)
        fired += [a for a in alerts if a["rule"] == "anomaly"]
    (entity,) = [p for p in prediction_rows(batch) if p["metric"] == ENTITY_METRIC]
    drivers = entity["drivers"]
    assert 1 <= len(drivers) <= 3
    assert drivers[0]["feature"] == "request_latency_ms"
    sizes = [abs(d["contribution"]) for d in drivers]
    assert sizes == sorted(sizes, reverse=True)
    (alert,) = fired
    named = alert["summary"].split(": ", 1)[1]
    assert named.startswith("request_latency_ms ") and named[len("request_latency_ms ")] in "+-"
    assert alert["labels"]["contributions"] == named


def test_the_entity_score_reads_no_window_feature_of_a_metric_of_its_own() -> None:
    # A quiet host's entity score carries no drivers (none contributes 0.01); the API then
    # names the features a prediction's model reads, and "*:1m:last" is no feature.
    assert features_read("ANOMALY", ENTITY_METRIC) == ()
    assert features_read("ANOMALY", "cpu_percent") == ("cpu_percent:1m:last",)


def _filling_disk(steps: int) -> tuple[Record, list[Record]]:
    """A disk filling by a point a minute with a little noise, stepped every 10 s."""
    rng = np.random.default_rng(0)
    pipeline = EntityPipeline("db-1", ModelSet(PipelineConfig()))
    alerts: list[Record] = []
    for k in range(steps):
        level = 60.0 + k / 6 + rng.normal(0, 0.05)
        pipeline.add(T0 + k * 10_000, ["disk_percent"], np.array([level]), np.array([100.0]))
        _, batch, changed = pipeline.step(T0 + k * 10_000)
        alerts += changed
    return batch, alerts


def test_the_local_trend_risk_is_its_level_and_slopes_adding_up_to_log_horizon_over_eta() -> None:
    batch, alerts = _filling_disk(150)
    (risk,) = _rows(batch, "FAILURE_RISK", LocalTrendRisk.name)
    assert risk["score"] > 0.7
    drivers = {d["feature"]: d["contribution"] for d in risk["drivers"]}
    assert set(drivers) == {"disk_percent:1m:last", "disk_percent:5m:slope",
                            "disk_percent:15m:slope"}  # fmt: skip
    assert drivers["disk_percent:1m:last"] > 0 > drivers["disk_percent:15m:slope"]
    horizon, eta = risk["horizon_s"], risk["value"]
    assert math.isclose(sum(drivers.values()), math.log(horizon / eta), rel_tol=1e-9)
    (alert,) = [a for a in alerts if a["rule"] == "failure_risk"]
    assert "disk_percent last over 1 m +" in alert["summary"]


def test_a_risk_of_nothing_has_no_drivers() -> None:
    batch, _ = _filling_disk(4)  # too few samples for a trend
    (risk,) = _rows(batch, "FAILURE_RISK", LocalTrendRisk.name)
    assert risk["score"] == 0.0 and risk["drivers"] == []


def _trained() -> FailureRiskModel:
    rng = np.random.default_rng(1)
    features = ["disk_percent:1m:last", "disk_percent:15m:slope", "disk_percent:5m:mean"]
    x: npt.NDArray[np.float64] = rng.normal(size=(600, 3)) * [10, 0.02, 10] + [70, 0.0, 70]
    y = ((x[:, 0] > 75) & (x[:, 1] > 0)).astype(np.int8)
    return FailureRiskModel.fit(x, y, features, 1800, TrainingConfig(rounds=30))


def test_a_trained_model_s_risk_carries_its_top_three_shap_values() -> None:
    model = _trained()
    served = BatchModel("failure_risk", "4", 1800, lambda vectors: model.explain(vectors, 3))
    pipeline = EntityPipeline("db-1", ModelSet(PipelineConfig()))
    for k in range(100):
        level = np.array([60.0 + k / 6])
        pipeline.add(T0 + k * 10_000, ["disk_percent"], level, np.array([100.0]))
    ((features, batch, _),) = step_many([pipeline], [T0 + 99 * 10_000], [served])
    (risk,) = _rows(batch, "FAILURE_RISK", "failure_risk")
    probability, drivers = model.explain([features], 3)
    assert risk["score"] == float(probability[0])
    assert len(drivers[0]) == 3
    assert [(d["feature"], d["contribution"]) for d in risk["drivers"]] == [
        (d.feature, d.contribution) for d in drivers[0]
    ]
    assert describe(risk["drivers"][0]["feature"]).startswith("disk_percent ")


def test_predictions_below_the_explaining_risk_carry_no_drivers() -> None:
    model = _trained()
    vectors = [
        {"names": ["disk_percent:1m:last", "disk_percent:15m:slope"], "values": [v, 0.05]}
        for v in (60.0, 90.0)
    ]
    risks, everything = model.explain(vectors, 3)
    assert risks[0] < 0.3 < risks[1] and all(everything)
    same, drivers = model.explain(vectors, 3, at_least=0.3)
    assert same.tolist() == risks.tolist()
    assert drivers[0] == [] and drivers[1] == everything[1]
