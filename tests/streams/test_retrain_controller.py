"""The retrain controller's decisions that need no service: which alerts start a retrain,
and when it waits (another registry's drift, a candidate under evaluation, the cooldown); and
what its /health says.
Training, shadow scoring and the promotion test run on the real stack in
tests/integration/test_retrain_loop.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from connectors.audit import AuditTrail
from connectors.user_sql import SqlError
from models.drift import FeatureReference
from models.registry import ModelRegistry
from models.training import FailureRiskModel, TrainingConfig
from streams.retrain_controller import RetrainController, RetrainRunner
from streams.settings import Settings
from tests.streams.open_health import get_health

FEATURES = ["memory_percent:5m:mean"]
NOW_S = 1_900_000_000.0


def _registry(tmp_path: Path, versions: int, promote: bool = True) -> ModelRegistry:
    registry = ModelRegistry(f"file://{tmp_path}/models")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    model = FailureRiskModel.fit(
        x, (x[:, 0] > 1).astype(np.int8), FEATURES, 60.0, TrainingConfig(rounds=3)
    )
    report = {"params": {}, "rows": 200, "prevalence": 0.1, "cv": {"mean": {}}}
    for k in range(versions):
        registry.register_model(
            model, FeatureReference.fit(x), report, since_ms=0, until_ms=1,
            now_ms=int(NOW_S * 1000) - 3_600_000 + k * 600_000,
        )  # fmt: skip
    if promote:
        registry.promote("failure_risk", "1")
    return registry


def _controller(tmp_path: Path, cooldown_s: float = 600.0) -> RetrainController:
    settings = Settings(
        model_registry_url=f"file://{tmp_path}/models", retrain_cooldown_s=cooldown_s
    )
    audit = AuditTrail(settings.kafka(), "test.audit.unused", "retrain")
    return RetrainController(settings, audit, clock=lambda: NOW_S)


def _drift(content_hash: str, status: str = "FIRING", **labels: str) -> dict[str, Any]:
    return {
        "rule": "model_drift", "status": status, "alert_id": "a", "value": 1.6,
        "labels": {"model": "failure_risk", "version": "1", "retrain": "true",
                   "metric": FEATURES[0], "content_hash": content_hash, **labels},
    }  # fmt: skip


def test_other_alerts_and_other_models_drift_change_nothing(tmp_path: Path) -> None:
    _registry(tmp_path, 1)
    controller = _controller(tmp_path)
    assert controller.on_alert({"rule": "anomaly", "status": "FIRING", "labels": {}}) == []
    assert controller.on_alert(_drift("h", model="forecaster")) == []
    assert controller.on_alert(_drift("h", retrain="false")) == []
    assert controller.drifting == {}


def test_the_drift_of_a_version_not_in_production_here_is_noted_but_not_acted_on(
    tmp_path: Path,
) -> None:
    _registry(tmp_path, 1)
    controller = _controller(tmp_path, cooldown_s=0.0)
    steps = controller.on_alert(_drift("another-registrys-hash"))
    assert [s.event for s in steps] == ["drift"]
    assert controller.maybe_retrain() == []


def test_a_candidate_under_evaluation_holds_a_retrain(tmp_path: Path) -> None:
    registry = _registry(tmp_path, 2)
    production = registry.production("failure_risk")
    assert production is not None
    controller = _controller(tmp_path, cooldown_s=0.0)
    steps = controller.on_alert(_drift(production.content_hash))
    assert [s.event for s in steps] == ["drift", "waiting"]
    assert "candidate 2 is under evaluation" in steps[-1].detail["why"]
    assert controller.maybe_retrain() == []  # quiet when asked periodically


def test_the_cooldown_counts_from_the_newest_version(tmp_path: Path) -> None:
    registry = _registry(tmp_path, 1)
    production = registry.production("failure_risk")
    assert production is not None
    controller = _controller(tmp_path, cooldown_s=7200.0)  # v1 came an hour ago
    steps = controller.on_alert(_drift(production.content_hash))
    assert [s.event for s in steps] == ["drift", "cooldown"]
    assert "next retrain in 3600 s" in steps[-1].detail["why"]


def test_a_resolved_drift_is_forgotten(tmp_path: Path) -> None:
    registry = _registry(tmp_path, 1)
    production = registry.production("failure_risk")
    assert production is not None
    controller = _controller(tmp_path, cooldown_s=7200.0)
    controller.on_alert(_drift(production.content_hash))
    assert production.content_hash in controller.drifting
    steps = controller.on_alert(_drift(production.content_hash, status="RESOLVED"))
    assert [s.event for s in steps] == ["drift_resolved"]
    assert controller.drifting == {}


def test_without_a_candidate_there_is_nothing_to_check(tmp_path: Path) -> None:
    _registry(tmp_path, 1)
    assert _controller(tmp_path).check_candidate() is None


async def test_health_says_starting_then_what_it_watches_then_crashed(tmp_path: Path) -> None:
    """/health through the HTTP stack every server shares: 503 until it follows the alerts;
    200 with the model, its versions, the drifts firing, the last step and the offsets read;
    degraded (200) when ClickHouse does not answer; 503 once its loop failed."""
    production = _registry(tmp_path, 1).production("failure_risk")
    assert production is not None
    controller = _controller(tmp_path, cooldown_s=7200.0)
    settings = controller.settings.replace(keys_file=str(tmp_path / "keys.json"))
    runner = RetrainRunner(controller, lambda step: None, "test.alerts")
    code, body = await get_health(runner.health, settings)
    assert (code, body["status"], body["last_step"]) == (503, "starting", None)

    runner.progress.following = True
    runner.progress.consumed[TopicPartition("test.alerts", 0)] = 4
    for step in controller.on_alert(_drift(production.content_hash)):
        runner.progress.stepped(step, NOW_S)
    code, body = await get_health(runner.health, settings)
    assert (code, body["status"], body["crashed"]) == (200, "ok", None)
    assert (body["model"], body["production"], body["candidate"]) == ("failure_risk", "1", None)
    assert body["drifting"] == {
        production.content_hash: {"version": "1", "drifted": FEATURES[0], "score": 1.6}
    }
    assert body["last_step"] == {"event": "cooldown", "at": "2030-03-17T17:46:40Z"}
    assert body["consumed"] == {"test.alerts:0": 4} and body["training"] is None

    controller.clickhouse.failed(SqlError("Connection refused"))
    code, body = await get_health(runner.health, settings)
    assert (code, body["status"], set(body["down"])) == (200, "degraded", {"clickhouse"})

    runner.progress.crashed = "KafkaError: the fetch failed"
    code, body = await get_health(runner.health, settings)
    assert (code, body["status"], body["crashed"]) == (
        503,
        "crashed",
        "KafkaError: the fetch failed",
    )
    assert not (tmp_path / "keys.json").exists()  # open doors only: no keys file is made
