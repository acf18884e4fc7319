"""Foresight on a schema registry, read from every language.

A registry of its own (the local stack's, started by ``LocalStack`` on a free port in a
temporary folder) first holds version 1 of PredictionBatch and FeatureVector, as an older
deployment would have left it. A worker with ``SCHEMA_REGISTRY_URL`` then registers today's
schemas (the registry checks each against the last under BACKWARD) and turns metrics, agent
events and a broken record into features, predictions, alerts, routing decisions and a dead
letter, Confluent-framed, with their JSON twins. Those records, copied byte for byte to topics
of this run, are stored by the ClickHouse sink, relayed by the gateway, and read by kcat
(the JSON twins), by a Java consumer (kafka-clients and Apache Avro), a Go one (franz-go and
hamba/avro) and a Python one (aiokafka and fastavro), none of them using Foresight's code.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import pytest

from connectors.clickhouse import open_store
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_producer import RecordProducer
from connectors.schema_registry import ConfluentRegistry, RegistryError
from deploy.local.processes import free_port
from deploy.local.stack import LocalStack
from schemas.codec import Codec, Schema, current_schema, schema_history
from schemas.json_form import json_form, json_schema
from schemas.predictions import prediction_rows
from streams import topics
from streams.commands.stack import local_stack
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.kafka_io import TopicReader
from tests.integration.test_metrics_endpoints import (
    foresight_process,
    scrape,
    subscribe_and_receive,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AVRO_OUTPUTS = (topics.FEATURES, topics.PREDICTIONS, topics.ALERTS, topics.ROUTING)
OUTPUTS = (*AVRO_OUTPUTS, topics.DEADLETTER)
TWINS = tuple(f"{spec.name}.json" for spec in AVRO_OUTPUTS)
STEP_MS = 10_000


@pytest.fixture(scope="module")
def registry(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry of this module's own, holding what an older deployment registered."""
    folder = tmp_path_factory.mktemp("registry-stack")
    settings = stack_settings.replace(
        stack_dir=str(folder), chdb_path=str(folder / "chdb"), schema_registry_port=free_port()
    )
    stack: LocalStack = local_stack(settings, quiet=True)
    try:
        statuses = stack.up(timeout=180)
        assert [s.name for s in statuses if s.managed] == ["schema-registry"], statuses
        url = stack.where.registry_url
        older = ConfluentRegistry(url)
        for name in ("prediction_batch", "feature_vector"):
            older.id_for(schema_history(name)[1])
        yield url
    finally:
        assert stack.down() == ["schema-registry"]


@dataclass
class Run:
    """What the worker wrote, copied to this run's own topics."""

    entity: str
    agent: str
    task_type: str
    topic: dict[str, str]  # output topic -> this run's copy
    raw: dict[str, list[tuple[bytes | None, bytes]]]  # output topic -> its records' bytes


def _mine(run_keys: tuple[str, ...], key: bytes | None) -> bool:
    """Is the record keyed by this run's entity, agent or task type (or a key holding one)?"""
    text = (key or b"").decode(errors="replace")
    return any(k in text for k in run_keys)


@pytest.fixture(scope="module")
async def run(
    stack_settings: Settings, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    u = uuid.uuid4().hex[:8]
    entity, agent, task_type = f"reg-{u}", f"agent-{u}", f"task-{u}"
    kafka = stack_settings.kafka()
    codec = Codec(ConfluentRegistry(registry))
    worker = WorkerProcess(
        stack_settings,
        f"test-registry-worker-{u}",
        tmp_path_factory.mktemp("registry-worker") / "worker.log",
        SCHEMA_REGISTRY_URL=registry,
        FORESIGHT_JSON_TWINS="true",
        FORESIGHT_IDLE_TIMEOUT_S="2",
    ).start()
    names = [s.name for s in OUTPUTS] + list(TWINS)
    try:
        await worker.ready()
        async with TopicReader(kafka, *names, codec=codec) as reader:
            producer = RecordProducer(kafka, codec)
            await producer.start()
            try:
                start = int(time.time() * 1000) - 3_600_000
                for k in range(8):
                    batch = {
                        "entity": entity, "event_time": start + k * STEP_MS, "labels": {},
                        "names": ["cpu_percent", "memory_percent"], "values": [20.0 + k, 40.0],
                        "source": "test",
                    }  # fmt: skip
                    await producer.send(topics.METRICS.name, entity, "metric_batch", batch)
                await producer.send_raw(topics.METRICS.name, entity.encode(), b"\x00broken")

                def complete(records: list[tuple[str, bytes | None, Any]]) -> bool:
                    mine = (entity, agent, task_type)
                    return {*names} <= {t for t, key, _ in records if _mine(mine, key)}

                # A new group may start after the first events of a topic: send until answered.
                for burst in range(12):
                    for i in range(6):
                        failed = i >= 2  # two in three fail: the agent_failures alert
                        event: dict[str, Any] = {
                            "agent": agent, "task_id": f"{burst}-{i}", "task_type": task_type,
                            "phase": "FAILED" if failed else "SUCCEEDED",
                            "event_time": start + (burst * 6 + i) * 1000,
                            "duration_ms": 1000.0 + i, "cost": None,
                            "error_class": "timeout" if failed else None, "labels": {},
                        }  # fmt: skip
                        await producer.send(topics.AGENT_EVENTS.name, agent, "agent_event", event)
                    await producer.flush()
                    if await reader.wait(complete, timeout_s=10):
                        break
            finally:
                await producer.stop()
            if not await reader.wait(complete, timeout_s=30):
                seen = {t for t, key, _ in reader.records if _mine((entity, agent, task_type), key)}
                raise AssertionError(f"the worker wrote nothing to {sorted({*names} - seen)}")
            raw: dict[str, list[tuple[bytes | None, bytes]]] = {n: [] for n in names}
            for t, key, value in reader.raw:
                # Workers without the registry dead-letter this run's Confluent-framed input
                # too, in their own framing: only this worker writes Confluent's.
                framed = t in TWINS or value[:1] == b"\x00"
                if framed and _mine((entity, agent, task_type), key):
                    raw[t].append((key, value))
    finally:
        worker.stop()
    copies = {n: f"test.registry.{u}.{n}" for n in names}
    await ensure_topics(kafka, [TopicRequest(c, 1, {}) for c in copies.values()])
    copier = kafka.producer()
    await copier.start()
    try:
        for name, records in raw.items():
            for key, value in records:
                await copier.send_and_wait(copies[name], value, key=key)
    finally:
        await copier.stop()
    return Run(entity, agent, task_type, copies, raw)


def _registry_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_every_output_is_framed_for_its_record_name_subject(run: Run, registry: str) -> None:
    for spec in OUTPUTS:
        assert run.raw[spec.name], f"no {spec.name} record"
        subject = current_schema(spec.schema).full_name
        for _, value in run.raw[spec.name]:
            schema_id = int.from_bytes(value[1:5], "big")
            uses = _registry_json(f"{registry}/schemas/ids/{schema_id}/versions")
            assert [u["subject"] for u in uses] == [subject]
        assert _registry_json(f"{registry}/config/{subject}") == {"compatibilityLevel": "BACKWARD"}
    # The older deployment's version 1, then today's version 2, accepted under BACKWARD.
    for subject in ("io.foresight.PredictionBatch", "io.foresight.FeatureVector"):
        assert _registry_json(f"{registry}/subjects/{subject}/versions") == [1, 2]


def test_the_registry_refuses_a_version_that_cannot_read_the_last(registry: str) -> None:
    current = current_schema("alert")
    raw = json.loads(json.dumps(current.raw))
    raw["fields"].append({"name": "team", "type": "string"})  # no default: old alerts lack it
    raw["foresight.version"] = current.version + 1
    changed = Schema("alert", current.version + 1, raw, None)
    with pytest.raises(RegistryError, match="READER_FIELD_MISSING_DEFAULT_VALUE") as refused:
        ConfluentRegistry(registry).id_for(changed)
    assert "refused alert version" in str(refused.value)
    raw["fields"][-1]["default"] = ""  # with a default, it may follow
    assert ConfluentRegistry(registry).id_for(Schema("alert", changed.version, raw, None)) > 0


def _decoded(run: Run, registry: str, name: str) -> list[tuple[str, dict[str, Any]]]:
    codec = Codec(ConfluentRegistry(registry))
    return [((key or b"").decode(), codec.decode(value)[1]) for key, value in run.raw[name]]


def test_the_sink_stores_registry_framed_records(
    run: Run, registry: str, stack_settings: Settings, tmp_path: Path
) -> None:
    port, chdb = free_port(), tmp_path / "chdb"
    env = {
        "SCHEMA_REGISTRY_URL": registry,
        "FORESIGHT_SINK_METRICS_PORT": str(port),
        "FORESIGHT_SINK_SQL_PORT": str(free_port()),
        "FORESIGHT_CHDB_PATH": str(chdb),
        "FORESIGHT_SINK_BATCH_SECONDS": "0.2",
    }
    copies = [run.topic[spec.name] for spec in OUTPUTS]
    args = ["sink", "clickhouse", "--topics", *copies, "--group", f"sink-{uuid.uuid4().hex[:8]}"]
    records = sum(len(run.raw[spec.name]) for spec in OUTPUTS)
    with foresight_process(args, port, env):
        wait_for(
            "the sink to take every record",
            lambda: (
                sum(v for (n, _), v in scrape(port).items() if n == "foresight_events_in_total")
                >= records
            ),
        )
        wait_for("the sink to insert", lambda: _rows(scrape(port)) > 0)
        wait_for("the sink to finish its batches", lambda: _settled(port))
    with open_store("", str(chdb)) as store:
        stored = store.query(f"SELECT count() FROM predictions WHERE entity = '{run.entity}'").rows[
            0
        ][0]
        alerts = store.query(f"SELECT count() FROM alerts WHERE entity = '{run.agent}'").rows[0][0]
    batches = [r for _, r in _decoded(run, registry, topics.PREDICTIONS.name)]
    assert stored == sum(len(b["kinds"]) for b in batches if b["entity"] == run.entity) > 0
    assert alerts == len(run.raw[topics.ALERTS.name]) > 0


def _rows(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (n, _), v in samples.items() if n == "foresight_sink_rows_total")


def _settled(port: int) -> bool:
    before = _rows(scrape(port))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if _rows(scrape(port)) != before:
            return False
    return True


def test_the_gateway_relays_registry_framed_predictions(
    run: Run, registry: str, stack_settings: Settings
) -> None:
    kafka = stack_settings.kafka()
    predictions, alerts = (
        f"{run.topic[t.name]}.gateway" for t in (topics.PREDICTIONS, topics.ALERTS)
    )
    asyncio.run(ensure_topics(kafka, [TopicRequest(t, 1, {}) for t in (predictions, alerts)]))
    key, value = next(
        (k, v) for k, v in run.raw[topics.PREDICTIONS.name] if k == run.entity.encode()
    )

    def produce() -> None:
        async def send() -> None:
            producer = kafka.producer()
            await producer.start()
            try:
                await producer.send_and_wait(predictions, value, key=key)
            finally:
                await producer.stop()

        asyncio.run(send())

    port = free_port()
    args = ["gateway", "--predictions-topic", predictions, "--alerts-topic", alerts]
    env = {"FORESIGHT_GATEWAY_PORT": str(port), "SCHEMA_REGISTRY_URL": registry}
    with foresight_process(args, port, env):
        asyncio.run(subscribe_and_receive(port, run.entity, produce))


# -- readers in other languages -------------------------------------------------------------


def _finite(value: Any) -> Any:
    """Floats compared across languages: NaN and infinities as None (null in Go's and Python's
    JSON, the strings "NaN" and "Infinity" in Avro Java's)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value in ("NaN", "Infinity", "-Infinity"):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _essence(topic: str, value: dict[str, Any]) -> tuple[Any, ...]:
    """What every reader must agree on about a record, whatever its language's types."""
    if topic == topics.DEADLETTER.name:
        return (value["topic"], value["offset"], value["reason"])
    if topic == topics.ALERTS.name:
        return (value["dedup_key"], value["status"], value["rule"], _finite(value["value"]))
    if topic == topics.ROUTING.name:
        return (value["task_type"], value["agent"], _finite(value["expected_duration_ms"]))
    columns = "metrics" if topic == topics.FEATURES.name else "kinds"
    return (value["entity"], value[columns], _finite(value["values"]))


def _expected(run: Run, registry: str) -> list[tuple[str, str, tuple[Any, ...]]]:
    return sorted(
        (spec.name, key, _essence(spec.name, record))
        for spec in OUTPUTS
        for key, record in _decoded(run, registry, spec.name)
    )


def _read_lines(run: Run, argv: list[str], **kwargs: Any) -> list[tuple[str, str, tuple[Any, ...]]]:
    """Run a reader over this run's copies; its JSON lines, as (topic, key, essence)."""
    copies = [run.topic[spec.name] for spec in OUTPUTS]
    result = subprocess.run(
        [*argv, *copies], capture_output=True, text=True, timeout=300, check=False, **kwargs
    )
    assert result.returncode == 0, result.stderr[-3000:]
    original = {copy: name for name, copy in run.topic.items()}
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return sorted(
        (original[line["topic"]], line["key"], _essence(original[line["topic"]], line["value"]))
        for line in lines
    )


def _max(run: Run) -> str:
    return str(sum(len(run.raw[spec.name]) for spec in OUTPUTS))


@pytest.fixture(scope="module")
def java_subscriber() -> list[str]:
    """The Java example, built with Maven: the command that runs it."""
    project = ROOT / "examples" / "java"
    classpath = project / "target" / "classpath.txt"
    build = subprocess.run(
        [
            *("mvn", "-q", "-B", "-f", str(project / "pom.xml"), "package"),
            *("dependency:build-classpath", f"-Dmdep.outputFile={classpath}"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    jar = project / "target" / "foresight-subscriber-1.0.jar"
    java_classpath = f"{jar}:{classpath.read_text().strip()}"
    return ["java", "-cp", java_classpath, "io.foresight.examples.Subscriber"]


def test_a_java_consumer_reads_every_output_topic(
    run: Run, registry: str, stack_settings: Settings, java_subscriber: list[str]
) -> None:
    argv = [
        *java_subscriber,
        *("--bootstrap", stack_settings.kafka_bootstrap_servers, "--registry", registry),
        *("--max", _max(run)),
    ]
    assert _read_lines(run, argv) == _expected(run, registry)


def test_a_go_consumer_reads_every_output_topic(
    run: Run, registry: str, stack_settings: Settings, tmp_path: Path
) -> None:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    binary = tmp_path / "subscriber"
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ROOT / "examples" / "go",
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    argv = [
        str(binary),
        *("-bootstrap", stack_settings.kafka_bootstrap_servers, "-registry", registry),
        *("-max", _max(run)),
    ]
    assert _read_lines(run, argv) == _expected(run, registry)


def test_a_python_consumer_reads_every_output_topic(
    run: Run, registry: str, stack_settings: Settings
) -> None:
    argv = [
        *(sys.executable, str(ROOT / "examples" / "python" / "subscriber.py")),
        *("--bootstrap", stack_settings.kafka_bootstrap_servers, "--registry", registry),
        *("--max", _max(run)),
    ]
    assert _read_lines(run, argv) == _expected(run, registry)


def test_kcat_reads_the_json_twins(run: Run, registry: str, stack_settings: Settings) -> None:
    for spec in AVRO_OUTPUTS:
        twin = f"{spec.name}.json"
        result = subprocess.run(
            [
                *("kcat", "-C", "-b", stack_settings.kafka_bootstrap_servers),
                *("-t", run.topic[twin], "-e", "-q", "-f", "%k\t%s\n"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        read = [line.split("\t", 1) for line in result.stdout.splitlines()]
        for _, text in read:
            jsonschema.validate(json.loads(text), json_schema(spec.schema))
        expected = [
            (key, json.dumps(json_form(spec.schema)(record), sort_keys=True))
            for key, record in _decoded(run, registry, spec.name)
        ]
        got = [(key, json.dumps(json.loads(text), sort_keys=True)) for key, text in read]
        assert sorted(got) == sorted(expected)


def test_a_v1_java_consumer_and_a_v2_python_consumer_read_both_versions(
    run: Run, registry: str, stack_settings: Settings, java_subscriber: list[str]
) -> None:
    """An older producer's version-1 batch and today's version-2 batch on one topic."""
    v1 = schema_history("prediction_batch")[1]
    older = {
        "prediction_id": f"{run.entity}@1", "entity": run.entity, "event_time": 1_700_000_000_000,
        "emitted_at": 1_700_000_000_005, "latency_ms": 5.0,
        "predictions": [{"metric": "cpu_percent", "kind": "FORECAST", "model": "seasonal",
                         "model_version": "1", "horizon_s": 300, "value": 13.0, "score": 0.1,
                         "lower": 10.0, "upper": None}],
    }  # fmt: skip
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1.parsed, older)
    v1_value = struct.pack(">bI", 0, ConfluentRegistry(registry).id_for(v1)) + body.getvalue()
    key, v2_value = next(
        (k, v) for k, v in run.raw[topics.PREDICTIONS.name] if k == run.entity.encode()
    )
    topic = f"{run.topic[topics.PREDICTIONS.name]}.evolution"

    async def produce() -> None:
        kafka = stack_settings.kafka()
        await ensure_topics(kafka, [TopicRequest(topic, 1, {})])
        producer = kafka.producer()
        await producer.start()
        try:
            for value in (v1_value, v2_value):
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(produce())
    reader_v1 = ROOT / "schemas" / "avro" / "history" / "prediction_batch.v1.avsc"
    result = subprocess.run(
        [
            *java_subscriber,
            *("--bootstrap", stack_settings.kafka_bootstrap_servers, "--registry", registry),
            *("--reader-schema", str(reader_v1), "--max", "2", topic),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    old, new = (json.loads(line)["value"] for line in result.stdout.splitlines())
    assert set(old) == set(new) == {f["name"] for f in v1.raw["fields"]}
    assert old["predictions"] == older["predictions"]
    v2 = Codec(ConfluentRegistry(registry)).decode(v2_value)[1]
    assert (new["prediction_id"], new["entity"]) == (v2["prediction_id"], v2["entity"])
    assert new["predictions"] == []  # a v2 batch carries its predictions in the columns

    codec = Codec(ConfluentRegistry(registry))  # today's reader: version 2
    rows_of_old = prediction_rows(codec.decode(v1_value)[1])
    assert [(r["metric"], r["value"], r["upper"]) for r in rows_of_old] == [
        ("cpu_percent", 13.0, None)
    ]
    assert len(prediction_rows(codec.decode(v2_value)[1])) == len(v2["kinds"]) > 0
