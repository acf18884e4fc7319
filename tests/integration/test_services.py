"""The foundation on the real services: Kafka, Redis, chdb and Kafka Connect."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.clickhouse import open_store
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_connect import apply_connector, connector_status, delete_connector
from connectors.redis_store import FeatureStore, latest_of_everything
from deploy.local.processes import free_port
from schemas.codec import Codec, Message
from schemas.predictions import PredictionColumns
from streams.cli import main
from streams.settings import Settings
from tests.schemas.samples import SAMPLES

pytestmark = pytest.mark.integration


async def test_avro_records_through_the_broker(stack_settings: Settings, unique: str) -> None:
    topic = f"test.avro.{unique}"
    kafka = stack_settings.kafka()
    await ensure_topics(kafka, [TopicRequest(topic, 1, {})])
    codec = Codec()
    producer = kafka.producer()
    await producer.start()
    try:
        for name in ("metric_batch", "agent_event", "prediction_batch"):
            await producer.send_and_wait(topic, codec.encode(name, SAMPLES[name]), key=b"k")
        await producer.send_and_wait(topic, b"\x01garbage", key=b"k")
    finally:
        await producer.stop()
    consumer = kafka.consumer(topic, auto_offset_reset="earliest", group_id=unique)
    await consumer.start()
    try:
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < 4 and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                for m in batch:
                    message = Message(m.topic, m.partition, m.offset, m.key, m.value)
                    try:
                        got.append(codec.decode(m.value))
                    except ValueError:
                        got.append(codec.decode_message(message, "metric_batch"))
    finally:
        await consumer.stop()
    assert got[:3] == [(n, SAMPLES[n]) for n in ("metric_batch", "agent_event", "prediction_batch")]
    dead = got[3]
    assert dead.error_kind == "undecodable" and dead.offset == 3 and dead.value == b"\x01garbage"


async def test_redis_features_and_prediction_cache(stack_settings: Settings, unique: str) -> None:
    store = FeatureStore(stack_settings.feature_store_url, prediction_ttl_s=2)
    entity = f"host-{unique}"
    try:
        await store.put_features([dict(SAMPLES["feature_vector"], entity=entity)])
        await store.put_predictions([dict(SAMPLES["prediction_batch"], entity=entity)])
        features, missing = await store.features([entity, f"nobody-{unique}"])
        assert features == dict(SAMPLES["feature_vector"], entity=entity)
        assert missing is None
        (cached,) = await store.predictions([entity])
        assert cached is not None and cached["predictions"][0]["kind"] == "FORECAST"
        # A newer step without forecasts (they are refreshed every few minutes): the cache
        # answers its scores and the forecasts still standing.
        scores = PredictionColumns()
        scores.add("ANOMALY", ("detector", "1"), ["cpu_percent"], [0], [12.0], [0.4])
        newer = dict(SAMPLES["prediction_batch"], entity=entity, **scores.record())
        await store.put_predictions([dict(newer, event_time=newer["event_time"] + 10_000)])
        (latest,) = await store.predictions([entity])
        assert latest is not None
        assert [p["kind"] for p in latest["predictions"]] == ["ANOMALY", "FORECAST"]
        newest, forecasts, vectors = await store.online([entity, f"nobody-{unique}"])
        merged = [latest_of_everything(n, f) for n, f in zip(newest, forecasts, strict=True)]
        assert (merged, vectors) == ([latest, None], [features, None]), "one round trip"
        deadline = time.monotonic() + 10
        while (await store.predictions([entity]))[0] is not None:
            assert time.monotonic() < deadline, "the prediction cache entry never expired"
            await asyncio.sleep(0.2)
    finally:
        await store.close()


async def test_decoded_forecasts_are_kept_while_their_bytes_stay_the_same(
    stack_settings: Settings, unique: str
) -> None:
    store = FeatureStore(stack_settings.feature_store_url, decoded_forecasts=1)
    a, b = f"host-{unique}-a", f"host-{unique}-b"
    batch = dict(SAMPLES["prediction_batch"], entity=a)
    try:
        await store.put_predictions([batch])
        (first,), (again,) = [(await store.online([a]))[1] for _ in range(2)]
        assert first is not None and first is again, "read again with the same bytes: decoded once"
        assert first["values"] == batch["values"]
        changed = dict(batch, event_time=batch["event_time"] + 300_000)
        await store.put_predictions([changed])
        (newer,) = (await store.online([a]))[1]
        assert newer is not None and newer is not first
        assert newer["event_time"] == changed["event_time"]
        # One entry: another entity's forecasts take the place of the first's.
        await store.put_predictions([dict(batch, entity=b)])
        _, (of_a, of_b), _ = await store.online([a, b])
        assert of_a is not None and of_b is not None and of_b["entity"] == b
        (of_a_again,) = (await store.online([a]))[1]
        assert of_a_again is not of_a and of_a_again == of_a, "decoded again, the same record"
    finally:
        await store.close()


def test_clickhouse_table_created_filled_and_queried(tmp_path: Path) -> None:
    with open_store("", str(tmp_path / "chdb")) as store:
        store.command(
            "CREATE TABLE IF NOT EXISTS samples (entity String, ts DateTime64(3, 'UTC'), "
            "value Float64) ENGINE = MergeTree PARTITION BY toDate(ts) ORDER BY (entity, ts)"
        )
        rows = pa.table(
            {
                "entity": ["a", "a", "b"],
                "ts": pa.array(
                    [1_700_000_000_000, 1_700_000_001_000, 1_700_000_000_000], pa.timestamp("ms")
                ),
                "value": [1.0, 3.0, 10.0],
            }
        )
        store.insert_arrow("samples", rows)
        result = store.query(
            "SELECT entity, count(), avg(value) FROM samples GROUP BY entity ORDER BY entity"
        )
    assert result.rows == [("a", 2, 2.0), ("b", 1, 10.0)]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", _Receiver.received
    server.shutdown()


async def test_connect_http_sink_delivers_records(
    stack_settings: Settings,
    unique: str,
    http_receiver: tuple[str, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    url, received = http_receiver
    topic = f"test.connect.{unique}"
    kafka = stack_settings.kafka()
    await ensure_topics(kafka, [TopicRequest(topic, 1, {})])
    name = f"test-http-{unique}"
    apply_connector(
        stack_settings.kafka_connect_url,
        name,
        {
            "connector.class": "io.foresight.connect.http.HttpSinkConnector",
            "topics": topic,
            "tasks.max": "1",
            "http.url": f"{url}/hook",
            "http.headers": "Content-Type:application/json,X-Test:foresight",
            "consumer.override.auto.offset.reset": "earliest",
        },
    )
    try:
        producer = kafka.producer()
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(topic, json.dumps({"n": i}).encode())
        finally:
            await producer.stop()
        deadline = time.monotonic() + 60
        while len(received) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        if len(received) < 3:
            status = connector_status(stack_settings.kafka_connect_url, name)
            pytest.fail(f"only {len(received)} of 3 records arrived; connector: {status}")
    finally:
        delete_connector(stack_settings.kafka_connect_url, name)
    assert [json.loads(body) for _, _, body in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
    path, headers, _ = received[0]
    assert path == "/hook"
    assert headers["X-Test"] == "foresight"
    assert headers["Content-Type"] == "application/json"


def test_stack_status_json_is_healthy(
    stack_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stack", "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is True
    assert {s["name"] for s in report["services"]} == {
        "kafka",
        "connect",
        "schema-registry",
        "redis",
        "clickhouse",
    }


async def test_a_start_past_a_dead_bootstrap_host_still_logs_it(
    stack_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Held while the start ran, aiokafka's record of the host it could not reach comes out
    once the start succeeds through the next one: the operator still hears of it."""
    live = stack_settings.kafka()
    dead = f"127.0.0.1:{free_port()}"
    kafka = dataclasses.replace(live, bootstrap_servers=f"{dead},{live.bootstrap_servers}")
    with caplog.at_level(logging.WARNING, logger="aiokafka"):
        for _ in range(40):  # aiokafka shuffles the hosts: until it tried the dead one first
            producer = kafka.producer()
            await producer.start()
            await producer.stop()
            if caplog.records:
                break
    assert any(f'Unable connect to "{dead}"' in r.getMessage() for r in caplog.records)
