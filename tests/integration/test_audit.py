"""The audit trail on the real stack: operations, SQL and refused keys land on the audit topic,
the sink stores them, and ``foresight sql "SELECT ... FROM audit"`` reads them back.

Everything runs on a topic of its own (``FORESIGHT_AUDIT_TOPIC``), a keys file and a chdb
folder of its own; the sink is ``foresight sink clickhouse`` in a subprocess (the one process
that holds the folder), and the commands run in this process as a person would type them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from connectors.alert_sinks import sink_config
from connectors.audit import AuditTrail, RefusalThrottle
from connectors.clickhouse_sink import ask_sink
from connectors.http.auth import Gatekeeper
from connectors.http.keys import OPERATE, READ, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from connectors.kafka_connect import ConnectError, delete_connector
from connectors.user_sql import SqlError
from models.registry import ModelRegistry
from schemas.codec import Codec
from streams.access import audit_trail
from streams.cli import main
from streams.operations import apply_alert_connectors, running
from streams.settings import Settings, load_settings
from tests.connectors.test_clickhouse_sink import SinkProcess
from tests.models.test_registry import _register

pytestmark = pytest.mark.integration

WATCH = (
    "SELECT action, outcome, key_id, key_name, target, origin, service, details FROM audit "
    "WHERE target NOT LIKE '%FROM audit%' ORDER BY ts, event_id"
)


async def _read_all(kafka: KafkaConfig, topic: str) -> list[dict[str, Any]]:
    """Every record of the one-partition ``topic``, decoded."""
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records = []
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                records += [Codec().decode(m.value)[1] for m in messages]
        return records
    finally:
        await consumer.stop()


def _rows(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The audit rows so far, read with ``foresight sql ... --format json``."""
    assert main(["sql", WATCH, "--format", "json"]) == 0, capsys.readouterr().err
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_every_kind_of_event_is_stored_and_queryable(
    stack_settings: Settings,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = f"test.audit.{unique}"
    bootstrap = stack_settings.kafka_bootstrap_servers
    asyncio.run(ensure_topics(stack_settings.kafka(), [TopicRequest(topic, 1, {})]))
    sink = SinkProcess(
        stack_settings,
        tmp_path / "chdb",
        topic,
        f"test-audit-{unique}",
        FORESIGHT_AUDIT_TOPIC=topic,
    )
    try:
        sink.wait_until("the sink to answer SQL", lambda: sink.count("audit") >= 0)
        keys = KeysFile(tmp_path / "keys.json")
        ops, ops_key = keys.create(f"ops-{unique}", [OPERATE])
        reader, reader_key = keys.create(f"reader-{unique}", [READ])
        registry = ModelRegistry(f"file://{tmp_path}/models")
        _register(registry, seed=0)
        _register(registry, seed=1)
        for name, value in {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FORESIGHT_AUDIT_TOPIC": topic,
            "FORESIGHT_KEYS_FILE": str(keys.path),
            "FORESIGHT_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "MODEL_REGISTRY_URL": registry.url,
            "FORESIGHT_SINK_SQL_PORT": str(sink.sql_port),
            "FORESIGHT_CHDB_PATH": str(tmp_path / "unused-chdb"),
            "FORESIGHT_STACK_DIR": str(tmp_path / "stack"),
            "FORESIGHT_API_KEY": ops_key,
        }.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()

        assert main(["models", "promote", "failure_risk", "1"]) == 0, capsys.readouterr().err
        monkeypatch.setenv("FORESIGHT_API_KEY", reader_key)
        assert main(["models", "promote", "failure_risk", "2"]) == 1
        assert "needs the operate role" in capsys.readouterr().err
        assert registry.show("failure_risk").version == "1"

        monkeypatch.setenv("FORESIGHT_API_KEY", ops_key)
        webhook = sink_config(
            "webhook",
            f"http://127.0.0.1:9/secret-path-{unique}",
            secrets_dir=tmp_path / "stack" / "connect" / "secrets",
            topic=f"test.alerts.webhook.{unique}",
            name=f"test-audit-webhook-{unique}",
        )
        try:
            with audit_trail(settings, "cli") as trail:
                states = apply_alert_connectors(settings, trail, [webhook], timeout_s=30)
            applied = "SUCCEEDED" if all(running(s) for s in states) else "FAILED"
        except ConnectError:  # this stack's worker reads secrets from its own folder only
            applied = "FAILED"
        finally:
            delete_connector(settings.kafka_connect_url, webhook.name)

        monkeypatch.setenv("FORESIGHT_API_KEY", reader_key)
        assert main(["sql", "SELECT 42 AS answer"]) == 0
        assert main(["sql", "SELECT * FROM file('/etc/passwd', 'LineAsString')"]) == 1
        capsys.readouterr()
        with pytest.raises(SqlError):
            ask_sink(sink.sql_port, "SELECT 1", f"fsk_wrong_{unique}")

        expected = [
            ("model.promote", "SUCCEEDED", ops.id, "failure_risk 1"),
            ("model.promote", "REFUSED", reader.id, "failure_risk 2"),
            ("connect.apply", applied, ops.id, webhook.name),
            ("sql.query", "SUCCEEDED", reader.id, "SELECT 42 AS answer"),
            (
                "sql.query",
                "REFUSED",
                reader.id,
                "SELECT * FROM file('/etc/passwd', 'LineAsString')",
            ),
            ("auth.refused", "REFUSED", "", "/"),
        ]
        deadline = time.monotonic() + 90
        rows = _rows(capsys)
        while len(rows) < len(expected) and time.monotonic() < deadline:
            rows = _rows(capsys)
        assert [(r["action"], r["outcome"], r["key_id"], r["target"]) for r in rows] == expected
    finally:
        assert sink.stop() == 0
    promoted, refused, connect, ran, guarded, wrong_key = rows
    assert promoted["key_name"] == f"ops-{unique}" and promoted["service"] == "cli"
    assert promoted["details"]["updates"] == "PROMOTED failure_risk 1"
    assert "has the roles read" in refused["details"]["reason"]
    assert "secret-path" not in json.dumps(connect)  # an endpoint is a secret
    assert (ran["service"], ran["origin"], ran["details"]) == ("sink", "127.0.0.1", {"rows": "1"})
    assert "file()" in guarded["details"]["reason"]
    assert wrong_key["details"]["status"] == "401" and wrong_key["origin"] == "127.0.0.1"
    assert f"fsk_wrong_{unique}" not in json.dumps(rows)


def test_a_flood_of_wrong_keys_is_summarised_not_recorded_one_by_one(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    """200 wrong keys from one address: 10 events one by one, the other 190 in summaries."""
    topic = f"test.audit.flood.{unique}"
    kafka = stack_settings.kafka()
    asyncio.run(ensure_topics(kafka, [TopicRequest(topic, 1, {})]))
    keys = KeysFile(tmp_path / "keys.json")
    keys.create("someone", [READ])
    trail = AuditTrail(
        kafka, topic, "gateway", summary_interval_s=0.5, throttle=RefusalThrottle(10, 100)
    )
    gate = Gatekeeper(keys, audit=trail.refused)
    with trail:
        for i in range(200):
            assert gate.admit("192.0.2.50", f"fsk_flood_{i}", READ, "/ws").status in (401, 429)
        deadline = time.monotonic() + 30
        while trail.stats.recorded < 11 and time.monotonic() < deadline:
            time.sleep(0.1)
    events = asyncio.run(_read_all(kafka, topic))
    counts = Counter("summary" if e["count"] > 1 else "one" for e in events)
    assert counts["one"] == 10
    assert sum(e["count"] for e in events) == 200
    assert {e["origin"] for e in events} == {"192.0.2.50"}
    assert trail.stats.dropped == 0
