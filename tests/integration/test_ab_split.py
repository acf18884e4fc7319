"""An A/B split on the real stack: a worker serves two failure-risk versions at once, each
entity by the version its hash gives, counts each arm on ``/metrics``, and follows a change
of the split from ``models.updates`` without a restart."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka_producer import RecordProducer
from models.registry import ModelRegistry
from models.traffic import TrafficSplit, serving
from models.training import FAILURE_RISK
from schemas.predictions import prediction_rows
from streams import topics
from streams.access import local_url, open_local
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.kafka_io import TopicReader, produce
from tests.integration.test_hot_reload import _register

pytestmark = pytest.mark.integration


async def _served(settings: Settings, entities: list[str]) -> dict[str, set[str]]:
    """Produce a batch for each of ``entities`` and return, per entity, the failure_risk
    versions of its prediction (the batches of this step of the entity; other workers on the
    shared stack may predict about it too, without those versions)."""
    t = int(time.time() * 1000)
    producer = RecordProducer(settings.kafka())
    wanted = set(entities)
    async with TopicReader(settings.kafka(), topics.PREDICTIONS.name) as reader:
        await producer.start()
        try:
            for entity in entities:
                await producer.send(
                    topics.METRICS.name, entity, "metric_batch",
                    {"entity": entity, "event_time": t, "labels": {}, "names": ["memory_percent"],
                     "values": [50.0], "source": "test"},
                )  # fmt: skip
        finally:
            await producer.stop()

        def versions(records: list[tuple[str, bytes | None, Any]]) -> dict[str, set[str]]:
            out: dict[str, set[str]] = {}
            for _, _, batch in records:
                if batch["entity"] in wanted and batch["event_time"] == t:
                    found = {p["model_version"] for p in prediction_rows(batch)
                             if p["model"] == FAILURE_RISK}  # fmt: skip
                    if found:
                        out.setdefault(batch["entity"], set()).update(found)
            return out

        seen = await reader.until(lambda rs: set(versions(rs)) == wanted, timeout_s=90)
    return versions(seen)


def _arm_metrics(settings: Settings, worker: WorkerProcess) -> dict[tuple[str, str], float]:
    """The worker's per-version samples of the A/B metrics, by (metric name, version)."""
    with open_local(settings, local_url(settings, worker.port, "/metrics"), 30) as response:
        text = response.read().decode()
    return {
        (sample.name, sample.labels["version"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("foresight_model_")
        and sample.labels.get("model") == FAILURE_RISK
        and "version" in sample.labels
    }


async def test_two_versions_serve_their_arms_and_a_new_split_is_followed(
    stack_settings: Settings, tmp_path: Path
) -> None:
    registry = ModelRegistry(f"file://{tmp_path / 'registry'}")
    for seed in (1, 2):
        _register(registry, seed)
    registry.promote(FAILURE_RISK, "1")
    registry.set_split(FAILURE_RISK, TrafficSplit({"2": 50.0}))
    arms = registry.split(FAILURE_RISK).arms("1")
    run = uuid.uuid4().hex[:8]
    worker = WorkerProcess(
        stack_settings,
        f"test-ab-{run}",
        tmp_path / "worker.log",
        MODEL_REGISTRY_URL=f"file://{tmp_path / 'registry'}",
        FORESIGHT_STEP_S="0.001",
        FORESIGHT_SHADOW_CANDIDATES="false",
    ).start()
    try:
        await worker.ready()
        entities = [f"ab-{run}-{i:02d}" for i in range(24)]
        expected = {e: {serving(arms, e)} for e in entities}
        assert {v for arm in expected.values() for v in arm} == {"1", "2"}
        deadline = time.monotonic() + 90
        while (got := await _served(stack_settings, entities)) != expected:
            assert time.monotonic() < deadline, f"arms never served as split: {got}"
            entities = [f"{e}-again" for e in entities]  # new steps for new entities
            expected = {e: {serving(arms, e)} for e in entities}
        counted = _arm_metrics(stack_settings, worker)
        assert counted["foresight_model_traffic_share", "1"] == pytest.approx(0.5)
        assert counted["foresight_model_traffic_share", "2"] == pytest.approx(0.5)
        for version in ("1", "2"):
            assert counted["foresight_model_predictions_total", version] >= sum(
                arm == {version} for arm in expected.values()
            )

        await produce(
            stack_settings.kafka(), topics.MODEL_UPDATES, "model",
            registry.set_split(FAILURE_RISK, TrafficSplit({"2": 100.0})),
        )  # fmt: skip
        later = [f"ab-{run}-later-{i:02d}" for i in range(12)]
        deadline = time.monotonic() + 90
        while (got := await _served(stack_settings, later)) != {e: {"2"} for e in later}:
            assert time.monotonic() < deadline, f"the new split was never followed: {got}"
            later = [f"{e}-again" for e in later]
        assert _arm_metrics(stack_settings, worker)["foresight_model_traffic_share", "1"] == 0.0
        assert worker.process is not None and worker.process.poll() is None, "no restart"
    finally:
        worker.stop()
