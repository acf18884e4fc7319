"""The ClickHouse sink: flattening, the README's queries, and the sink on real Kafka and chdb.

The integration tests run the sink as a subprocess (``python -m streams.cli sink clickhouse``)
on a temporary chdb folder and query it through its SQL endpoint, as other processes do: one
process can hold one chdb folder, and this one never opens it while a sink runs.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.clickhouse import ChdbStore
from connectors.clickhouse_schema import TABLE_FOR_SCHEMA, Consumed, create_tables
from connectors.clickhouse_sink import (
    SinkBatch,
    SinkUnavailableError,
    SqlError,
    ask_sink,
    jsonable,
)
from connectors.http.keys import READ, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from schemas.codec import Codec
from streams.commands.sql import format_table, run_sql
from streams.settings import Settings
from streams.worker_process import free_port
from tests.schemas.samples import SAMPLES

README = Path(__file__).resolve().parents[2] / "README.md"
TIME_FIELDS = ("event_time", "start_time", "starts_at", "emitted_at")


def _recent(name: str, now_ms: int, **changes: Any) -> dict[str, Any]:
    """A sample record of schema ``name`` at ``now_ms`` (older rows would fall to the TTL)."""
    record = copy.deepcopy(SAMPLES[name])
    for key in TIME_FIELDS:
        if key in record:
            record[key] = now_ms
    record.update(changes)
    return record


def _consumed(records: list[dict[str, Any]], topic: str = "t", partition: int = 0) -> Consumed:
    consumed = Consumed()
    for offset, record in enumerate(records):
        consumed.add(record, topic, partition, offset)
    return consumed


# -- flattening -------------------------------------------------------------------------------


def test_metric_batches_become_one_row_per_sample() -> None:
    first = _recent("metric_batch", 1_000, entity="a", labels={"region": "eu"})
    second = _recent(
        "metric_batch", 2_000, entity="b", labels={}, names=["x", "y", "z"], values=[1.0, 2.0, 3.0]
    )
    table = TABLE_FOR_SCHEMA["metric_batch"].flatten(_consumed([first, second], partition=4))
    assert table.column("entity").to_pylist() == ["a", "a", "b", "b", "b"]
    assert table.column("metric").to_pylist() == ["cpu_percent", "memory_percent", "x", "y", "z"]
    assert table.column("value").to_pylist() == [12.5, 40.0, 1.0, 2.0, 3.0]
    assert table.column("labels").to_pylist() == [[("region", "eu")]] * 2 + [[]] * 3
    assert table.column("offset").to_pylist() == [0, 0, 1, 1, 1]
    assert table.column("item").to_pylist() == [0, 1, 0, 1, 2]
    assert set(table.column("partition").to_pylist()) == {4}
    assert table.column("ts").type == pa.timestamp("ms", tz="UTC")
    assert table.column("ts").cast(pa.int64()).to_pylist() == [1_000, 1_000, 2_000, 2_000, 2_000]


def test_prediction_batches_become_one_row_per_prediction() -> None:
    anomaly = {
        "metric": "cpu_percent",
        "kind": "ANOMALY",
        "model": "hst",
        "model_version": "2",
        "horizon_s": 0,
        "value": 97.0,
        "score": 0.9,
        "lower": None,
        "upper": None,
    }
    record = _recent("prediction_batch", 5_000)
    record["predictions"].append(anomaly)
    empty = _recent("prediction_batch", 6_000, predictions=[])
    table = TABLE_FOR_SCHEMA["prediction_batch"].flatten(_consumed([record, empty]))
    assert table.num_rows == 2
    assert table.column("kind").to_pylist() == ["FORECAST", "ANOMALY"]
    assert table.column("lower").to_pylist() == [10.0, None]
    assert table.column("item").to_pylist() == [0, 1]
    assert table.column("prediction_id").to_pylist() == [record["prediction_id"]] * 2


@pytest.mark.parametrize("schema", sorted(TABLE_FOR_SCHEMA))
def test_every_table_gets_exactly_its_declared_columns(schema: str) -> None:
    spec = TABLE_FOR_SCHEMA[schema]
    table = spec.flatten(_consumed([_recent(schema, 1_000)] * 2))
    declared = [
        part.strip().split(" ")[0]
        for part in re.split(r",(?![^(]*\))", spec.columns + ", topic x, partition x, offset x")
    ] + ["item"]
    assert table.column_names == declared
    assert table.num_rows == 2 * spec.rows_of(_recent(schema, 1_000))


def test_undecodable_and_inconsistent_records_are_counted_and_skipped() -> None:
    codec = Codec()
    good = codec.encode("metric_batch", _recent("metric_batch", 1_000))
    uneven = codec.encode("metric_batch", _recent("metric_batch", 1_000, values=[1.0]))

    class Message:
        def __init__(self, offset: int, value: bytes) -> None:
            self.offset, self.value = offset, value

    batch = SinkBatch()
    tp = TopicPartition("t", 0)
    skipped = batch.add(codec, tp, [Message(7, good), Message(8, b"\x01junk"), Message(9, uneven)])
    assert skipped == 2
    assert batch.rows == 2
    assert batch.by_schema["metric_batch"].offsets == [7]
    assert batch.next_offsets == {tp: 10}


def test_query_values_become_json() -> None:
    assert jsonable([("region", "eu")]) == {"region": "eu"}
    assert jsonable(b"\xffraw") == "\\xffraw"
    assert jsonable([1, [("k", 2.0)]]) == [1, {"k": 2.0}]


def test_table_output_aligns_columns() -> None:
    from connectors.clickhouse import QueryResult

    text = format_table(QueryResult(["entity", "risk"], [("web-1", 0.97), ("db-10", None)]))
    assert text.splitlines() == [
        "entity  risk",
        "------  ----",
        "web-1   0.97",
        "db-10   NULL",
        "(2 rows)",
    ]


# -- the README's queries ---------------------------------------------------------------------


def readme_queries() -> list[str]:
    """The ```sql blocks of the README's "Querying with SQL" section."""
    text = README.read_text()
    start = text.index("## Querying with SQL")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


def test_readme_queries_run_on_the_sink_tables(tmp_path: Path) -> None:
    queries = readme_queries()
    assert len(queries) >= 5, "the README lost its SQL examples"
    now = int(time.time() * 1000)
    minute = 60_000
    forecast = _recent("prediction_batch", now - 10 * minute)
    forecast["predictions"][0]["horizon_s"] = 300
    risky = _recent("prediction_batch", now - minute, prediction_id="web-1@risk")
    risky["predictions"] = [
        dict(forecast["predictions"][0], kind=kind, score=score, horizon_s=600)
        for kind, score in (("FAILURE_RISK", 0.8), ("ANOMALY", 0.2))
    ]
    records = {
        "metric_batch": [_recent("metric_batch", now - 5 * minute, values=[11.0, 40.0])],
        "prediction_batch": [forecast, risky],
        "label": [_recent("label", now + minute)],
        "alert": [
            _recent("alert", now - 2 * minute),
            _recent("alert", now - minute, status="RESOLVED", ends_at=now - minute),
        ],
        "agent_event": [
            _recent("agent_event", now - minute, phase="SUCCEEDED", error_class=None),
            _recent("agent_event", now - minute, agent="agent-02"),
        ],
    }
    store = ChdbStore(str(tmp_path / "chdb"))
    try:
        create_tables(store, ttl_days=30)
        for schema, batch in records.items():
            spec = TABLE_FOR_SCHEMA[schema]
            store.insert_arrow(spec.name, spec.flatten(_consumed(batch)))
        answers = [store.query(sql) for sql in queries]
    finally:
        store.close()
    for sql, answer in zip(queries, answers, strict=True):
        assert answer.rows, f"README query returned no rows on the sample data:\n{sql}"
    accuracy = answers[3].as_dicts()
    assert [(a["kind"], a["tp"], a["fn"]) for a in accuracy] == [
        ("ANOMALY", 0, 1),
        ("FAILURE_RISK", 1, 0),
    ]


# -- the sink on the real stack ---------------------------------------------------------------


class SinkProcess:
    """``foresight sink clickhouse`` in a subprocess, on its own chdb folder, ports and keys
    file; ``key`` (read role) is also in the ``credentials`` file, for ``run_sql``."""

    def __init__(self, settings: Settings, folder: Path, topic: str, group: str, **env: str):
        self.sql_port = free_port()
        self.log = folder.parent / f"sink-{group}-{time.monotonic_ns()}.log"
        keys = KeysFile(folder.parent / "keys.json")
        self.key = keys.create(f"sink-test-{time.monotonic_ns()}", [READ])[1]
        self.credentials = folder.parent / f"credentials-{time.monotonic_ns()}"
        self.credentials.write_text(self.key)
        environ = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
            CLICKHOUSE_URL="",
            FORESIGHT_CHDB_PATH=str(folder),
            FORESIGHT_SINK_SQL_PORT=str(self.sql_port),
            FORESIGHT_SINK_METRICS_PORT=str(free_port()),
            FORESIGHT_KEYS_FILE=str(keys.path),
            FORESIGHT_CREDENTIALS_FILE=str(self.credentials),
            **env,
        )
        command = [sys.executable, "-m", "streams.cli", "sink", "clickhouse"]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [*command, "--topics", topic, "--group", group],
                env=environ,
                cwd=folder.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        return ask_sink("127.0.0.1", self.sql_port, statement, self.key).rows

    def count(self, table: str) -> int:
        return int(self.sql(f"SELECT count() FROM {table}")[0][0])

    def wait_until(self, what: str, condition: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the sink exited ({self.process.returncode}):\n{self.log.read_text()}")
            try:
                if condition():
                    return
            except SinkUnavailableError:
                pass  # still opening the store
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; sink log:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=60)


@pytest.fixture
def sinks() -> Iterator[list[SinkProcess]]:
    """Sinks a test starts; any still running at the end are killed."""
    started: list[SinkProcess] = []
    yield started
    for sink in started:
        if sink.process.poll() is None:
            sink.process.kill()
            sink.process.wait()


async def _produce(
    bootstrap: str, topic: str, partitions: int, records: list[tuple[str, dict[str, Any]]]
) -> None:
    await ensure_topics(bootstrap, [TopicRequest(topic, partitions, {})])
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i, (schema, record) in enumerate(records):
            await producer.send(topic, codec.encode(schema, record), partition=i % partitions)
        await producer.send(topic, b"\x01not avro", partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _committed_and_end(
    bootstrap: str, topic: str, group: str, partitions: int
) -> tuple[int, int]:
    """Sum of the group's committed offsets and of the end offsets of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = [await consumer.committed(tp) or 0 for tp in tps]
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return sum(committed), sum(end.values())


def _batches(count: int, samples: int, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "metric_batch",
            _recent(
                "metric_batch",
                now_ms + i,
                entity=f"host-{i % 7}",
                names=[f"m{j}" for j in range(samples)],
                values=[float(i + j) for j in range(samples)],
            ),
        )
        for i in range(count)
    ]


@pytest.mark.integration
def test_records_are_queryable_and_offsets_committed_on_sigterm(
    stack_settings: Settings, unique: str, tmp_path: Path, sinks: list[SinkProcess]
) -> None:
    bootstrap = stack_settings.kafka_bootstrap_servers
    topic, group = f"test.sink.{unique}", f"test-sink-{unique}"
    now = int(time.time() * 1000)
    predictions = [
        ("prediction_batch", _recent("prediction_batch", now + i, prediction_id=f"p{i}"))
        for i in range(20)
    ]
    asyncio.run(_produce(bootstrap, topic, 3, _batches(30, 2, now) + predictions))
    sink = SinkProcess(stack_settings, tmp_path / "chdb", topic, group)
    sinks.append(sink)
    sink.wait_until(
        "60 samples and 20 predictions",
        lambda: sink.count("metric_samples") == 60 and sink.count("predictions") == 20,
    )
    rows = sink.sql(
        "SELECT entity, metric, value, labels FROM metric_samples ORDER BY value, entity LIMIT 3"
    )
    assert rows == [
        ("host-0", "m0", 0.0, {"region": "eu"}),
        ("host-0", "m1", 1.0, {"region": "eu"}),
        ("host-1", "m0", 1.0, {"region": "eu"}),
    ]
    assert sink.sql(
        "SELECT kind, horizon_s, lower FROM predictions WHERE prediction_id = 'p3'"
    ) == [("FORECAST", 300, 10.0)]
    settings = stack_settings.replace(
        sink_sql_port=sink.sql_port,
        chdb_path=str(tmp_path / "x"),
        credentials_file=str(sink.credentials),
    )
    assert run_sql("SELECT sum(n) FROM metric_minutes", settings).rows == [(60,)]
    with pytest.raises(SqlError, match="UNKNOWN_TABLE"):
        run_sql("SELECT * FROM no_such_table", settings)
    assert sink.stop() == 0
    assert "1 skipped" in sink.log.read_text()
    committed, end = asyncio.run(_committed_and_end(bootstrap, topic, group, 3))
    assert committed == end == 51


@pytest.mark.integration
def test_kill_9_mid_stream_then_restart_stores_every_sample_once(
    stack_settings: Settings, unique: str, tmp_path: Path, sinks: list[SinkProcess]
) -> None:
    bootstrap = stack_settings.kafka_bootstrap_servers
    topic, group = f"test.sink.kill.{unique}", f"test-sink-kill-{unique}"
    records, samples = 6000, 10
    expected = records * samples
    asyncio.run(_produce(bootstrap, topic, 3, _batches(records, samples, int(time.time() * 1000))))
    small_batches = {"FORESIGHT_SINK_BATCH_ROWS": "300", "FORESIGHT_SINK_BATCH_SECONDS": "0.2"}
    folder = tmp_path / "chdb"
    first = SinkProcess(stack_settings, folder, topic, group, **small_batches)
    sinks.append(first)
    first.wait_until("some inserts", lambda: first.count("metric_samples") >= 3000)
    stored = first.count("metric_samples")
    # Kill right after an insert shows, which is most often before its offsets are committed.
    first.wait_until("another insert", lambda: first.count("metric_samples") > stored)
    first.stop(signal.SIGKILL)
    committed, end = asyncio.run(_committed_and_end(bootstrap, topic, group, 3))
    assert committed < end, "the kill landed after everything was committed; produce more"

    second = SinkProcess(stack_settings, folder, topic, group, **small_batches)
    sinks.append(second)

    def drained() -> bool:
        done = asyncio.run(_committed_and_end(bootstrap, topic, group, 3))
        return done[0] == done[1]

    second.wait_until("the restarted sink to commit everything", drained, timeout=180)
    assert second.sql(
        "SELECT count(), uniqExact(topic, partition, offset, item) FROM metric_samples"
    ) == [(expected, expected)]
    assert second.sql("SELECT sum(n) FROM metric_minutes") == [(expected,)]
    assert second.stop() == 0


@pytest.mark.integration
def test_replayed_and_lost_rows_are_reconciled_by_kafka_coordinates(
    stack_settings: Settings, unique: str, tmp_path: Path, sinks: list[SinkProcess]
) -> None:
    """A deterministic replay: what a crash between insert and commit leaves, and more.

    A second group reads the whole topic again into the same folder, after some stored rows
    were deleted (as an insert cut short between its parts would leave them): the sink must
    add exactly the missing rows.
    """
    bootstrap = stack_settings.kafka_bootstrap_servers
    topic = f"test.sink.replay.{unique}"
    records, samples = 400, 5
    expected = records * samples
    asyncio.run(_produce(bootstrap, topic, 2, _batches(records, samples, int(time.time() * 1000))))
    folder = tmp_path / "chdb"
    first = SinkProcess(stack_settings, folder, topic, f"test-replay-a-{unique}")
    sinks.append(first)
    first.wait_until("every sample", lambda: first.count("metric_samples") == expected)
    first.sql(
        "ALTER TABLE metric_samples DELETE WHERE offset % 3 = 0 AND item = 1 "
        "SETTINGS mutations_sync = 1"
    )
    missing = expected - first.count("metric_samples")
    assert missing > 0
    assert first.stop() == 0

    second = SinkProcess(stack_settings, folder, topic, f"test-replay-b-{unique}")
    sinks.append(second)
    second.wait_until(
        "the replay to be committed",
        lambda: (
            asyncio.run(_committed_and_end(bootstrap, topic, f"test-replay-b-{unique}", 2))[0]
            == records + 1
        ),
    )
    assert second.sql(
        "SELECT count(), uniqExact(topic, partition, offset, item) FROM metric_samples"
    ) == [(expected, expected)]
    assert second.stop() == 0
    assert f"{expected - missing:,} already stored" in second.log.read_text()


@pytest.mark.integration
def test_a_step_sent_again_by_a_restarted_worker_is_stored_once(
    stack_settings: Settings, unique: str, tmp_path: Path, sinks: list[SinkProcess]
) -> None:
    """A worker killed between producing a step and checkpointing it sends the step again
    after its restart, possibly with other values (its models restored a little older): the
    store keeps one row per prediction, feature vector and alert change, the first."""
    bootstrap = stack_settings.kafka_bootstrap_servers
    topic = f"test.sink.repeat.{unique}"
    now = int(time.time() * 1000)
    step = [
        ("prediction_batch", _recent("prediction_batch", now, prediction_id="web-1@1")),
        ("feature_vector", _recent("feature_vector", now)),
        ("alert", _recent("alert", now)),
    ]
    again = copy.deepcopy(step)
    again[0][1]["predictions"][0]["value"] = 99.0
    asyncio.run(_produce(bootstrap, topic, 1, step + again))
    group = f"test-repeat-{unique}"
    sink = SinkProcess(stack_settings, tmp_path / "chdb", topic, group)
    sinks.append(sink)
    sink.wait_until("the first step", lambda: sink.count("alerts") == 1)
    asyncio.run(_produce(bootstrap, topic, 1, again))  # and once more, in a later insert

    def drained() -> bool:
        committed, end = asyncio.run(_committed_and_end(bootstrap, topic, group, 1))
        return committed == end

    sink.wait_until("every record read", drained)
    assert sink.sql("SELECT prediction_id, value FROM predictions") == [
        ("web-1@1", step[0][1]["predictions"][0]["value"])
    ]
    assert sink.count("features") == 1
    assert sink.count("alerts") == 1
    assert sink.stop() == 0
