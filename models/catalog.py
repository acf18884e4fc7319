"""Every online model Foresight ships, by name: the conformance suite runs each of them.

A new model is added here and ``tests/models/test_conformance.py`` holds it to the contract
(batch equals loop, deterministic, bounded state, finite on constant, missing and huge input).
"""

from __future__ import annotations

from collections.abc import Callable

from models.anomaly import StreamingAnomalyDetector
from models.base import OnlineModel
from models.bottleneck import ExhaustionModel
from models.entity_anomaly import EntityAnomalyDetector
from models.failure_risk import LocalTrendRisk
from models.forecast import SeasonalForecaster
from models.quality import CommitForecaster

ONLINE_MODELS: dict[str, Callable[[], OnlineModel]] = {
    "streaming_anomaly": lambda: StreamingAnomalyDetector(warmup=20),
    "streaming_anomaly_calibrated": lambda: StreamingAnomalyDetector(
        warmup=20, quiet_steps=0, rearm_steps=0, calibrated_start=True
    ),
    "seasonal_forecaster": lambda: SeasonalForecaster(step_s=300.0),
    "exhaustion_model": ExhaustionModel,
    "local_trend_risk": LocalTrendRisk,
    "entity_anomaly": lambda: EntityAnomalyDetector(warmup=20),
    "commit_forecaster": CommitForecaster,
}
