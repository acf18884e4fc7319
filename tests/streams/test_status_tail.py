"""``foresight tail`` and ``foresight status`` on the real stack, run as the operator runs them.

Each test writes to its own topics (``--topic`` and ``--alerts-topic`` point the commands at
them) and its own consumer group, so it neither sees nor disturbs anything else.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from connectors.kafka_admin import TopicRequest, ensure_topics
from schemas.codec import Codec
from schemas.predictions import as_rows
from streams.settings import Settings
from tests.schemas.samples import SAMPLES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streams.cli"]


def foresight(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion; fails the test if it outlives ``timeout``."""
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def prediction(entity: str, t_ms: int) -> dict[str, Any]:
    return dict(SAMPLES["prediction_batch"], entity=entity, prediction_id=f"{entity}@{t_ms}")


def alert(entity: str, status: str = "FIRING", rule: str = "anomaly") -> dict[str, Any]:
    return dict(
        SAMPLES["alert"],
        entity=entity,
        status=status,
        rule=rule,
        dedup_key=f"{rule}/{entity}",
        alert_id=f"{rule}/{entity}@{status}",
        ends_at=SAMPLES["alert"]["starts_at"] if status == "RESOLVED" else None,
    )


async def produce(
    settings: Settings, topic: str, schema: str, records: list[dict[str, Any]], partitions: int = 3
) -> None:
    """Create ``topic`` and produce ``records`` to it keyed by entity, acknowledged."""
    kafka = settings.kafka()
    await ensure_topics(kafka, [TopicRequest(topic, partitions, {})])
    codec = Codec()
    producer = kafka.producer()
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                topic, codec.encode(schema, record), key=record["entity"].encode()
            )
    finally:
        await producer.stop()


def by_entity(lines: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in lines.splitlines()]
    return sorted(records, key=lambda r: str(r["entity"]))


# -- tail --------------------------------------------------------------------------------------


def test_tail_predictions_prints_exactly_the_matching_records(
    stack_settings: Settings, unique: str
) -> None:
    topic = f"test.tail.predictions.{unique}"
    batches = [
        prediction(f"{name}-{unique}", 1000 + i)
        for i, name in enumerate(["web-1", "db-1", "web-2", "web-3"])
    ]
    asyncio.run(produce(stack_settings, topic, "prediction_batch", batches))
    done = foresight(
        "tail", "predictions", "--topic", topic, "--entity", "web-*",
        "--from-beginning", "--limit", "3", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # One object per prediction, as version 1 wrote them, whichever version wrote the batch.
    wanted = [as_rows(b) for b in batches if b["entity"].startswith("web-")]
    assert by_entity(done.stdout) == sorted(wanted, key=lambda r: str(r["entity"]))


def test_tail_alerts_reads_lines_and_json(stack_settings: Settings, unique: str) -> None:
    topic = f"test.tail.alerts.{unique}"
    alerts = [
        alert(f"api-1-{unique}"),
        alert(f"web-1-{unique}"),
        alert(f"api-1-{unique}", "RESOLVED"),
    ]
    asyncio.run(produce(stack_settings, topic, "alert", alerts))
    common = ["tail", "alerts", "--topic", topic, "--entity", f"api-*-{unique}", "--from-beginning"]
    as_json = foresight(*common, "--limit", "2", "--json")
    assert as_json.returncode == 0, as_json.stderr
    # One key, one partition: the two records of api-1 arrive in the order produced.
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [alerts[0], alerts[2]]
    as_text = foresight(*common, "--limit", "2")
    assert as_text.returncode == 0, as_text.stderr
    lines = as_text.stdout.splitlines()
    assert len(lines) == 2
    assert "FIRING" in lines[0] and "RESOLVED" in lines[1]
    assert all(f"api-1-{unique}" in line and "cpu anomalous" in line for line in lines)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_tail_json_stays_json_when_a_value_is_not_a_number(
    stack_settings: Settings, unique: str
) -> None:
    """jq and other strict readers refuse ``NaN``: a value that is not a number is null."""
    topic = f"test.tail.nan.{unique}"
    batch = dict(prediction(f"nan-{unique}", 1), values=[math.nan], scores=[math.inf])
    asyncio.run(produce(stack_settings, topic, "prediction_batch", [batch]))
    done = foresight(
        "tail", "predictions", "--topic", topic, "--from-beginning", "--limit", "1", "--json"
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout, parse_constant=_not_json)["predictions"]
    assert (row["value"], row["score"], row["lower"]) == (None, None, 10.0)


def test_tail_follows_new_records_and_stops_cleanly_on_ctrl_c(
    stack_settings: Settings, unique: str
) -> None:
    topic = f"test.tail.follow.{unique}"
    old, new = prediction(f"old-{unique}", 1), prediction(f"new-{unique}", 2)
    asyncio.run(produce(stack_settings, topic, "prediction_batch", [old]))
    tail = subprocess.Popen(
        [*CLI, "tail", "predictions", "--topic", topic],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert tail.stderr is not None and tail.stdout is not None
        ready = tail.stderr.readline()  # blocks until the follower has fixed its offsets
        assert "following" in ready and "from the end" in ready, ready
        asyncio.run(produce(stack_settings, topic, "prediction_batch", [new]))
        line = tail.stdout.readline()
        assert f"new-{unique}" in line and "FORECAST cpu_percent=13" in line, line
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=15) == 0
        rest = tail.stdout.read() + tail.stderr.read()
        assert "Traceback" not in rest and f"old-{unique}" not in rest, rest
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


def test_tail_of_a_missing_topic_says_so(stack_settings: Settings, unique: str) -> None:
    done = foresight("tail", "alerts", "--topic", f"test.nope.{unique}", "--limit", "1")
    assert done.returncode == 1
    assert f"test.nope.{unique}" in done.stderr and "does not exist" in done.stderr


# -- status ------------------------------------------------------------------------------------


async def _commit(settings: Settings, topic: str, group: str, offsets: dict[int, int]) -> None:
    consumer = settings.kafka().consumer(
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit(
            {TopicPartition(topic, p): OffsetAndMetadata(o, "") for p, o in offsets.items()}
        )
    finally:
        await consumer.stop()


def test_status_reports_services_lag_and_firing_alerts(
    stack_settings: Settings, unique: str
) -> None:
    topic, group = f"test.status.alerts.{unique}", f"test-status-{unique}"
    records = [
        alert(f"a-{unique}"),
        alert(f"b-{unique}", rule="failure_risk"),
        alert(f"a-{unique}", "RESOLVED"),
    ]
    asyncio.run(produce(stack_settings, topic, "alert", records, partitions=1))
    asyncio.run(_commit(stack_settings, topic, group, {0: 1}))
    started = time.monotonic()
    done = foresight("status", "--json", "--group", group, "--alerts-topic", topic)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["healthy"] is True
    assert {s["name"] for s in report["services"] if s["healthy"]} >= {"kafka", "redis"}
    processes = {p["name"] for p in report["processes"]}
    assert processes == {"worker", "sink", "gateway", "ingest", "quality", "retrain"}
    ours = [row for row in report["lag"] if row["group"] == group]
    assert ours == [{"group": group, "topic": topic, "lag": 2, "partitions": {"0": 2}}]
    assert {row["group"] for row in report["lag"]} >= {stack_settings.worker_id, group}
    firing = report["firing_alerts"]
    assert firing["source"] == f"replay of topic {topic}"
    assert firing["alerts"] == [records[1]]
    assert "worker_running" in report["throughput"]
    assert set(report["not_modelled"]) == {"worker", "ingest"}
    assert "available" in report["models"]
    assert time.monotonic() - started < 30
