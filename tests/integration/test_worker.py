"""The stream worker on the real stack: incidents alerted before failures, healthy entities
quiet, every kind of bad input dead-lettered, idle windows closing, and a crash survived."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.kafka_producer import RecordProducer
from models.entity import step_end_after, step_phase_ms
from models.features import vector_names
from schemas.codec import Codec
from streams import topics
from streams.commands.tail import topic_partitions
from streams.settings import Settings
from streams.worker_process import WorkerProcess, committed_offsets
from tests.integration.kafka_io import TopicReader, produce, until

pytestmark = pytest.mark.integration

STEP_MS = 10_000
MAX_METRICS = 16
MAX_RECORD_BYTES = 8_000  # a step of 16 long-named metrics is over it, a normal step far under


@pytest.fixture(scope="module")
async def worker(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = WorkerProcess(
        stack_settings,
        f"test-worker-{uuid.uuid4().hex[:8]}",
        log,
        FORESIGHT_IDLE_TIMEOUT_S="2",
        FORESIGHT_MAX_METRICS=str(MAX_METRICS),
        FORESIGHT_MAX_RECORD_BYTES=str(MAX_RECORD_BYTES),
    ).start()
    try:
        await process.ready()
        yield process
    finally:
        process.stop()


def _batch(entity: str, t_ms: int, values: dict[str, float]) -> dict[str, Any]:
    return {
        "entity": entity,
        "event_time": t_ms,
        "labels": {"test": "worker"},
        "names": list(values),
        "values": list(values.values()),
        "source": "test",
    }


async def test_a_leak_is_alerted_before_it_fails_and_a_healthy_host_stays_quiet(
    stack_settings: Settings, worker: WorkerProcess
) -> None:
    run = uuid.uuid4().hex[:8]
    leaking, healthy = f"leak-{run}", f"calm-{run}"
    start = int(time.time() * 1000) - 3_600_000
    failure = start + 55 * 60_000
    rng = np.random.default_rng(5)
    records = []
    for k in range(360):
        t = start + k * STEP_MS
        leak = 30.0 + max(0.0, (t - start - 30 * 60_000) / 60_000) * 70 / 25
        for entity, memory in ((leaking, min(leak, 100.0)), (healthy, 30.0)):
            records.append(
                _batch(
                    entity,
                    t,
                    {
                        "cpu_percent": 20 + rng.normal(),
                        "memory_percent": memory + rng.normal(0, 0.3),
                        "disk_used_percent": 50 + rng.normal(0, 0.1),
                    },
                )
            )
    async with TopicReader(
        stack_settings.kafka(), topics.ALERTS.name, topics.PREDICTIONS.name
    ) as reader:
        await produce(stack_settings.kafka(), topics.METRICS, "entity", records)
        last = start + 359 * STEP_MS

        def finished(seen: list[tuple[str, bytes | None, Any]]) -> bool:
            return any(
                topic == topics.PREDICTIONS.name
                and r["entity"] == healthy
                and r["event_time"] == last
                for topic, _, r in seen
            )

        seen = await reader.until(finished, timeout_s=120)
    alerts = [r for topic, _, r in seen if topic == topics.ALERTS.name]
    fired = [a for a in alerts if a["entity"] == leaking and a["status"] == "FIRING"]
    assert fired, "the leak raised no alert"
    assert fired[0]["starts_at"] <= failure - 10 * 60_000, "warned less than 10 min ahead"
    assert "failure_risk" in {a["rule"] for a in fired}
    assert [a for a in alerts if a["entity"] == healthy] == []

    # The ground truth arrives late; the worker joins it to the steps it logged.
    producer = RecordProducer(stack_settings.kafka())
    await producer.start()
    try:
        await producer.send(
            topics.LABELS.name,
            leaking,
            "label",
            {
                "entity": leaking,
                "kind": "FAILURE",
                "incident_type": "memory_leak",
                "start_time": failure,
                "end_time": None,
                "metric": "memory_percent",
            },
        )
    finally:
        await producer.stop()
    recall = 'foresight_model_recall{model="local_trend",version="1"}'
    deadline = time.monotonic() + 30
    while worker.metric(recall) == 0:
        assert time.monotonic() < deadline, "the FAILURE label was not joined to the steps"
        await asyncio.sleep(0.5)
    assert 0 < worker.metric(recall) <= 1


async def test_every_kind_of_bad_input_is_dead_lettered(
    stack_settings: Settings, worker: WorkerProcess
) -> None:
    run = uuid.uuid4().hex[:8]
    now = int(time.time() * 1000)
    codec = Codec()
    good = _batch(f"ok-{run}", now, {"cpu_percent": 1.0})
    cases: dict[str, tuple[bytes, str]] = {
        "garbage": (b"\x13\x37 not avro at all", "undecodable"),
        "wrong-schema": (
            codec.encode(
                "label",
                {"entity": "x", "kind": "FAILURE", "incident_type": "oom", "start_time": now},
            ),
            "unknown_schema",
        ),
        "nan": (codec.encode("metric_batch", dict(good, values=[math.nan])), "invalid_value"),
        "inf": (codec.encode("metric_batch", dict(good, values=[math.inf])), "invalid_value"),
        "future": (
            codec.encode("metric_batch", dict(good, event_time=now + 7_200_000)),
            "future_timestamp",
        ),
        "old": (
            codec.encode("metric_batch", dict(good, event_time=now - 30 * 86_400_000)),
            "too_old",
        ),
        "oversized": (codec.encode("metric_batch", dict(good, entity="e" * 300)), "oversized"),
        "long-metric-name": (
            codec.encode("metric_batch", dict(good, names=["m" * 100_000])),
            "oversized",
        ),
        "many-labels": (
            codec.encode("metric_batch", dict(good, labels={f"k{i}": "v" for i in range(10_000)})),
            "oversized",
        ),
        "output-too-large": (
            codec.encode(
                "metric_batch",
                _batch(
                    f"big-{run}", now, {f"{i:02d}" + "x" * 250: 1.0 for i in range(MAX_METRICS)}
                ),
            ),
            "output_too_large",
        ),
        "cardinality": (
            codec.encode(
                "metric_batch",
                _batch(f"wide-{run}", now, {f"m{i}": 1.0 for i in range(MAX_METRICS + 4)}),
            ),
            "cardinality",
        ),
    }
    late_entity = f"late-{run}"
    producer = RecordProducer(stack_settings.kafka())
    async with TopicReader(stack_settings.kafka(), topics.DEADLETTER.name) as reader:
        await producer.start()
        try:
            for name, (value, _) in cases.items():
                await producer.send_raw(topics.METRICS.name, f"{name}-{run}".encode(), value)
            # A step closes at `now`; a sample 10 minutes older is beyond the lateness.
            await producer.send(
                topics.METRICS.name,
                late_entity,
                "metric_batch",
                _batch(late_entity, now, {"cpu_percent": 1.0}),
            )
            await producer.flush()
            await producer.send_raw(
                topics.METRICS.name,
                late_entity.encode(),
                codec.encode(
                    "metric_batch", _batch(late_entity, now - 600_000, {"cpu_percent": 1.0})
                ),
            )
        finally:
            await producer.stop()
        wanted = {f"{name}-{run}".encode() for name in cases} | {late_entity.encode()}
        seen = await reader.until(lambda rs: wanted <= {k for _, k, _ in rs}, timeout_s=60)
    kinds = {key: record["error_kind"] for _, key, record in seen if key in wanted}
    assert kinds == {
        **{f"{name}-{run}".encode(): kind for name, (_, kind) in cases.items()},
        late_entity.encode(): "late",
    }
    assert worker.alive(), "a hostile record stopped the worker"
    assert (worker.health() or {}).get("crashed_agents") == {}
    by_key = {key: record for _, key, record in seen}
    garbage = by_key[f"garbage-{run}".encode()]
    assert garbage["value"] == cases["garbage"][0]
    assert garbage["topic"] == topics.METRICS.name
    assert garbage["offset"] >= 0
    assert "nan" in by_key[f"nan-{run}".encode()]["reason"]
    assert worker.health() is not None, "the worker must survive bad input"


async def test_idle_partition_windows_close_on_wall_time(
    stack_settings: Settings, worker: WorkerProcess
) -> None:
    entity = f"idle-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    records = [_batch(entity, now - (5 - k) * STEP_MS, {"cpu_percent": 5.0}) for k in range(6)]
    async with TopicReader(stack_settings.kafka(), topics.FEATURES.name) as reader:
        await produce(stack_settings.kafka(), topics.METRICS, "entity", records)
        last = records[-1]["event_time"]
        seen = await reader.until(
            lambda rs: any(
                r["entity"] == entity and r["event_time"] > last
                for _, _, r in rs
                if isinstance(r, dict)
            ),
            timeout_s=60,
        )
    after = [
        r
        for _, _, r in seen
        if isinstance(r, dict) and r["entity"] == entity and r["event_time"] > last
    ]
    # The next step, with no new data: the end of the entity's step after the last record.
    assert after[0]["event_time"] == step_end_after(
        last, step_phase_ms(entity, STEP_MS / 1000), STEP_MS / 1000
    )


async def test_a_worker_is_ready_on_a_metrics_topic_of_another_partition_count(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """``telemetry.metrics`` may have fewer partitions than the settings say (a producer's
    first record auto-created it, or an operator chose the count): waiting for the worker
    probes the partitions the topic has, where probing the settings' count asked for
    partitions that do not exist ("Unrecognized partition", seen in ``make demo``). The
    probes are consumed and leave no dead letter (they once did, as bad input)."""
    listed = len(await topic_partitions(stack_settings.kafka(), topics.METRICS.name))
    more = replace(stack_settings, topic_partitions=2 * listed)
    run = uuid.uuid4().hex[:8]
    worker = WorkerProcess(more, f"test-partitions-{run}", tmp_path / "worker.log").start()
    try:
        async with TopicReader(stack_settings.kafka(), topics.DEADLETTER.name) as reader:
            await worker.ready()
            await reader.wait(lambda _: False, timeout_s=3)  # what the probes left, if any
        report = worker.health() or {}
        consumed = {k for k in report["consumed"] if k.startswith(topics.METRICS.name)}
        assert len(consumed) == listed
        assert not [key for _, key, _ in reader.records if key == b"probe"]
    finally:
        worker.stop()


@pytest.mark.parametrize("journal_s", ["0", "0.5"], ids=["journal-every-pass", "journal-waits"])
async def test_a_killed_worker_resumes_its_windows_and_counts_every_sample(
    stack_settings: Settings, tmp_path: Path, journal_s: str
) -> None:
    """Also with FORESIGHT_WORKER_JOURNAL_S: journals that wait for later passes are
    written before each offset commit all the same."""
    run = uuid.uuid4().hex[:8]
    entity = f"crash-{run}"
    worker = WorkerProcess(
        stack_settings,
        f"test-crash-{run}",
        tmp_path / "worker.log",
        FORESIGHT_WORKER_JOURNAL_S=journal_s,
    ).start()
    start = int(time.time() * 1000) - 1_800_000
    first = [_batch(entity, start + k * STEP_MS, {"cpu_percent": float(k)}) for k in range(90)]
    second = [_batch(entity, start + (90 + k) * STEP_MS, {"cpu_percent": 1.0}) for k in range(60)]
    kafka, group = stack_settings.kafka(), worker.group
    try:
        await worker.ready()
        before = sum((await committed_offsets(kafka, group, topics.METRICS.name)).values())
        async with TopicReader(stack_settings.kafka(), topics.FEATURES.name) as reader:
            await produce(stack_settings.kafka(), topics.METRICS, "entity", first)
            await reader.until(
                lambda rs: any(
                    r["entity"] == entity and r["event_time"] == first[-1]["event_time"]
                    for _, _, r in rs
                    if isinstance(r, dict)
                ),
                timeout_s=90,
            )

        async def committed_some() -> bool:
            offsets = await committed_offsets(kafka, group, topics.METRICS.name)
            return sum(offsets.values()) > before

        # Its outputs can be out before its next offset commit: killed before that, a worker
        # has nothing to restore and replays every record (counting each once all the same).
        await until("an offset committed past the first records", committed_some, 30, 0.05)
        worker.kill9()
        await produce(stack_settings.kafka(), topics.METRICS, "entity", second)
        async with TopicReader(stack_settings.kafka(), topics.FEATURES.name) as reader:
            worker.start()
            final_t = second[-1]["event_time"]
            seen = await reader.until(
                lambda rs: any(
                    r["entity"] == entity and r["event_time"] == final_t
                    for _, _, r in rs
                    if isinstance(r, dict)
                ),
                timeout_s=120,
            )
    finally:
        worker.stop()
    mine = [r for _, _, r in seen if isinstance(r, dict) and r["entity"] == entity]
    hour_count = vector_names(mine[-1]).index("cpu_percent:1h:count")
    # The restarted worker replays from its last committed offset; its first step already
    # holds the samples before that offset, restored from the changelog.
    first_step = mine[0]
    replayed = sum(1 for r in first + second if r["event_time"] <= first_step["event_time"])
    assert first_step["values"][hour_count] == replayed > 1, "windows not restored"
    assert mine[-1]["values"][hour_count] == len(first) + len(second), (
        "every sample is counted once: none lost in the crash, none counted twice"
    )


async def test_a_worker_killed_while_behind_counts_every_sample_once(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """Behind, a worker leaves its entities' journals to the offset commit (here always:
    ``FORESIGHT_WORKER_BATCH=1`` makes any record waiting past a pass a backlog). Killed in
    the middle of a backlog, it resumes from its committed offsets with every sample once:
    each commit had the journals of the records before it in the changelog."""
    run = uuid.uuid4().hex[:8]
    entities = [f"behind-{run}-{e}" for e in range(100)]
    worker = WorkerProcess(
        stack_settings,
        f"test-behind-{run}",
        tmp_path / "worker.log",
        FORESIGHT_WORKER_BATCH="1",
        FORESIGHT_WORKER_COMMIT_S="0.2",  # several commits before the kill
    )
    start = int(time.time() * 1000) - 600_000
    values = {f"metric_{m}": 1.0 for m in range(5)}
    # A scrape a second of each entity for a minute, the entities in turn: each takes other
    # records between its own, and holds a journal of several between its snapshots.
    backlog = [_batch(e, start + k * 1000, values) for k in range(60) for e in entities]
    last = [_batch(e, start + 60_000 + STEP_MS, values) for e in entities]
    kafka, group = stack_settings.kafka(), worker.group
    try:
        await worker.start().ready()
        before = sum((await committed_offsets(kafka, group, topics.METRICS.name)).values())
        await produce(kafka, topics.METRICS, "entity", backlog)
        committed = [0]

        async def committed_in_backlog() -> bool:
            offsets = await committed_offsets(kafka, group, topics.METRICS.name)
            committed[0] = sum(offsets.values()) - before
            return committed[0] >= 1000

        await until("1,000 records committed", committed_in_backlog, 60, every_s=0.02)
        worker.kill9()
        assert committed[0] < len(backlog) - 1000, f"killed {committed[0]} records in"
        async with TopicReader(stack_settings.kafka(), topics.FEATURES.name) as reader:
            worker.start()
            await produce(stack_settings.kafka(), topics.METRICS, "entity", last)
            final_t = last[0]["event_time"]
            seen = await reader.until(
                lambda rs: (
                    {
                        r["entity"]
                        for _, _, r in rs
                        if isinstance(r, dict) and r["event_time"] == final_t
                    }
                    >= set(entities)
                ),
                timeout_s=120,
            )
    finally:
        worker.stop()
    counted = {
        r["entity"]: r["values"][vector_names(r).index("metric_0:1h:count")]
        for _, _, r in seen
        if isinstance(r, dict) and r["entity"] in entities and r["event_time"] == final_t
    }
    # Every sample once: none lost in the kill, none counted twice.
    assert counted == dict.fromkeys(entities, 61)


def test_the_worker_port_serves_health_and_metrics_and_nothing_else(
    worker: WorkerProcess,
) -> None:
    base = f"http://127.0.0.1:{worker.port}"
    assert "status" in (worker.health() or {})  # 200, or 503 with the reason
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
        assert response.status == 200
    # Faust's own pages would show the group's layout and the tables' contents.
    for path in ("/", "/router/", "/table/", "/table/entity-windows/", "/stats/", "/graph/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=30)
        assert refused.value.code == 404, path
