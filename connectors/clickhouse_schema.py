"""The ClickHouse tables the sink fills: their DDL, and how decoded records become their rows.

One table per record type, each row carrying the Kafka coordinates it came from (``topic``,
``partition``, ``offset``, and ``item``, its index inside the record), which make a row's
identity: the sink uses them to insert every record exactly once (see
:mod:`connectors.clickhouse_sink`). Columnar records are flattened, a MetricBatch into one row
per sample and a PredictionBatch into one row per prediction, with numpy and Arrow takes rather
than a Python loop per row.

Tables are MergeTree, partitioned by day of event time, ordered by entity and time, and
expire after ``ttl_days`` (rows already older than that are dropped on insert). On top:

* ``metric_minutes``: per-minute count, sum, min and max of every metric of every entity,
  kept by a materialised view as samples arrive (AggregatingMergeTree);
* ``model_daily_accuracy``: per model version and day, how ANOMALY and FAILURE_RISK
  predictions fared against ``labels``. A plain view, not a materialised one: labels arrive
  late, so accuracy must be computed when asked, not when the prediction is stored.

The same statements run on chdb and on a ClickHouse server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from connectors.clickhouse import ClickHouseStore
from models.features import vector_names
from schemas.predictions import DRIVERS, prediction_count

Record = dict[str, Any]

_MS_UTC = pa.timestamp("ms", tz="UTC")
_COORDINATES = "topic LowCardinality(String), partition UInt32, offset UInt64, item UInt32"


@dataclass
class Consumed:
    """Decoded records of one schema waiting to be inserted, with where each came from."""

    records: list[Record] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def add(self, record: Record, topic: str, partition: int, offset: int) -> None:
        self.records.append(record)
        self.topics.append(topic)
        self.partitions.append(partition)
        self.offsets.append(offset)


@dataclass(frozen=True)
class TableSpec:
    """One sink table: the schema it stores, its DDL and its flattening."""

    name: str
    schema: str
    columns: str
    order_by: str
    flatten: Callable[[Consumed], pa.Table]
    rows_of: Callable[[Record], int] = lambda record: 1
    """Rows one record becomes; raises ``ValueError`` for a record that cannot be flattened."""
    identity: tuple[str, ...] = ()
    """Columns naming a row whatever record carried it: a worker that restarts may send a
    step's output again (at-least-once), and the sink keeps the first row of each identity.
    The first column, a string, is the one stored rows are looked up by."""
    added: tuple[str, ...] = ()
    """Columns (with their types) added after the table first shipped: a table made by an
    earlier release gets them at start, empty for its old rows."""

    def ddl(self, ttl_days: int) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} ({self.columns}, {_COORDINATES}) "
            f"ENGINE = MergeTree PARTITION BY toDate(ts) ORDER BY ({self.order_by}) "
            f"TTL toDateTime(ts) + INTERVAL {int(ttl_days)} DAY"
        )

    def migrations(self) -> list[str]:
        """What brings a table of an earlier release up to these columns (idempotent)."""
        return [f"ALTER TABLE {self.name} ADD COLUMN IF NOT EXISTS {c}" for c in self.added]


def _ms(values: Sequence[int | None]) -> pa.Array:
    return pa.array(values, _MS_UTC)


def _coordinates(batch: Consumed, repeat: np.ndarray | None = None) -> dict[str, pa.Array]:
    """Kafka coordinates per row; ``repeat`` maps each row to its record when one has many."""
    topics = pa.array(batch.topics, pa.string())
    partitions = pa.array(batch.partitions, pa.uint32())
    offsets = pa.array(batch.offsets, pa.uint64())
    if repeat is None:
        return {
            "topic": topics,
            "partition": partitions,
            "offset": offsets,
            "item": pa.array(np.zeros(len(batch.records), np.uint32)),
        }
    take = pa.array(repeat)
    return {
        "topic": topics.take(take),
        "partition": partitions.take(take),
        "offset": offsets.take(take),
        "item": pa.array(_item_index(repeat)),
    }


def _item_index(repeat: np.ndarray) -> np.ndarray:
    """Position of each row inside its record, from the row-to-record map ``repeat``."""
    if len(repeat) == 0:
        return np.zeros(0, np.uint32)
    starts = np.flatnonzero(np.r_[True, repeat[1:] != repeat[:-1]])
    counts = np.diff(np.r_[starts, len(repeat)])
    return (np.arange(len(repeat)) - np.repeat(starts, counts)).astype(np.uint32)


def _string_map(maps: Sequence[dict[str, str]]) -> pa.Array:
    return pa.array([list(m.items()) for m in maps], pa.map_(pa.string(), pa.string()))


def _sample_count(record: Record) -> int:
    names, values = len(record["names"]), len(record["values"])
    if names != values:
        raise ValueError(
            f"MetricBatch of {record['entity']!r} has {names} names but {values} values"
        )
    return names


def _flatten_metric_batches(batch: Consumed) -> pa.Table:
    records = batch.records
    counts = np.fromiter((len(r["names"]) for r in records), np.int64, len(records))
    repeat = np.repeat(np.arange(len(records)), counts)
    take = pa.array(repeat)
    return pa.table(
        {
            "entity": pa.array([r["entity"] for r in records], pa.string()).take(take),
            "ts": _ms([r["event_time"] for r in records]).take(take),
            "metric": pa.array(list(chain.from_iterable(r["names"] for r in records)), pa.string()),
            "value": pa.array(
                np.fromiter(
                    chain.from_iterable(r["values"] for r in records), np.float64, int(counts.sum())
                )
            ),
            "labels": _string_map([r["labels"] for r in records]).take(take),
            "source": pa.array([r["source"] for r in records], pa.string()).take(take),
            **_coordinates(batch, repeat),
        }
    )


def _prediction_columns(records: Sequence[Record]) -> dict[str, list[Any]]:
    """Every prediction of ``records`` (any version), one list per column; a missing
    bound is NaN, and a prediction's drivers are two lists (empty when it has none)."""
    out: dict[str, list[Any]] = {name: [] for name in (*_PREDICTION_FIELDS, *_DRIVER_COLUMNS)}
    for r in records:
        if r.get("kinds"):
            metrics, models, versions = r["metrics"], r["models"], r["model_versions"]
            out["metric"] += [metrics[i] for i in r["metric_index"]]
            out["model"] += [models[i] for i in r["model_index"]]
            out["model_version"] += [versions[i] for i in r["model_index"]]
            for column, field in _FROM_COLUMNS:
                out[column] += r[field]
            features: list[list[str]] = [[] for _ in r["kinds"]]
            contributions: list[list[float]] = [[] for _ in r["kinds"]]
            for of, feature, contribution in zip(
                *(r.get(name) or () for name in DRIVERS), strict=True
            ):
                features[of].append(feature)
                contributions[of].append(contribution)
            out["driver_features"] += features
            out["driver_contributions"] += contributions
        else:
            for p in r.get("predictions") or ():
                for column in _PREDICTION_FIELDS:
                    value = p[column]
                    out[column].append(math.nan if value is None else value)
                out["driver_features"].append([])
                out["driver_contributions"].append([])
    return out


_PREDICTION_FIELDS = (
    "metric", "model", "model_version", "kind", "horizon_s", "value", "score", "lower", "upper"
)  # fmt: skip
_DRIVER_COLUMNS = ("driver_features", "driver_contributions")
_PREDICTION_ADDED = (
    "driver_features Array(LowCardinality(String))",
    "driver_contributions Array(Float64)",
)
_FROM_COLUMNS = (
    ("kind", "kinds"), ("horizon_s", "horizons_s"), ("value", "values"), ("score", "scores"),
    ("lower", "lowers"), ("upper", "uppers"),
)  # fmt: skip


def _flatten_prediction_batches(batch: Consumed) -> pa.Table:
    records = batch.records
    counts = np.fromiter((prediction_count(r) for r in records), np.int64, len(records))
    repeat = np.repeat(np.arange(len(records)), counts)
    take = pa.array(repeat)
    columns = _prediction_columns(records)

    def per_record(key: str, kind: pa.DataType) -> pa.Array:
        return pa.array([r[key] for r in records], kind).take(take)

    def per_item(key: str, kind: pa.DataType) -> pa.Array:
        return pa.array(columns[key], kind, from_pandas=True)  # NaN bounds become NULL

    return pa.table(
        {
            "prediction_id": per_record("prediction_id", pa.string()),
            "entity": per_record("entity", pa.string()),
            "ts": per_record("event_time", _MS_UTC),
            "emitted_at": per_record("emitted_at", _MS_UTC),
            "latency_ms": per_record("latency_ms", pa.float64()),
            "metric": per_item("metric", pa.string()),
            "kind": per_item("kind", pa.string()),
            "model": per_item("model", pa.string()),
            "model_version": per_item("model_version", pa.string()),
            "horizon_s": per_item("horizon_s", pa.int32()),
            "value": per_item("value", pa.float64()),
            "score": per_item("score", pa.float64()),
            "lower": per_item("lower", pa.float64()),
            "upper": per_item("upper", pa.float64()),
            "driver_features": per_item("driver_features", pa.list_(pa.string())),
            "driver_contributions": per_item("driver_contributions", pa.list_(pa.float64())),
            **_coordinates(batch, repeat),
        }
    )


def _flatten_feature_vectors(batch: Consumed) -> pa.Table:
    records = batch.records
    return pa.table(
        {
            "entity": pa.array([r["entity"] for r in records], pa.string()),
            "ts": _ms([r["event_time"] for r in records]),
            "names": pa.array([vector_names(r) for r in records], pa.list_(pa.string())),
            "values": pa.array([r["values"] for r in records], pa.list_(pa.float64())),
            "feature_set": pa.array([r["feature_set"] for r in records], pa.string()),
            **_coordinates(batch),
        }
    )


_ColumnSpec = Sequence[tuple[str, str, pa.DataType]]


def _record_columns(spec: _ColumnSpec, batch: Consumed) -> dict[str, pa.Array]:
    """One column per (column, record field, Arrow type) of ``spec``, a row per record."""
    data: dict[str, pa.Array] = {}
    for column, key, kind in spec:
        values = [r[key] for r in batch.records]
        if pa.types.is_map(kind):
            data[column] = pa.array([list(v.items()) for v in values], kind)
        else:
            data[column] = pa.array(values, kind)
    return data


def _columns(spec: _ColumnSpec) -> Callable[[Consumed], pa.Table]:
    """A flattener for schemas stored one row per record."""

    def flatten(batch: Consumed) -> pa.Table:
        return pa.table({**_record_columns(spec, batch), **_coordinates(batch)})

    return flatten


_AGENT_EVENT_ADDED = (
    "workflow_id Nullable(String)",
    "parent_task_id Nullable(String)",
    "step Nullable(Int32)",
)
_ROUTING_DECISION_ADDED = (
    "duration_lower_ms Nullable(Float64)",
    "duration_upper_ms Nullable(Float64)",
    "expected_wait_ms Float64",
    "runner_up Nullable(String)",
    "reason String",
    "explored Bool",
    "priority Int32",
    "deadline Nullable(DateTime64(3, 'UTC'))",
    "deadline_miss_probability Nullable(Float64)",
    "recommended_concurrency Nullable(Int32)",
)


def _flatten_routing_decisions(batch: Consumed) -> pa.Table:
    data = _record_columns(
        [
            ("task_type", "task_type", pa.string()),
            ("task_id", "task_id", pa.string()),
            ("agent", "agent", pa.string()),
            ("expected_duration_ms", "expected_duration_ms", pa.float64()),
            ("success_probability", "success_probability", pa.float64()),
            ("model", "model", pa.string()),
            ("model_version", "model_version", pa.string()),
            ("ts", "event_time", _MS_UTC),
        ],
        batch,
    )
    alternatives = [r["alternatives"] for r in batch.records]
    for column, key, kind in (
        ("alternative_agents", "agent", pa.string()),
        ("alternative_durations_ms", "expected_duration_ms", pa.float64()),
        ("alternative_success_probabilities", "success_probability", pa.float64()),
    ):
        data[column] = pa.array([[a[key] for a in row] for row in alternatives], pa.list_(kind))
    added = _record_columns(
        [
            ("duration_lower_ms", "duration_lower_ms", pa.float64()),
            ("duration_upper_ms", "duration_upper_ms", pa.float64()),
            ("expected_wait_ms", "expected_wait_ms", pa.float64()),
            ("runner_up", "runner_up", pa.string()),
            ("reason", "reason", pa.string()),
            ("explored", "explored", pa.bool_()),
            ("priority", "priority", pa.int32()),
            ("deadline", "deadline", _MS_UTC),
            ("deadline_miss_probability", "deadline_miss_probability", pa.float64()),
            ("recommended_concurrency", "recommended_concurrency", pa.int32()),
        ],
        batch,
    )
    return pa.table({**data, **added, **_coordinates(batch)})


_STRING_MAP = pa.map_(pa.string(), pa.string())

TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "metric_samples",
        "metric_batch",
        "entity String, ts DateTime64(3, 'UTC'), metric LowCardinality(String), value Float64, "
        "labels Map(LowCardinality(String), String), source LowCardinality(String)",
        "entity, metric, ts",
        _flatten_metric_batches,
        _sample_count,
    ),
    TableSpec(
        "predictions",
        "prediction_batch",
        "prediction_id String, entity String, ts DateTime64(3, 'UTC'), "
        "emitted_at DateTime64(3, 'UTC'), latency_ms Float64, metric LowCardinality(String), "
        "kind LowCardinality(String), model LowCardinality(String), "
        "model_version LowCardinality(String), horizon_s Int32, value Float64, score Float64, "
        "lower Nullable(Float64), upper Nullable(Float64), " + ", ".join(_PREDICTION_ADDED),
        "entity, ts",
        _flatten_prediction_batches,
        prediction_count,
        ("prediction_id", "metric", "kind", "model", "model_version", "horizon_s"),
        added=_PREDICTION_ADDED,
    ),
    TableSpec(
        "agent_events",
        "agent_event",
        "agent String, task_id String, task_type LowCardinality(String), "
        "phase LowCardinality(String), ts DateTime64(3, 'UTC'), duration_ms Nullable(Float64), "
        "cost Nullable(Float64), error_class Nullable(String), "
        "labels Map(LowCardinality(String), String), " + ", ".join(_AGENT_EVENT_ADDED),
        "agent, ts",
        _columns(
            [
                ("agent", "agent", pa.string()),
                ("task_id", "task_id", pa.string()),
                ("task_type", "task_type", pa.string()),
                ("phase", "phase", pa.string()),
                ("ts", "event_time", _MS_UTC),
                ("duration_ms", "duration_ms", pa.float64()),
                ("cost", "cost", pa.float64()),
                ("error_class", "error_class", pa.string()),
                ("labels", "labels", _STRING_MAP),
                ("workflow_id", "workflow_id", pa.string()),
                ("parent_task_id", "parent_task_id", pa.string()),
                ("step", "step", pa.int32()),
            ]
        ),
        added=_AGENT_EVENT_ADDED,
    ),
    TableSpec(
        "labels",
        "label",
        "entity String, kind LowCardinality(String), incident_type LowCardinality(String), "
        "ts DateTime64(3, 'UTC'), end_time Nullable(DateTime64(3, 'UTC')), "
        "metric Nullable(String), description String",
        "entity, ts",
        _columns(
            [
                ("entity", "entity", pa.string()),
                ("kind", "kind", pa.string()),
                ("incident_type", "incident_type", pa.string()),
                ("ts", "start_time", _MS_UTC),
                ("end_time", "end_time", _MS_UTC),
                ("metric", "metric", pa.string()),
                ("description", "description", pa.string()),
            ]
        ),
    ),
    TableSpec(
        "dead_letters",
        "dead_letter",
        "source_topic LowCardinality(String), source_partition Int32, source_offset Int64, "
        "key Nullable(String), value String, reason String, error_kind LowCardinality(String), "
        "ts DateTime64(3, 'UTC')",
        "source_topic, ts",
        _columns(
            [
                ("source_topic", "topic", pa.string()),
                ("source_partition", "partition", pa.int32()),
                ("source_offset", "offset", pa.int64()),
                ("key", "key", pa.binary()),
                ("value", "value", pa.binary()),
                ("reason", "reason", pa.string()),
                ("error_kind", "error_kind", pa.string()),
                ("ts", "event_time", _MS_UTC),
            ]
        ),
    ),
    TableSpec(
        "features",
        "feature_vector",
        "entity String, ts DateTime64(3, 'UTC'), names Array(LowCardinality(String)), "
        "values Array(Float64), feature_set LowCardinality(String)",
        "entity, ts",
        _flatten_feature_vectors,
        identity=("entity", "ts"),
    ),
    TableSpec(
        "alerts",
        "alert",
        "dedup_key String, alert_id String, status LowCardinality(String), "
        "severity LowCardinality(String), rule LowCardinality(String), entity String, "
        "summary String, value Float64, labels Map(LowCardinality(String), String), "
        "starts_at DateTime64(3, 'UTC'), ends_at Nullable(DateTime64(3, 'UTC')), "
        "ts DateTime64(3, 'UTC')",
        "entity, ts",
        _columns(
            [
                ("dedup_key", "dedup_key", pa.string()),
                ("alert_id", "alert_id", pa.string()),
                ("status", "status", pa.string()),
                ("severity", "severity", pa.string()),
                ("rule", "rule", pa.string()),
                ("entity", "entity", pa.string()),
                ("summary", "summary", pa.string()),
                ("value", "value", pa.float64()),
                ("labels", "labels", _STRING_MAP),
                ("starts_at", "starts_at", _MS_UTC),
                ("ends_at", "ends_at", _MS_UTC),
                ("ts", "event_time", _MS_UTC),
            ]
        ),
        identity=("alert_id", "status", "ts"),
    ),
    TableSpec(
        "routing_decisions",
        "routing_decision",
        "task_type LowCardinality(String), task_id Nullable(String), agent String, "
        "expected_duration_ms Float64, success_probability Float64, "
        "model LowCardinality(String), model_version LowCardinality(String), "
        "ts DateTime64(3, 'UTC'), alternative_agents Array(String), "
        "alternative_durations_ms Array(Float64), "
        "alternative_success_probabilities Array(Float64), " + ", ".join(_ROUTING_DECISION_ADDED),
        "task_type, ts",
        _flatten_routing_decisions,
        added=_ROUTING_DECISION_ADDED,
    ),
    TableSpec(
        "routing_requests",
        "routing_request",
        "task_id String, task_type LowCardinality(String), candidates Array(String), "
        "deadline Nullable(DateTime64(3, 'UTC')), priority Int32, ts DateTime64(3, 'UTC')",
        "task_type, ts",
        _columns(
            [
                ("task_id", "task_id", pa.string()),
                ("task_type", "task_type", pa.string()),
                ("candidates", "candidates", pa.list_(pa.string())),
                ("deadline", "deadline", _MS_UTC),
                ("priority", "priority", pa.int32()),
                ("ts", "event_time", _MS_UTC),
            ]
        ),
    ),
    TableSpec(
        "model_updates",
        "model_update",
        "model LowCardinality(String), version String, action LowCardinality(String), "
        "stage LowCardinality(String), uri String, content_hash String, feature_hash String, "
        "metrics Map(LowCardinality(String), Float64), ts DateTime64(3, 'UTC')",
        "model, ts",
        _columns(
            [
                ("model", "model", pa.string()),
                ("version", "version", pa.string()),
                ("action", "action", pa.string()),
                ("stage", "stage", pa.string()),
                ("uri", "uri", pa.string()),
                ("content_hash", "content_hash", pa.string()),
                ("feature_hash", "feature_hash", pa.string()),
                ("metrics", "metrics", pa.map_(pa.string(), pa.float64())),
                ("ts", "event_time", _MS_UTC),
            ]
        ),
    ),
    TableSpec(
        "audit",
        "audit_event",
        "event_id String, ts DateTime64(3, 'UTC'), key_id String, key_name String, "
        "action LowCardinality(String), target String, outcome LowCardinality(String), "
        "service LowCardinality(String), origin String, "
        "details Map(LowCardinality(String), String), count UInt32",
        "key_id, ts",
        _columns(
            [
                ("event_id", "event_id", pa.string()),
                ("ts", "event_time", _MS_UTC),
                ("key_id", "key_id", pa.string()),
                ("key_name", "key_name", pa.string()),
                ("action", "action", pa.string()),
                ("target", "target", pa.string()),
                ("outcome", "outcome", pa.string()),
                ("service", "service", pa.string()),
                ("origin", "origin", pa.string()),
                ("details", "details", _STRING_MAP),
                ("count", "count", pa.uint32()),
            ]
        ),
        identity=("event_id",),
    ),
    TableSpec(
        "quality_snapshots",
        "code_quality_snapshot",
        "repository String, commit String, ts DateTime64(3, 'UTC'), files UInt64, "
        "lines UInt64, functions UInt64, mean_complexity Float64, max_complexity Float64, "
        "test_files UInt64, test_lines UInt64, test_count UInt64, "
        "coverage Nullable(Float64), lint_warnings Nullable(UInt64), "
        "duplication Nullable(Float64), churn_added UInt64, churn_deleted UInt64, "
        "churn_files UInt64, source LowCardinality(String)",
        "repository, ts",
        _columns(
            [
                ("repository", "repository", pa.string()),
                ("commit", "commit", pa.string()),
                ("ts", "event_time", _MS_UTC),
                ("files", "files", pa.uint64()),
                ("lines", "lines", pa.uint64()),
                ("functions", "functions", pa.uint64()),
                ("mean_complexity", "mean_complexity", pa.float64()),
                ("max_complexity", "max_complexity", pa.float64()),
                ("test_files", "test_files", pa.uint64()),
                ("test_lines", "test_lines", pa.uint64()),
                ("test_count", "test_count", pa.uint64()),
                ("coverage", "coverage", pa.float64()),
                ("lint_warnings", "lint_warnings", pa.uint64()),
                ("duplication", "duplication", pa.float64()),
                ("churn_added", "churn_added", pa.uint64()),
                ("churn_deleted", "churn_deleted", pa.uint64()),
                ("churn_files", "churn_files", pa.uint64()),
                ("source", "source", pa.string()),
            ]
        ),
        identity=("commit", "repository", "ts"),
    ),
)

TABLE_FOR_SCHEMA: dict[str, TableSpec] = {t.schema: t for t in TABLES}


def rollup_ddl(ttl_days: int) -> list[str]:
    """The per-minute metric rollup (table and materialised view) and the accuracy view."""
    return [
        "CREATE TABLE IF NOT EXISTS metric_minutes (entity String, "
        "metric LowCardinality(String), minute DateTime64(0, 'UTC'), "
        "n SimpleAggregateFunction(sum, UInt64), value_sum SimpleAggregateFunction(sum, Float64), "
        "value_min SimpleAggregateFunction(min, Float64), "
        "value_max SimpleAggregateFunction(max, Float64)) "
        "ENGINE = AggregatingMergeTree PARTITION BY toDate(minute) "
        f"ORDER BY (entity, metric, minute) TTL minute + INTERVAL {int(ttl_days)} DAY",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS metric_minutes_mv TO metric_minutes AS "
        "SELECT entity, metric, toStartOfMinute(ts) AS minute, count() AS n, "
        "sum(value) AS value_sum, min(value) AS value_min, max(value) AS value_max "
        "FROM metric_samples GROUP BY entity, metric, minute",
        # A prediction is an alarm when its score is at least 0.5; it is right when a label of
        # its entity covers [ts, ts + horizon]: an incident overlapping it (one still open
        # lasts until now), or a failure inside it.
        "CREATE VIEW IF NOT EXISTS model_daily_accuracy AS "
        "SELECT toDate(ts) AS day, model, model_version, kind, count() AS predictions, "
        "countIf(alarm) AS alarms, countIf(alarm AND covered) AS true_positives, "
        "countIf(alarm AND NOT covered) AS false_positives, "
        "countIf(NOT alarm AND covered) AS false_negatives, "
        "round(countIf(alarm = covered) / count(), 4) AS accuracy, "
        "if(alarms = 0, NULL, round(true_positives / alarms, 4)) AS precision, "
        "if(true_positives + false_negatives = 0, NULL, "
        "round(true_positives / (true_positives + false_negatives), 4)) AS recall "
        "FROM (SELECT p.ts AS ts, p.model AS model, p.model_version AS model_version, "
        "p.kind AS kind, p.score >= 0.5 AS alarm, "
        "max(l.entity != '' AND l.start_time <= p.ts + toIntervalSecond(p.horizon_s) "
        "AND l.until >= p.ts) AS covered "
        "FROM predictions AS p LEFT JOIN (SELECT entity, ts AS start_time, "
        "if(kind = 'FAILURE', ts, coalesce(end_time, now64(3))) AS until FROM labels) AS l "
        "ON l.entity = p.entity WHERE p.kind IN ('ANOMALY', 'FAILURE_RISK') "
        "GROUP BY p.topic, p.partition, p.offset, p.item, p.ts, p.model, p.model_version, "
        "p.kind, p.score) "
        "GROUP BY day, model, model_version, kind",
    ]


def create_tables(store: ClickHouseStore, ttl_days: int) -> None:
    """Create every sink table, rollup and view that does not exist yet (idempotent)."""
    if ttl_days < 1:
        raise ValueError(
            f"ClickHouse TTL must be at least 1 day, got {ttl_days}; "
            "set FORESIGHT_CLICKHOUSE_TTL_DAYS to a positive number"
        )
    for table in TABLES:
        store.command(table.ddl(ttl_days))
        for statement in table.migrations():
            store.command(statement)
    for statement in rollup_ddl(ttl_days):
        store.command(statement)
