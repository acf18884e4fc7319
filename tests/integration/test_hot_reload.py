"""A running worker takes a promoted model from ``models.updates`` without a restart, and
scores the newest candidate in shadow beside it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.kafka_producer import RecordProducer
from models.registry import ModelRegistry
from models.training import FAILURE_RISK, TrainingConfig, TrainingSet, train_failure_risk
from schemas.predictions import prediction_rows
from streams import topics
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.kafka_io import TopicReader, produce

pytestmark = pytest.mark.integration

FEATURES = ["memory_percent:15m:slope", "memory_percent:5m:mean"]


def _register(registry: ModelRegistry, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 2))
    y = (x[:, 0] > 0.5).astype(np.int8)
    data = TrainingSet(x, y, np.arange(600) * 10_000, ["h"] * 600, FEATURES, 1800.0)
    model, reference, report = train_failure_risk(data, TrainingConfig(folds=2, rounds=10))
    return registry.register_model(model, reference, report, since_ms=0, until_ms=6_000_000)


async def _send(settings: Settings, updates: list[dict[str, Any]]) -> None:
    await produce(settings.kafka(), topics.MODEL_UPDATES, "model", updates)


async def _versions_scored(settings: Settings, entity: str) -> set[str]:
    """Produce a batch for ``entity`` and return the failure_risk versions in its prediction."""
    t = int(time.time() * 1000)
    producer = RecordProducer(settings.kafka())
    async with TopicReader(settings.kafka(), topics.PREDICTIONS.name) as reader:
        await producer.start()
        try:
            await producer.send(
                topics.METRICS.name,
                entity,
                "metric_batch",
                {
                    "entity": entity,
                    "event_time": t,
                    "labels": {},
                    "names": ["memory_percent"],
                    "values": [50.0],
                    "source": "test",
                },
            )
        finally:
            await producer.stop()
        seen = await reader.until(
            lambda rs: any(r["entity"] == entity and r["event_time"] == t for _, _, r in rs),
            timeout_s=60,
        )
    (batch,) = [r for _, _, r in seen if r["entity"] == entity and r["event_time"] == t]
    return {p["model_version"] for p in prediction_rows(batch) if p["model"] == FAILURE_RISK}


async def test_promotion_is_picked_up_and_a_candidate_runs_in_shadow(
    stack_settings: Settings, tmp_path: Path
) -> None:
    registry = ModelRegistry(f"file://{tmp_path / 'registry'}")
    run = uuid.uuid4().hex[:8]
    worker = WorkerProcess(
        stack_settings,
        f"test-reload-{run}",
        tmp_path / "worker.log",
        MODEL_REGISTRY_URL=f"file://{tmp_path / 'registry'}",
        FORESIGHT_STEP_S="0.001",
    ).start()
    try:
        await worker.ready()
        assert await _versions_scored(stack_settings, f"reload-{run}-a") == set()

        await _send(stack_settings, [_register(registry, 1), *registry.promote(FAILURE_RISK, "1")])
        deadline = time.monotonic() + 60
        scored: set[str] = set()
        while scored != {"1"}:
            assert time.monotonic() < deadline, f"v1 never served: {scored}"
            scored = await _versions_scored(stack_settings, f"reload-{run}-{len(scored)}b")

        await _send(stack_settings, [_register(registry, 2)])
        deadline = time.monotonic() + 60
        while scored != {"1", "2"}:
            assert time.monotonic() < deadline, f"v2 never scored in shadow: {scored}"
            scored = await _versions_scored(stack_settings, f"reload-{run}-{time.time_ns()}")
        assert worker.process is not None and worker.process.poll() is None, "no restart"
    finally:
        worker.stop()
