"""The ClickHouse sink: flattening, the README's queries, and the sink on real Kafka and chdb.

The integration tests run the sink as a subprocess (``python -m streams.cli sink clickhouse``)
on a temporary chdb folder and query it through its SQL endpoint, as other processes do: one
process can hold one chdb folder, and this one never opens it while a sink runs. What the
endpoint refuses is tested statement by statement in ``test_user_sql.py``; here, that the
endpoint is that guard, on loopback, and that a slow query does not hold up inserts.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from aiokafka import TopicPartition

from connectors.clickhouse import ChdbStore, QueryResult, sql_string_lists
from connectors.clickhouse_schema import TABLE_FOR_SCHEMA, Consumed, TableSpec, create_tables
from connectors.clickhouse_sink import (
    ClickHouseSink,
    SinkBatch,
    SinkUnavailableError,
    ask_sink,
    jsonable,
)
from connectors.http.keys import READ, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from connectors.user_sql import SqlError, SqlLimits, SqlRefusedError, UserSql
from deploy.local.processes import free_port
from schemas.codec import PROBE_HEADER, Codec
from schemas.predictions import PredictionColumns
from streams.commands.sql import format_table, run_sql
from streams.settings import Settings
from tests.schemas.samples import SAMPLES, V1_SAMPLES

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


def test_prediction_batches_of_either_version_become_one_row_per_prediction() -> None:
    record = _recent("prediction_batch", 5_000)
    columns = PredictionColumns.of(record)
    at = columns.add("ANOMALY", ("entity_anomaly", "1"), ["*"], [0], [0.9], [0.9])
    columns.explain(at, [("cpu_percent", 0.7), ("memory_percent", -0.1)])
    empty = _recent("prediction_batch", 6_000, **PredictionColumns().record())
    old = dict(copy.deepcopy(V1_SAMPLES["prediction_batch"]), event_time=7_000)
    table = TABLE_FOR_SCHEMA["prediction_batch"].flatten(_consumed([record, empty, old]))
    assert table.num_rows == 3
    assert table.column("kind").to_pylist() == ["FORECAST", "ANOMALY", "FORECAST"]
    assert table.column("model").to_pylist() == ["seasonal", "entity_anomaly", "seasonal"]
    assert table.column("lower").to_pylist() == [10.0, None, 10.0]
    assert table.column("item").to_pylist() == [0, 1, 0]
    assert table.column("offset").to_pylist() == [0, 0, 2]
    assert table.column("prediction_id").to_pylist()[:2] == [record["prediction_id"]] * 2
    assert table.column("driver_features").to_pylist() == [
        [], ["cpu_percent", "memory_percent"], []
    ]  # fmt: skip
    assert table.column("driver_contributions").to_pylist() == [[], [0.7, -0.1], []]


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
    """A readiness probe (``group_ready``'s) is passed over without a count: it is no record."""
    codec = Codec()
    good = codec.encode("metric_batch", _recent("metric_batch", 1_000))
    uneven = codec.encode("metric_batch", _recent("metric_batch", 1_000, values=[1.0]))

    class Message:
        def __init__(self, offset: int, value: bytes, probe: bool = False) -> None:
            self.offset, self.value = offset, value
            self.headers = ((PROBE_HEADER, b"1"),) if probe else ()

    batch = SinkBatch()
    tp = TopicPartition("t", 0)
    skipped = batch.add(
        codec,
        tp,
        [Message(7, good), Message(8, b"\x01junk"), Message(9, uneven), Message(10, b"", True)],
    )
    assert skipped == 2
    assert batch.rows == 2
    assert batch.by_schema["metric_batch"].offsets == [7]
    assert batch.next_offsets == {tp: 11}


def test_query_values_become_json() -> None:
    assert jsonable([("region", "eu")]) == {"region": "eu"}
    assert jsonable(b"\xffraw") == "\\xffraw"
    assert jsonable([1, [("k", 2.0)]]) == [1, {"k": 2.0}]


def test_table_output_aligns_columns() -> None:
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


def _risky() -> dict[str, Any]:
    """Prediction columns of a step at risk: a failure risk and an anomaly score."""
    columns = PredictionColumns()
    for kind, score in (("FAILURE_RISK", 0.8), ("ANOMALY", 0.2)):
        columns.add(kind, ("seasonal", "1"), ["cpu_percent"], [600], [13.0], [score])
    at = columns.add("FAILURE_RISK", ("failure_risk", "2"), ["entity"], [600], [0.9], [0.9])
    columns.explain(at, [("cpu_percent:15m:slope", 1.2), ("cpu_percent:1m:last", -0.3)])
    return columns.record()


def test_ids_over_the_query_size_limit_are_looked_up_in_lists_it_accepts(tmp_path: Path) -> None:
    """The sink's repeat check names a batch's ids in IN lists: 20,000 ids of 30 characters
    are over ClickHouse's max_query_size in one list (the demo's sink stalled on it)."""
    ids = [f"calm-8b0be5db@{i:016d}" for i in range(20_000)]
    assert len(", ".join(f"'{i}'" for i in ids)) > 262_144
    store = ChdbStore(str(tmp_path / "chdb"))
    try:
        found = [
            row[0]
            for ids_sql in sql_string_lists(ids)
            for row in store.query(
                f"SELECT count() FROM numbers(1) WHERE 'x' NOT IN ({ids_sql})"
            ).rows
        ]
    finally:
        store.close()
    assert len(found) > 1 and all(n == 1 for n in found)


def test_readme_queries_run_on_the_sink_tables(tmp_path: Path) -> None:
    queries = readme_queries()
    assert len(queries) >= 5, "the README lost its SQL examples"
    now = int(time.time() * 1000)
    minute = 60_000
    forecast = _recent("prediction_batch", now - 10 * minute)
    risky = _recent("prediction_batch", now - minute, prediction_id="web-1@risk", **_risky())
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
        user_sql = UserSql(store.session, SqlLimits(timeout_s=30.0, max_rows=1000))
        guarded = [user_sql.query(sql) for sql in queries]
    finally:
        store.close()
    for sql, answer in zip(queries, answers, strict=True):
        assert answer.rows, f"README query returned no rows on the sample data:\n{sql}"
    assert guarded == answers, "the SQL guard changed what a README query answers"
    accuracy = answers[3].as_dicts()
    assert [(a["model"], a["kind"], a["tp"], a["fn"]) for a in accuracy] == [
        ("failure_risk", "FAILURE_RISK", 1, 0),
        ("seasonal", "ANOMALY", 0, 1),
        ("seasonal", "FAILURE_RISK", 1, 0),
    ]
    drivers = answers[-2].as_dicts()
    assert [(d["driver"], d["contribution"]) for d in drivers] == [
        ("cpu_percent:15m:slope", 1.2), ("cpu_percent:1m:last", -0.3)
    ]  # fmt: skip
    (arm,) = answers[-1].as_dicts()
    assert (arm["version"], arm["entities"], arm["alarms"], arm["caught"]) == ("2", 1, 1, 1)


@pytest.mark.parametrize(
    ("schema", "query", "rows"),
    [
        (
            "routing_decision",
            "SELECT task_id, runner_up, reason, recommended_concurrency FROM routing_decisions",
            [("t-9", None, "", None),
             ("t-9", "agent-01", SAMPLES["routing_decision"]["reason"], 3)],
        ),
        (
            "agent_event",
            "SELECT task_id, workflow_id, parent_task_id, step FROM agent_events",
            [("t-1", None, None, None), ("t-1", "wf-7", "t-0", 2)],
        ),
    ],
)  # fmt: skip
def test_a_table_of_an_earlier_release_gets_the_new_columns(
    tmp_path: Path, schema: str, query: str, rows: list[tuple[Any, ...]]
) -> None:
    spec = TABLE_FOR_SCHEMA[schema]
    old_columns = spec.columns.split(", " + spec.added[0])[0]
    now = int(time.time() * 1000)
    store = ChdbStore(str(tmp_path / "chdb"))
    try:
        store.command(replace(spec, columns=old_columns, added=()).ddl(30))
        store.insert_arrow(spec.name, _old_rows(spec, schema, now - 1))
        create_tables(store, ttl_days=30)
        create_tables(store, ttl_days=30)  # idempotent
        store.insert_arrow(spec.name, spec.flatten(_consumed([_recent(schema, now)])))
        stored = store.query(f"{query} ORDER BY ts").rows
    finally:
        store.close()
    assert stored == rows


def test_a_predictions_table_of_an_earlier_release_gets_the_driver_columns(
    tmp_path: Path,
) -> None:
    spec = TABLE_FOR_SCHEMA["prediction_batch"]
    old_columns = spec.columns.split(", " + spec.added[0])[0]
    now = int(time.time() * 1000)
    explained = _recent("prediction_batch", now, prediction_id="web-1@new")
    columns = PredictionColumns.of(explained)
    columns.explain(0, [("cpu_percent", 0.5)])
    store = ChdbStore(str(tmp_path / "chdb"))
    try:
        store.command(replace(spec, columns=old_columns, added=()).ddl(30))
        old = spec.flatten(_consumed([_recent("prediction_batch", now - 1)]))
        store.insert_arrow(spec.name, old.drop_columns([c.split(" ")[0] for c in spec.added]))
        create_tables(store, ttl_days=30)
        create_tables(store, ttl_days=30)  # idempotent
        store.insert_arrow(spec.name, spec.flatten(_consumed([explained])))
        rows = store.query(
            "SELECT prediction_id, driver_features, driver_contributions FROM predictions "
            "ORDER BY ts"
        ).rows
    finally:
        store.close()
    assert [(i, list(f), list(c)) for i, f, c in rows] == [
        (SAMPLES["prediction_batch"]["prediction_id"], [], []),
        ("web-1@new", ["cpu_percent"], [0.5]),
    ]


def _old_rows(spec: TableSpec, schema: str, now_ms: int) -> pa.Table:
    """A row as the table of the schema's first version held it."""
    table = spec.flatten(_consumed([_recent(schema, now_ms)]))
    added = [c.split(" ")[0] for c in spec.added]
    return table.drop_columns(added)


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
        return ask_sink(self.sql_port, statement, self.key).rows

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


def _on_folder(folder: Path, sql: str) -> list[list[Any]]:
    """Run ``sql`` as is on a chdb folder no sink holds, in a process of its own.

    The sink's endpoint runs reads only; a test that stages damage (deleted rows) does it the
    way an operator would, with the sink stopped.
    """
    script = (
        "import json, sys\n"
        "from connectors.clickhouse import ChdbStore\n"
        "store = ChdbStore(sys.argv[1])\n"
        "print(json.dumps(store.query(sys.argv[2]).rows))\n"
        "store.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), sql], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows: list[list[Any]] = json.loads(done.stdout)
    return rows


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux's /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # IPv4 is one little-endian word; IPv6 is four of them.
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
                found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


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
    kafka: KafkaConfig, topic: str, partitions: int, records: list[tuple[str, dict[str, Any]]]
) -> None:
    await ensure_topics(kafka, [TopicRequest(topic, partitions, {})])
    codec = Codec()
    producer = kafka.producer(linger_ms=5)
    await producer.start()
    try:
        for i, (schema, record) in enumerate(records):
            await producer.send(topic, codec.encode(schema, record), partition=i % partitions)
        await producer.send(topic, b"\x01not avro", partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _committed_and_end(
    kafka: KafkaConfig, topic: str, group: str, partitions: int
) -> tuple[int, int]:
    """Sum of the group's committed offsets and of the end offsets of ``topic``."""
    consumer = kafka.consumer(group_id=group)
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
    kafka = stack_settings.kafka()
    topic, group = f"test.sink.{unique}", f"test-sink-{unique}"
    now = int(time.time() * 1000)
    predictions = [
        ("prediction_batch", _recent("prediction_batch", now + i, prediction_id=f"p{i}"))
        for i in range(20)
    ]
    asyncio.run(_produce(kafka, topic, 3, _batches(30, 2, now) + predictions))
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
    committed, end = asyncio.run(_committed_and_end(kafka, topic, group, 3))
    assert committed == end == 51


@pytest.mark.integration
def test_kill_9_mid_stream_then_restart_stores_every_sample_once(
    stack_settings: Settings, unique: str, tmp_path: Path, sinks: list[SinkProcess]
) -> None:
    kafka = stack_settings.kafka()
    topic, group = f"test.sink.kill.{unique}", f"test-sink-kill-{unique}"
    records, samples = 6000, 10
    expected = records * samples
    asyncio.run(_produce(kafka, topic, 3, _batches(records, samples, int(time.time() * 1000))))
    small_batches = {"FORESIGHT_SINK_BATCH_ROWS": "300", "FORESIGHT_SINK_BATCH_SECONDS": "0.2"}
    folder = tmp_path / "chdb"
    first = SinkProcess(stack_settings, folder, topic, group, **small_batches)
    sinks.append(first)
    first.wait_until("some inserts", lambda: first.count("metric_samples") >= 3000)
    stored = first.count("metric_samples")
    # Kill right after an insert shows, which is most often before its offsets are committed.
    first.wait_until("another insert", lambda: first.count("metric_samples") > stored)
    first.stop(signal.SIGKILL)
    committed, end = asyncio.run(_committed_and_end(kafka, topic, group, 3))
    assert committed < end, "the kill landed after everything was committed; produce more"

    second = SinkProcess(stack_settings, folder, topic, group, **small_batches)
    sinks.append(second)

    def drained() -> bool:
        done = asyncio.run(_committed_and_end(kafka, topic, group, 3))
        return done[0] == done[1]

    second.wait_until("the restarted sink to commit everything", drained, timeout=180)
    assert second.sql(
        "SELECT count(), uniqExact(topic, partition, offset, item) FROM metric_samples"
    ) == [(expected, expected)]
    # ClickHouse commits a batch's metric_samples part, then its metric_minutes part: a kill
    # between the two loses that one batch from the rollup (a known gap: the restart finds the
    # samples stored and does not insert them again). Never more, and never counted twice.
    rolled = second.sql("SELECT sum(n) FROM metric_minutes")[0][0]
    assert expected - int(small_batches["FORESIGHT_SINK_BATCH_ROWS"]) <= rolled <= expected
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
    kafka = stack_settings.kafka()
    topic = f"test.sink.replay.{unique}"
    records, samples = 400, 5
    expected = records * samples
    asyncio.run(_produce(kafka, topic, 2, _batches(records, samples, int(time.time() * 1000))))
    folder = tmp_path / "chdb"
    first = SinkProcess(stack_settings, folder, topic, f"test-replay-a-{unique}")
    sinks.append(first)
    first.wait_until("every sample", lambda: first.count("metric_samples") == expected)
    assert first.stop() == 0
    _on_folder(
        folder,
        "ALTER TABLE metric_samples DELETE WHERE offset % 3 = 0 AND item = 1 "
        "SETTINGS mutations_sync = 1",
    )
    missing = expected - _on_folder(folder, "SELECT count() FROM metric_samples")[0][0]
    assert missing > 0

    second = SinkProcess(stack_settings, folder, topic, f"test-replay-b-{unique}")
    sinks.append(second)
    second.wait_until(
        "the replay to be committed",
        lambda: (
            asyncio.run(_committed_and_end(kafka, topic, f"test-replay-b-{unique}", 2))[0]
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
    kafka = stack_settings.kafka()
    topic = f"test.sink.repeat.{unique}"
    now = int(time.time() * 1000)
    step = [
        ("prediction_batch", _recent("prediction_batch", now, prediction_id="web-1@1")),
        ("feature_vector", _recent("feature_vector", now)),
        ("alert", _recent("alert", now)),
    ]
    again = copy.deepcopy(step)
    again[0][1]["values"][0] = 99.0
    asyncio.run(_produce(kafka, topic, 1, step + again))
    group = f"test-repeat-{unique}"
    sink = SinkProcess(stack_settings, tmp_path / "chdb", topic, group)
    sinks.append(sink)
    sink.wait_until("the first step", lambda: sink.count("alerts") == 1)
    asyncio.run(_produce(kafka, topic, 1, again))  # and once more, in a later insert

    def drained() -> bool:
        committed, end = asyncio.run(_committed_and_end(kafka, topic, group, 1))
        return committed == end

    sink.wait_until("every record read", drained)
    assert sink.sql("SELECT prediction_id, value FROM predictions") == [
        ("web-1@1", step[0][1]["values"][0])
    ]
    assert sink.count("features") == 1
    assert sink.count("alerts") == 1


class SlowRecoveryStore(ChdbStore):
    """chdb whose recovery query (the stored offsets) takes longer than a batch's wait."""

    def query(self, sql: str) -> QueryResult:
        if "max(offset)" in sql:
            time.sleep(3.0)
        return super().query(sql)


@pytest.mark.integration
def test_no_batch_goes_in_before_the_stored_offsets_are_known(
    stack_settings: Settings, unique: str, tmp_path: Path
) -> None:
    """aiokafka fetches from new partitions while the sink still reads what is stored.

    A second group replays a stored topic with a recovery slower than ``batch_seconds``: its
    first batch must wait for the recovery and be dropped as already stored, not inserted again.
    """
    kafka = stack_settings.kafka()
    topic, folder = f"test.sink.recovery.{unique}", str(tmp_path / "chdb")
    asyncio.run(_produce(kafka, topic, 1, _batches(100, 2, int(time.time() * 1000))))

    async def store_all(group: str) -> ClickHouseSink:
        sink = ClickHouseSink(
            kafka=kafka,
            topics=[topic],
            group_id=group,
            store_factory=lambda: SlowRecoveryStore(folder),
            batch_rows=50_000,
            batch_seconds=1.0,
            ttl_days=30,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(sink.run(stop))
        deadline = time.monotonic() + 90
        while (await _committed_and_end(kafka, topic, group, 1))[0] < 101:
            assert not running.done(), running.result()
            assert time.monotonic() < deadline, "the sink did not commit the topic in time"
            await asyncio.sleep(0.1)
        stop.set()
        await running
        return sink

    first = asyncio.run(store_all(f"test-recovery-a-{unique}"))
    second = asyncio.run(store_all(f"test-recovery-b-{unique}"))
    assert (first.stats.rows_inserted, second.stats.rows_inserted) == (200, 0)
    assert second.stats.rows_already_stored == 200
    store = ChdbStore(folder)
    try:
        assert store.query("SELECT count() FROM metric_samples").rows == [(200,)]
    finally:
        store.close()


@pytest.mark.integration
def test_the_sql_endpoint_listens_on_loopback_only_and_answers_reads_only(
    stack_settings: Settings, unique: str, tmp_path: Path, sinks: list[SinkProcess]
) -> None:
    """Finding 7's attacks, through the running sink, with FORESIGHT_BIND_HOST=0.0.0.0."""
    topic, group = f"test.sink.sql.{unique}", f"test-sink-sql-{unique}"
    now = int(time.time() * 1000)
    asyncio.run(_produce(stack_settings.kafka(), topic, 1, _batches(5, 2, now)))
    folder = tmp_path / "chdb"
    sink = SinkProcess(stack_settings, folder, topic, group, FORESIGHT_BIND_HOST="0.0.0.0")
    sinks.append(sink)
    sink.wait_until("the records", lambda: sink.count("metric_samples") == 10)
    assert _listening_addresses(sink.sql_port) == {"127.0.0.1"}
    written = tmp_path / "written"
    attacks = {
        "SELECT * FROM file('/etc/shadow', 'LineAsString')": r"function file\(\)",
        f"INSERT INTO FUNCTION file('{written}', 'CSV') SELECT 1": "not a read",
        "SELECT * FROM url('http://127.0.0.1:8083/connectors', 'LineAsString')": r"url\(\)",
        "DROP TABLE metric_samples": "not a read",
    }
    for attack, reason in attacks.items():
        with pytest.raises(SqlRefusedError, match=reason):
            sink.sql(attack)
    assert not written.exists()
    assert sink.count("metric_samples") == 10
    for query in readme_queries():
        sink.sql(query)  # every README query runs through the endpoint (rows or none)
    assert sink.stop() == 0


@pytest.mark.integration
def test_a_slow_query_neither_holds_up_inserts_nor_runs_past_its_limit(
    stack_settings: Settings, unique: str, tmp_path: Path, sinks: list[SinkProcess]
) -> None:
    """Finding 6: a query that runs to its time limit, while records keep being stored.

    The query would run for hours; the sink's limit stops it after 20 s. Records produced
    while it runs must be stored before it is stopped: inserts do not wait for it.
    """
    kafka = stack_settings.kafka()
    topic, group = f"test.sink.slow.{unique}", f"test-sink-slow-{unique}"
    now = int(time.time() * 1000)
    asyncio.run(_produce(kafka, topic, 2, _batches(10, 2, now)))
    sink = SinkProcess(
        stack_settings, tmp_path / "chdb", topic, group, FORESIGHT_SQL_TIMEOUT_S="20"
    )
    sinks.append(sink)
    sink.wait_until("the first records", lambda: sink.count("metric_samples") == 20)
    heavy = (
        "SELECT count() FROM (SELECT number % 1000003 AS k, count() "
        "FROM numbers(1000000000001) GROUP BY k)"
    )
    outcome: dict[str, BaseException] = {}

    def slow_query() -> None:
        try:
            sink.sql(heavy)
        except SqlError as error:
            outcome["error"] = error

    slow = threading.Thread(target=slow_query, name="slow-query")
    slow.start()
    running = (
        "SELECT count() FROM system.processes "
        "WHERE query LIKE '%numbers(1000000000001)%' AND query NOT LIKE '%system.processes%'"
    )
    sink.wait_until("the slow query to run", lambda: sink.sql(running) == [(1,)])
    asyncio.run(_produce(kafka, topic, 2, _batches(200, 5, now + 1000)))
    sink.wait_until(
        "records produced during the slow query", lambda: sink.count("metric_samples") == 1020
    )
    assert slow.is_alive(), "the slow query ended before the inserts were seen"
    slow.join(timeout=120)
    assert "stopped at the 20 s limit (FORESIGHT_SQL_TIMEOUT_S)" in str(outcome["error"])
    assert sink.stop() == 0
