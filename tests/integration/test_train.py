"""``foresight train`` and ``foresight models`` end to end: chdb history in, a registered model
and ModelUpdate records on the real Kafka out.

The history goes into a temporary chdb folder through the sink's own DDL and flattening; this
process closes it before the commands run in subprocesses (one chdb session per process, and
a folder opens in one process at a time), pointed at a free SQL port so that they open the
folder themselves rather than ask the stack's running sink.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from connectors.audit import AuditTrail
from connectors.clickhouse import ChdbStore
from connectors.clickhouse_schema import TABLE_FOR_SCHEMA, Consumed, create_tables
from connectors.clickhouse_sink import SqlEndpoint
from connectors.http.auth import Gatekeeper
from connectors.http.keys import OPERATE, READ, KeysFile
from connectors.kafka_clients import KafkaConfig
from connectors.user_sql import UserSql
from deploy.local.processes import free_port
from models.registry import ModelRegistry
from models.training import build_training_set
from schemas.codec import Codec
from streams.commands import train as train_command
from streams.settings import Settings
from streams.topics import MODEL_UPDATES
from tests.models.test_training import synthetic_history

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def _consumed(records: list[dict[str, Any]]) -> Consumed:
    consumed = Consumed()
    for offset, record in enumerate(records):
        consumed.add(record, "test", 0, offset)
    return consumed


def _write_history(folder: Path, start_ms: int, hours: float) -> None:
    features, labels, risks = synthetic_history(start_ms, hours, entities=3, seed=1)
    predictions = [
        {"prediction_id": f"{r['entity']}@{r['ts']}", "entity": r["entity"],
         "event_time": r["ts"], "emitted_at": r["ts"], "latency_ms": 1.0,
         "predictions": [{"metric": "memory_percent", "kind": "FAILURE_RISK",
                          "model": "local_trend", "model_version": "1", "horizon_s": 1800,
                          "value": 0.0, "score": r["score"], "lower": None, "upper": None}]}
        for r in risks
    ]  # fmt: skip
    store = ChdbStore(str(folder))
    try:
        create_tables(store, ttl_days=30)
        for schema, records in (
            ("feature_vector", features),
            ("label", labels),
            ("prediction_batch", predictions),
        ):
            spec = TABLE_FOR_SCHEMA[schema]
            store.insert_arrow(spec.name, spec.flatten(_consumed(records)))
    finally:
        store.close()


def _iso(t_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ms / 1000))


def _foresight(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def _end_offset(kafka: KafkaConfig) -> int:
    consumer = kafka.consumer()
    await consumer.start()
    try:
        tp = TopicPartition(MODEL_UPDATES.name, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def _updates_since(kafka: KafkaConfig, offset: int) -> list[dict[str, Any]]:
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(MODEL_UPDATES.name, 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        end = (await consumer.end_offsets([tp]))[tp]
        codec, out = Codec(), list[dict[str, Any]]()
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(codec.decode(m.value)[1] for m in messages)
        return out
    finally:
        await consumer.stop()


def test_train_registers_a_candidate_and_promote_announces_it(
    stack_settings: Settings, tmp_path: Path, unique: str
) -> None:
    now = int(time.time() * 1000) // 60_000 * 60_000
    start = now - 36 * HOUR_MS  # recent: older rows would fall to the tables' TTL
    _write_history(tmp_path / "chdb", start, hours=36)
    registry_folder = tmp_path / "registry"
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=stack_settings.kafka_bootstrap_servers,
        CLICKHOUSE_URL="",
        FORESIGHT_CHDB_PATH=str(tmp_path / "chdb"),
        FORESIGHT_SINK_SQL_PORT=str(free_port()),  # no sink there: the folder is opened
        MODEL_REGISTRY_URL=f"file://{registry_folder}",
        FORESIGHT_KEYS_FILE=str(tmp_path / "keys.json"),
        FORESIGHT_API_KEY=KeysFile(tmp_path / "keys.json").create("ops", [OPERATE])[1],
        FORESIGHT_AUDIT_TOPIC=f"test.audit.train.{unique}",
    )
    kafka = stack_settings.kafka()
    offset = asyncio.run(_end_offset(kafka))

    trained = _foresight(
        env, tmp_path, "train", "failure_risk", "--since", _iso(start), "--until", _iso(now),
        "--folds", "3", "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    update, report = result["update"], result["report"]
    assert result["published"] and update["action"] == "REGISTERED"
    assert update["stage"] == "candidate"
    assert len(report["cv"]["folds"]) == 3
    assert report["cv"]["mean"]["model"]["roc_auc"] > 0.85
    assert "local_trend_baseline" in report["cv"]["mean"]  # read from the predictions table

    registry = ModelRegistry(f"file://{registry_folder}")
    version = registry.show("failure_risk", update["version"])
    assert version.stage == "candidate" and version.content_hash == update["content_hash"]
    loaded = registry.load("failure_risk", version.version)
    assert json.loads(loaded.extra["report.json"]) == report

    promoted = _foresight(env, tmp_path, "models", "promote", "failure_risk", "1", "--json")
    assert promoted.returncode == 0, promoted.stderr
    listed = _foresight(env, tmp_path, "models", "list", "--json")
    assert [(r["version"], r["stage"]) for r in json.loads(listed.stdout)] == [("1", "production")]

    announced = [
        u for u in asyncio.run(_updates_since(kafka, offset))
        if u["content_hash"] == update["content_hash"]
    ]  # fmt: skip
    assert [u["action"] for u in announced] == ["REGISTERED", "PROMOTED"]
    assert all(u["model"] == "failure_risk" for u in announced)


async def test_history_reads_the_same_through_a_sink_endpoint_and_the_folder(
    stack_settings: Settings, tmp_path: Path, unique: str
) -> None:
    """The JSON rows a running sink answers train the same as the folder's Arrow tables."""
    now = int(time.time() * 1000) // 60_000 * 60_000
    start = now - 12 * HOUR_MS
    _write_history(tmp_path / "chdb", start, hours=12)
    keys = KeysFile(tmp_path / "keys.json")
    (tmp_path / "credentials").write_text(keys.create("train-test", [READ])[1])
    settings = Settings(
        chdb_path=str(tmp_path / "chdb"),
        sink_sql_port=free_port(),
        credentials_file=str(tmp_path / "credentials"),
    )

    def read(since_ms: int) -> list[Any]:
        features, labels, baseline = train_command._read_history(since_ms, now, settings)
        data = build_training_set(features, labels, 1800, label_until_ms=now, baseline=baseline)
        return [data.rows, int(data.target.sum()), data.features, data.baseline is not None]

    from_folder = read(start)
    store = ChdbStore(settings.chdb_path)
    sql = UserSql(store.session, settings.sql_limits())
    audit = AuditTrail(stack_settings.kafka(), f"test.audit.{unique}", "sink")
    endpoint = SqlEndpoint(sql, settings.sink_sql_port, Gatekeeper(keys), audit)
    await endpoint.start()
    try:
        through_sink = await asyncio.to_thread(read, start)
        _, labels, _ = await asyncio.to_thread(train_command._read_history, now, now, settings)
        empty = build_training_set(
            [{"entity": "a", "event_time": now, "names": ["m:5m:mean"], "values": [1.0]}],
            labels,  # no label at `now`: an untyped empty table from JSON
            1800,
            label_until_ms=now + HOUR_MS,
        )
    finally:
        await endpoint.stop()
        store.close()
    assert through_sink == from_folder
    assert from_folder[1] > 0 and from_folder[3]
    assert empty.target.tolist() == [0]
