"""Code quality on the real stack: snapshots posted over HTTP reach the quality processor, and
its forecasts and a debt-trend alert come out on predictions, alerts and Redis; the processor
as a process of its own serves /health and /metrics, and dead-letters what it cannot take."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.http.auth import Gatekeeper
from connectors.http.keys import WRITE, KeysFile
from connectors.ingest_http import QUALITY_PATH, IngestConfig, IngestServer
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_producer import RecordProducer
from connectors.pii import Scrubber, shipped_rules
from connectors.redis_store import FeatureStore
from schemas.codec import Codec
from schemas.quality import SCHEMA
from streams import topics
from streams.quality import QualityRunner
from streams.settings import Settings
from streams.worker_process import QualityProcess
from tests.integration.kafka_io import TopicReader, produce
from tests.integration.serving import ready

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def _snapshots(repository: str, now_ms: int) -> list[dict[str, Any]]:
    """Thirty daily commits: complexity climbing 0.1 a commit towards 6, tests standing still."""
    return [
        {"repository": repository, "commit": f"{i:040x}", "event_time": now_ms - (30 - i) * DAY_MS,
         "files": 20, "lines": 2000 + 10 * i, "functions": 100, "mean_complexity": 3 + 0.1 * i,
         "max_complexity": 15, "test_lines": 1500, "test_count": 80}
        for i in range(30)
    ]  # fmt: skip


async def test_posted_snapshots_become_forecasts_and_a_debt_alert(
    stack_settings: Settings, unique: str
) -> None:
    settings = stack_settings.replace(
        worker_id=f"test-quality-{unique}", quality_max_complexity=6.0
    )
    topic, repository = f"test.quality.{unique}", f"it-{unique}"
    entity = f"repo:{repository}"
    kafka = settings.kafka()
    await ensure_topics(kafka, [TopicRequest(topic, 1, {})])
    runner = QualityRunner(settings, Codec(), topic)
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    with tempfile.TemporaryDirectory() as folder:
        keys = KeysFile(f"{folder}/keys.json")
        keys.create("ci", [WRITE], key=f"key-{unique}")
        config = IngestConfig(
            kafka, "unused", "unused", Gatekeeper(keys), ("entity",),
            Scrubber(shipped_rules(), secret=b"0" * 32), port=0, quality_topic=topic,
        )  # fmt: skip
        reader = TopicReader(kafka, topics.PREDICTIONS.name, topics.ALERTS.name)
        async with IngestServer(config) as server, reader, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}{QUALITY_PATH}"
            headers = {"Authorization": f"Bearer key-{unique}"}
            snapshots = _snapshots(repository, int(time.time() * 1000))
            async with http.post(url, json={**snapshots[0], "lines": -1}, headers=headers) as bad:
                assert bad.status == 400
                assert (await bad.json())["error"]["details"][0]["field"] == "lines"
            async with http.post(url, json=snapshots, headers=headers) as reply:
                assert reply.status == 202, await reply.text()
                assert await reply.json() == {"accepted": 30}

            def alerted(records: list[tuple[str, bytes | None, Any]]) -> bool:
                return any(
                    topic == topics.ALERTS.name and record["entity"] == entity
                    and record["rule"] == "complexity_trend"
                    for topic, _, record in records
                )  # fmt: skip

            records = await reader.until(alerted, timeout_s=120)
    ours = [(t, r) for t, _, r in records if r["entity"] == entity]
    (alert,) = [r for t, r in ours if t == topics.ALERTS.name and r["rule"] == "complexity_trend"]
    assert alert["status"] == "FIRING" and "crosses 6 in about" in alert["summary"]
    forecasts = [r for t, r in ours if t == topics.PREDICTIONS.name]
    assert forecasts and "quality.mean_complexity" in forecasts[-1]["metrics"]
    cache = FeatureStore(settings.feature_store_url, codec=Codec())
    try:
        deadline = time.monotonic() + 30
        cached = await cache.predictions([entity])
        while cached[0] is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            cached = await cache.predictions([entity])
    finally:
        await cache.close()
    assert cached[0] is not None and cached[0]["entity"] == entity
    stop.set()
    await asyncio.wait_for(running, 30)


def _at_least(
    count: Callable[[list[tuple[str, bytes | None, Any]]], list[str]],
    least: int,
    records: list[tuple[str, bytes | None, Any]],
) -> bool:
    return len(count(records)) >= least


async def test_a_restarted_processor_rebuilds_from_the_topic_and_produces_nothing_twice(
    stack_settings: Settings, unique: str
) -> None:
    """Snapshots produced to Kafka; the processor stopped after 15 and started again: the 16th
    commit is forecast (which needs the 15 before it, replayed), and nothing is sent twice."""
    settings = stack_settings.replace(worker_id=f"test-quality-{unique}")
    topic, repository = f"test.quality.{unique}", f"restart-{unique}"
    entity = f"repo:{repository}"
    kafka = settings.kafka()
    await ensure_topics(kafka, [TopicRequest(topic, 1, {})])
    snapshots = _snapshots(repository, int(time.time() * 1000))[:16]
    spec = replace(topics.QUALITY, name=topic)

    def forecasts(records: list[tuple[str, bytes | None, Any]]) -> list[str]:
        return [r["prediction_id"] for t, _, r in records
                if t == topics.PREDICTIONS.name and r["entity"] == entity]  # fmt: skip

    async with TopicReader(kafka, topics.PREDICTIONS.name) as reader:
        for part, seen in ((snapshots[:15], 6), (snapshots[15:], 7)):
            stop = asyncio.Event()
            running = asyncio.create_task(QualityRunner(settings, Codec(), topic).run(stop))
            await produce(kafka, spec, "repository", part)
            await reader.until(partial(_at_least, forecasts, seen), timeout_s=90)
            stop.set()
            await asyncio.wait_for(running, 30)
        # Anything sent twice would have come by now: the second run's first fetch is done.
        ids = forecasts(reader.records)
    assert ids == [f"{entity}@{s['commit']}" for s in snapshots[9:]]


async def test_the_process_serves_health_and_metrics_and_dead_letters_bad_records(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    """`foresight quality run` as a pod runs it: ready on /health once it holds its partition;
    twelve snapshots become three forecasts (from the tenth commit on), counted on /metrics; a
    record it cannot decode and a snapshot with negative lines, between them, are dead-lettered
    with their reasons, and /health stays ready, its partition consumed to the end."""
    topic, repository = f"test.quality.{unique}", f"proc-{unique}"
    entity = f"repo:{repository}"
    kafka = stack_settings.kafka()
    await ensure_topics(kafka, [TopicRequest(topic, 1, {})])
    process = QualityProcess(stack_settings, f"test-quality-{unique}", topic, tmp_path / "q.log")
    process.start()
    try:
        health = await ready(process)
        assert health["partitions"] == 1 and health["consumed"] == {f"{topic}:0": -1}
        snapshots = _snapshots(repository, int(time.time() * 1000))[:12]
        negative = {**snapshots[6], "commit": "f" * 40, "lines": -1}
        reader = TopicReader(kafka, topics.PREDICTIONS.name, topics.DEADLETTER.name)
        async with reader:
            producer = RecordProducer(kafka, Codec())
            await producer.start()
            try:
                for snapshot in snapshots[:6]:
                    await producer.send(topic, repository, SCHEMA, snapshot)
                await producer.send_raw(topic, repository.encode(), b"not a snapshot")
                await producer.send(topic, repository, SCHEMA, negative)
                for snapshot in snapshots[6:]:
                    await producer.send(topic, repository, SCHEMA, snapshot)
                await producer.flush()
            finally:
                await producer.stop()

            def ours(records: list[tuple[str, bytes | None, Any]]) -> list[tuple[str, Any]]:
                return [
                    (t, r) for t, _, r in records
                    if (t == topics.PREDICTIONS.name and r["entity"] == entity)
                    or (t == topics.DEADLETTER.name and r["topic"] == topic)
                ]  # fmt: skip

            def done(records: list[tuple[str, bytes | None, Any]]) -> bool:
                kinds = [t for t, _ in ours(records)]
                return kinds.count(topics.PREDICTIONS.name) >= 3 and (
                    kinds.count(topics.DEADLETTER.name) >= 2
                )

            found = ours(await reader.until(done, timeout_s=90))
        forecasts = [r for t, r in found if t == topics.PREDICTIONS.name]
        assert [f["prediction_id"] for f in forecasts] == [
            f"{entity}@{s['commit']}" for s in snapshots[9:]
        ]
        dead = {r["offset"]: r for t, r in found if t == topics.DEADLETTER.name}
        assert sorted(dead) == [6, 7]
        assert dead[6]["value"] == b"not a snapshot" and dead[6]["reason"]
        assert dead[7]["reason"].startswith("lines:"), dead[7]
        health = await ready(process, consumed=13)  # the last snapshot's offset
        assert health["crashed"] is None and health["repositories"] == 1
        assert health["consumed"] == {f"{topic}:0": 13} and health["lag"] == {f"{topic}:0": 0}
        assert process.metric(f'foresight_events_in_total{{topic="{topic}"}}') == 14
        out = f'foresight_events_out_total{{topic="{topics.PREDICTIONS.name}"}}'
        assert process.metric(out) == 3
        assert process.metric("foresight_dead_letters_total") == 2
    finally:
        process.stop()
