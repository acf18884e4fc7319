"""`foresight retrain` as a pod runs it, on the real stack: ready on /health once it follows
its alerts; a drift alert it reads shows on /health and /metrics; a record that is not an
alert is counted and skipped, and it stays ready. (The whole loop, from drift to promotion,
is tests/integration/test_retrain_loop.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.http.keys import OPERATE, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_producer import RecordProducer
from schemas.codec import Codec
from streams.settings import Settings
from streams.worker_process import RetrainProcess
from tests.integration.serving import ready

pytestmark = pytest.mark.integration


def _drift(content_hash: str, now_ms: int) -> dict[str, Any]:
    """A firing drift of the failure-risk model's version 1 that recommends retraining."""
    return {
        "dedup_key": f"model_drift:{content_hash}", "alert_id": f"{content_hash}@{now_ms}",
        "status": "FIRING", "severity": "WARNING", "rule": "model_drift", "entity": "*",
        "summary": "failure_risk v1: memory_percent:5m:mean drifted", "value": 0.41,
        "labels": {"model": "failure_risk", "version": "1", "retrain": "true",
                   "metric": "memory_percent:5m:mean", "content_hash": content_hash},
        "starts_at": now_ms, "ends_at": None, "event_time": now_ms,
    }  # fmt: skip


async def test_the_process_serves_health_and_metrics_and_skips_what_is_not_an_alert(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    """A record that is not an alert, then a drift of a model this registry (empty) does not
    serve: the drift is noted (it fires, nothing to retrain), both are counted by kind, and
    /health stays ready with both offsets read."""
    topic, content_hash = f"test.retrain.alerts.{unique}", f"hash-{unique}"
    await ensure_topics(stack_settings.kafka(), [TopicRequest(topic, 1, {})])
    key = KeysFile(tmp_path / "keys.json").create("retrain-test", [OPERATE])[1]
    process = RetrainProcess(
        stack_settings,
        topic,
        tmp_path / "retrain.log",
        FORESIGHT_TOPIC_PARTITIONS="1",
        FORESIGHT_KEYS_FILE=str(tmp_path / "keys.json"),
        FORESIGHT_API_KEY=key,
        MODEL_REGISTRY_URL=f"file://{tmp_path / 'registry'}",
    )
    process.start()
    try:
        health = await ready(process)
        assert health["consumed"] == {f"{topic}:0": -1} and health["drifting"] == {}
        assert health["model"] == "failure_risk" and health["topic"] == topic
        assert health["last_step"]["event"] == "following"

        producer = RecordProducer(stack_settings.kafka(), Codec())
        await producer.start()
        try:
            await producer.send_raw(topic, b"model_drift", b"not an alert")
            now_ms = int(time.time() * 1000)
            await producer.send(topic, "model_drift", "alert", _drift(content_hash, now_ms))
            await producer.flush()
        finally:
            await producer.stop()

        health = await ready(process, consumed=1)
        assert health["status"] == "ok" and health["crashed"] is None, health
        assert health["drifting"] == {
            content_hash: {"version": "1", "drifted": "memory_percent:5m:mean", "score": 0.41}
        }
        assert (health["production"], health["candidate"], health["training"]) == (None,) * 3
        assert health["last_step"]["event"] == "drift"
        assert process.metric('foresight_retrain_alerts_total{kind="drift"}') == 1
        assert process.metric('foresight_retrain_alerts_total{kind="undecodable"}') == 1
        assert process.metric('foresight_retrain_alerts_total{kind="other"}') == 0
        assert process.metric("foresight_retrain_last_step_timestamp_seconds") >= now_ms / 1000
        lines = process.log.read_text().splitlines()
        steps = [json.loads(line) for line in lines if line.startswith("{")]
        assert [(s["event"], s.get("version")) for s in steps] == [
            ("following", None),
            ("drift", "1"),
        ]
    finally:
        process.stop()
    assert process.process is not None and process.process.returncode == 0
