"""The ClickHouse sink: every data topic into columnar MergeTree tables, each record once.

A raw aiokafka consumer (no Faust: a sink needs none of its machinery, and the raw client costs
about a seventh per record) reads the topics, decodes records with the :class:`Codec`, routes
each by the schema named in its header to its table (:mod:`connectors.clickhouse_schema`),
and inserts a batch when it holds ``batch_rows`` rows or ``batch_seconds`` have passed since
its first record. Kafka offsets are committed only after every table of the batch is inserted.
Undecodable records are counted (``foresight_sink_skipped_total``) and skipped: the worker
dead-letters them, and the sink stores ``telemetry.deadletter`` in its own table. Readiness
probes (:data:`schemas.codec.PROBE_HEADER`) are passed over uncounted.

No duplicates after a crash
---------------------------
Committing after the insert makes the sink at-least-once: a crash between an insert and its
commit replays records that are already stored. Every row carries its Kafka coordinates
(topic, partition, offset, item), and the table is the record of what was stored. When
partitions are assigned, the sink reads the highest stored offset of each
(:meth:`ClickHouseSink._recover`); while replaying at or below it, every batch drops the rows
whose coordinates are already in the table before inserting (:meth:`_without_stored`). Past
that mark no row can be stored yet, so inserts go straight in. Because the check is per row,
it also fills the gaps an insert cut short (several parts, killed between them) would leave,
and materialised rollups never see a replayed row. This assumes one writer per partition,
which Kafka's group assignment gives; the sink flushes and commits before giving partitions up.

One row per output
------------------
A worker is at-least-once too: one killed between producing a step and checkpointing it sends
the step again after its restart, under new offsets and perhaps with other values. Tables of
worker outputs declare an identity (``TableSpec.identity``: a prediction's id, metric, kind,
model and horizon; an alert's id, status and time; a feature vector's entity and time; an
audit event's id, since the audit trail's producer may send one twice), and
every batch drops the rows whose identity is already stored or earlier in the batch
(:meth:`_without_repeats`): the first row of each stays.

The chdb folder can be opened by one process only, so while it runs the sink also answers SQL
for other processes on a loopback HTTP endpoint, behind a key with the ``read`` role
(:class:`SqlEndpoint`, :func:`ask_sink`). Each statement is judged and run read-only, within
limits, in a session of its own (:class:`connectors.user_sql.UserSql`): a slow query never
holds up an insert. Each is recorded in the audit trail, with its key and whether it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from fastapi import FastAPI, Request

from connectors.audit import FAILED, REFUSED, SUCCEEDED, AuditTrail
from connectors.clickhouse import (
    ClickHouseStore,
    QueryResult,
    ServerUnreachableError,
    sql_string,
    sql_string_lists,
)
from connectors.clickhouse_schema import (
    TABLE_FOR_SCHEMA,
    TABLES,
    Consumed,
    TableSpec,
    create_tables,
)
from connectors.dependencies import Dependency, KafkaProbe, watching
from connectors.http.app import HttpServer, client_address, create_app, require
from connectors.http.auth import Gatekeeper
from connectors.http.errors import ApiError
from connectors.http.keys import READ, ApiKey
from connectors.http.tls import TlsConfig
from connectors.kafka_clients import KafkaConfig
from connectors.prometheus import (
    EVENTS_IN,
    SINK_BATCH_ROWS,
    SINK_ERRORS,
    SINK_INSERT_SECONDS,
    SINK_ROWS,
    SINK_SKIPPED,
)
from connectors.user_sql import SqlError, SqlLimits, SqlRefusedError, UserSql
from schemas.codec import Codec, DecodeError, is_probe

log = logging.getLogger(__name__)

_FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024  # 1 MiB (aiokafka's default) left fetches idle
_POLL_SECONDS = 0.5  # longest a fetch waits, so a stop request is seen promptly
MAX_INSERT_BACKOFF_S = 10.0
"""Longest wait between two tries of an insert the store refused: the most a recovered
store waits for the sink."""
SQL_HOST = "127.0.0.1"  # the SQL endpoint listens on loopback only, whatever FORESIGHT_BIND_HOST
MAX_STATEMENT_BYTES = 1 << 20


class SinkError(RuntimeError):
    """The sink cannot go on (it cannot open the store, or was stopped while the store
    refused inserts); nothing uncommitted was lost."""


class SinkUnavailableError(ConnectionError):
    """No ClickHouse sink answers SQL at the address asked."""


class GuardedStore:
    """The sink's own session, shared by its threads (inserts, recovery), one call at a time.

    A chdb connection runs one statement at a time; SQL for others runs in sessions of its own
    (:meth:`session`), so it never waits for this lock nor holds it.
    """

    def __init__(self, store: ClickHouseStore) -> None:
        self._store = store
        self._lock = threading.Lock()

    def command(self, sql: str) -> None:
        with self._lock:
            self._store.command(sql)

    def query(self, sql: str) -> QueryResult:
        with self._lock:
            return self._store.query(sql)

    def query_arrow(self, sql: str) -> pa.Table:
        with self._lock:
            return self._store.query_arrow(sql)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        with self._lock:
            self._store.insert_arrow(table, data)

    def session(self, settings: Mapping[str, str]) -> ClickHouseStore:
        return self._store.session(settings)

    def close(self) -> None:
        with self._lock:
            self._store.close()


@dataclass
class SinkStats:
    """Running totals, for progress lines and tests."""

    records: int = 0
    skipped: int = 0
    rows_inserted: int = 0
    rows_already_stored: int = 0
    rows_repeated: int = 0
    inserts: int = 0
    commits: int = 0


@dataclass
class SinkBatch:
    """Decoded records waiting for the next insert, and the offsets to commit after it."""

    by_schema: dict[str, Consumed] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    rows: int = 0
    records: int = 0

    def add(self, codec: Codec, tp: TopicPartition, messages: Sequence[Any]) -> int:
        """Decode ``messages`` of ``tp`` into the batch; returns how many were skipped."""
        skipped = 0
        for message in messages:
            if is_probe(message.headers):
                continue
            try:
                schema, record = codec.decode(message.value)
                rows = TABLE_FOR_SCHEMA[schema].rows_of(record)
            except DecodeError as error:
                SINK_SKIPPED.labels(tp.topic, error.kind).inc()
                skipped += 1
                continue
            except ValueError:
                SINK_SKIPPED.labels(tp.topic, "invalid_value").inc()
                skipped += 1
                continue
            consumed = self.by_schema.get(schema)
            if consumed is None:
                consumed = self.by_schema[schema] = Consumed()
            consumed.add(record, tp.topic, tp.partition, message.offset)
            self.rows += rows
            self.records += 1
        if messages:
            self.next_offsets[tp] = messages[-1].offset + 1
            EVENTS_IN.labels(tp.topic).inc(len(messages))
        return skipped


class ClickHouseSink:
    """Consumes ``topics`` as group ``group_id`` and inserts every record into ClickHouse.

    Parameters
    ----------
    kafka
        The brokers and how to reach them (``KAFKA_BOOTSTRAP_SERVERS`` and the security
        settings).
    topics
        Topics to store; records are routed to tables by the schema in their header.
    group_id
        Consumer group; its committed offsets say where a restarted sink resumes.
    store_factory
        Opens the store the sink owns while it runs (chdb on a folder, or a server).
    batch_rows
        Rows buffered before an insert (``FORESIGHT_SINK_BATCH_ROWS``, default 50,000).
    batch_seconds
        Longest a record waits for its insert (``FORESIGHT_SINK_BATCH_SECONDS``, default 1).
    ttl_days
        Days rows are kept (``FORESIGHT_CLICKHOUSE_TTL_DAYS``, default 30).
    sql_port
        Loopback port to answer SQL on while the sink owns the store; ``None``: no endpoint.
    gatekeeper
        Checks the keys (``read`` role) of SQL requests; needed with ``sql_port``.
    sql_limits
        What each statement sent to that port is held to (needed with ``sql_port``).
    audit
        Where each statement sent to that port is recorded (needed with ``sql_port``).
    tls
        With a certificate, the SQL endpoint serves https only (``FORESIGHT_TLS_CERT``).
    store_where
        The store as messages and /health name it (no credentials).

    An insert the store refuses is tried again, backing off up to
    :data:`MAX_INSERT_BACKOFF_S`, for as long as it takes: nothing more is read meanwhile
    and no offset is committed, so the sink catches up from where it stopped, each record
    once. :attr:`store` and :attr:`brokers` say meanwhile what does not answer.
    """

    def __init__(
        self,
        *,
        kafka: KafkaConfig,
        topics: Sequence[str],
        group_id: str,
        store_factory: Callable[[], ClickHouseStore],
        batch_rows: int,
        batch_seconds: float,
        ttl_days: int,
        sql_port: int | None = None,
        gatekeeper: Gatekeeper | None = None,
        sql_limits: SqlLimits | None = None,
        audit: AuditTrail | None = None,
        tls: TlsConfig | None = None,
        store_where: str = "ClickHouse",
        codec: Codec | None = None,
    ) -> None:
        if not topics:
            raise ValueError("the ClickHouse sink needs at least one topic to consume")
        if batch_rows < 1 or batch_seconds <= 0:
            raise ValueError(
                f"sink batches need batch_rows >= 1 and batch_seconds > 0, got {batch_rows} "
                f"and {batch_seconds}; check FORESIGHT_SINK_BATCH_ROWS and _SECONDS"
            )
        self.kafka = kafka
        self.topics = tuple(topics)
        self.group_id = group_id
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self.ttl_days = ttl_days
        if sql_port is not None and (gatekeeper is None or sql_limits is None or audit is None):
            raise ValueError(
                "the sink's SQL endpoint needs a gatekeeper, its SQL limits and an audit trail"
            )
        self.sql_port = sql_port
        self.gatekeeper = gatekeeper
        self.sql_limits = sql_limits
        self.audit = audit
        self.tls = tls or TlsConfig()
        self.store = Dependency("clickhouse", store_where)
        self.brokers = Dependency("kafka", kafka.bootstrap_servers)
        self.stats = SinkStats()
        self._stop = asyncio.Event()
        self._store_factory = store_factory
        self._codec = codec or Codec()
        self._store: GuardedStore | None = None
        self._batch = SinkBatch()
        self._flush_lock = asyncio.Lock()
        self._high_water: dict[tuple[str, int], int] = {}
        self._failure: BaseException | None = None
        self.sql_endpoint: SqlEndpoint | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then insert what is buffered, commit and close."""
        self._stop = stop
        try:
            store = GuardedStore(self._store_factory())
        except ServerUnreachableError as error:
            raise SinkError(f"cannot open the ClickHouse store: {error}") from error
        except Exception as error:  # chdb and clickhouse-connect raise many types
            raise SinkError(
                f"cannot open the ClickHouse store: {error}. A chdb folder opens in one "
                "process only: stop whatever holds it (another sink?), or use another folder"
            ) from error
        try:
            await asyncio.to_thread(create_tables, store, self.ttl_days)
            self._store = store
            if self.sql_port is not None and self.gatekeeper and self.sql_limits and self.audit:
                sql = UserSql(store.session, self.sql_limits)
                self.sql_endpoint = SqlEndpoint(
                    sql, self.sql_port, self.gatekeeper, self.audit, self.tls
                )
                try:
                    await self.sql_endpoint.start()
                except OSError as error:
                    self.sql_endpoint = None
                    raise SinkError(
                        f"cannot answer SQL on {SQL_HOST}:{self.sql_port}: {error}; is another "
                        "sink running? Give this one a free port (FORESIGHT_SINK_SQL_PORT)"
                    ) from error
            consumer = self.kafka.consumer(
                group_id=self.group_id,
                client_id=f"foresight-clickhouse-sink-{self.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=_FETCH_BYTES_PER_PARTITION,
            )
            consumer.subscribe(list(self.topics), listener=_Rebalance(self, consumer))
            await consumer.start()
            probe = KafkaProbe(self.kafka)
            try:
                async with watching({self.brokers: probe}):
                    await self._consume(consumer, stop)
                    await self._flush(consumer)
            finally:
                await probe.close()
                await consumer.stop()
        finally:
            if self.sql_endpoint is not None:
                await self.sql_endpoint.stop()
            self._store = None
            store.close()

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        deadline: float | None = None
        rows_per_record = 100.0  # a guess until records arrive: 50-100 samples per batch
        while not stop.is_set():
            if self._failure is not None:
                raise self._failure
            wait = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
            fetched = await consumer.getmany(
                timeout_ms=int(1000 * min(max(wait, 0.0), _POLL_SECONDS)),
                # Fetch about what fills the batch, so inserts stay near batch_rows.
                max_records=max(1, int((self.batch_rows - self._batch.rows) / rows_per_record)),
            )
            for tp, messages in fetched.items():
                self.stats.skipped += self._batch.add(self._codec, tp, messages)
                self.stats.records += len(messages)
            if self._batch.records:
                rows_per_record = max(1.0, self._batch.rows / self._batch.records)
            if deadline is None and self._batch.next_offsets:
                deadline = time.monotonic() + self.batch_seconds
            if self._batch.rows >= self.batch_rows or (
                deadline is not None and time.monotonic() >= deadline
            ):
                await self._flush(consumer)
                deadline = None

    async def _flush(self, consumer: AIOKafkaConsumer) -> None:
        """Insert the buffered batch, table by table, then commit its offsets."""
        async with self._flush_lock:
            batch, self._batch = self._batch, SinkBatch()
            if not batch.next_offsets:
                return
            total = 0
            for schema, consumed in batch.by_schema.items():
                spec = TABLE_FOR_SCHEMA[schema]
                total += await self._store_rows(spec, spec.flatten(consumed))
            SINK_BATCH_ROWS.observe(total)
            for tp, next_offset in batch.next_offsets.items():
                key = (tp.topic, tp.partition)
                if key in self._high_water and next_offset > self._high_water[key]:
                    del self._high_water[key]
            try:
                await consumer.commit(batch.next_offsets)
                self.stats.commits += 1
            except (CommitFailedError, KafkaError) as error:
                # The rows are stored: whoever replays these offsets finds them and skips them.
                log.warning("offset commit failed after a successful insert: %s", error)

    async def _store_rows(self, spec: TableSpec, table: pa.Table) -> int:
        """Insert the rows of ``table`` not stored yet into ``spec``'s table, trying again
        until the store takes them (or the sink stops); returns how many went in."""
        attempt = 0
        while True:
            attempt += 1
            try:
                inserted = await self._insert_new(spec, table)
            except Exception as error:  # chdb and clickhouse-connect raise many types
                SINK_ERRORS.labels(spec.name).inc()
                self.store.failed(error)
                if self._stop.is_set():
                    raise SinkError(
                        f"stopped while ClickHouse refused {table.num_rows} rows for table "
                        f"{spec.name} ({error}); their offsets were not committed, so the "
                        "next start stores them"
                    ) from error
                wait = min(0.5 * 2**attempt, MAX_INSERT_BACKOFF_S)
                log.warning(
                    "insert into %s failed (attempt %d), trying again in %.1f s: %s",
                    spec.name,
                    attempt,
                    wait,
                    error,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
            else:
                self.store.answered()
                return inserted

    async def _insert_new(self, spec: TableSpec, table: pa.Table) -> int:
        """One try: drop the rows already stored, or repeating a stored output, then insert."""
        offered = table.num_rows
        if self._high_water:
            table = await asyncio.to_thread(self._without_stored, spec.name, table)
        already = offered - table.num_rows
        if spec.identity and table.num_rows:
            table = await asyncio.to_thread(self._without_repeats, spec, table)
        repeated = offered - already - table.num_rows
        if table.num_rows:
            started = time.perf_counter()
            await asyncio.to_thread(self._require_store().insert_arrow, spec.name, table)
            SINK_INSERT_SECONDS.labels(spec.name).observe(time.perf_counter() - started)
            SINK_ROWS.labels(spec.name).inc(table.num_rows)
            self.stats.inserts += 1
        self.stats.rows_inserted += table.num_rows
        self.stats.rows_already_stored += already
        self.stats.rows_repeated += repeated
        return int(table.num_rows)

    def _require_store(self) -> GuardedStore:
        if self._store is None:
            raise RuntimeError("the sink's store is used outside ClickHouseSink.run")
        return self._store

    async def _recover(self, assigned: set[TopicPartition]) -> None:
        """Learn, for newly assigned partitions, the highest offset already stored."""
        if not assigned:
            return
        # aiokafka fetches from new partitions before this callback ends: hold the flush until
        # their stored offsets are known, or a first batch would go in unfiltered.
        async with self._flush_lock:
            found = await asyncio.to_thread(self._stored_high_water, assigned)
            self._high_water.update(found)
        if found:
            log.info("resuming with rows already stored up to offsets %s", found)

    def _stored_high_water(self, partitions: set[TopicPartition]) -> dict[tuple[str, int], int]:
        topics = ", ".join(sql_string(t) for t in sorted({tp.topic for tp in partitions}))
        union = " UNION ALL ".join(
            f"SELECT topic, partition, offset FROM {t.name} WHERE topic IN ({topics})"
            for t in TABLES
        )
        result = self._require_store().query(
            f"SELECT topic, partition, max(offset) FROM ({union}) GROUP BY topic, partition"
        )
        wanted = {(tp.topic, tp.partition) for tp in partitions}
        return {(t, p): int(o) for t, p, o in result.rows if (t, p) in wanted}

    def _without_stored(self, name: str, table: pa.Table) -> pa.Table:
        """``table`` without the rows whose Kafka coordinates ``name`` already holds."""
        store = self._require_store()
        stored = np.zeros(table.num_rows, dtype=bool)
        offsets = table["offset"].to_numpy()
        items = table["item"].to_numpy()
        for (topic, partition), high in self._high_water.items():
            replayed = pc.and_(
                pc.and_(pc.equal(table["topic"], topic), pc.equal(table["partition"], partition)),
                pc.less_equal(table["offset"], high),
            )
            rows = np.flatnonzero(replayed.to_numpy(zero_copy_only=False))
            if not len(rows):
                continue
            present = set(
                store.query(
                    f"SELECT offset, item FROM {name} WHERE topic = {sql_string(topic)} "
                    f"AND partition = {partition} "
                    f"AND offset BETWEEN {offsets[rows].min()} AND {offsets[rows].max()}"
                ).rows
            )
            pairs = zip(offsets[rows].tolist(), items[rows].tolist(), strict=True)
            stored[rows] = [pair in present for pair in pairs]
        count = int(stored.sum())
        if not count:
            return table
        log.info("%d replayed rows of %s were already stored; not inserted again", count, name)
        return table.filter(pa.array(~stored))

    def _without_repeats(self, spec: TableSpec, table: pa.Table) -> pa.Table:
        """``table`` with one row per ``spec.identity``: a row already stored, or already
        earlier in the batch, is a worker's re-sent output and is not inserted again."""
        columns = spec.identity
        # Times compare as epoch milliseconds on both sides.
        keys = list(zip(*(_plain(table[c]) for c in columns), strict=True))
        selected = ", ".join(
            f"toUnixTimestamp64Milli({c})" if pa.types.is_timestamp(table[c].type) else c
            for c in columns
        )
        times = _plain(table["ts"])
        store = self._require_store()
        seen: set[tuple[Any, ...]] = set()
        for ids in sql_string_lists(set(table[columns[0]].to_pylist())):
            found = store.query(
                f"SELECT {selected} FROM {spec.name} WHERE ts BETWEEN "
                f"fromUnixTimestamp64Milli({min(times)}, 'UTC') AND "
                f"fromUnixTimestamp64Milli({max(times)}, 'UTC') "
                f"AND {columns[0]} IN ({ids})"
            )
            seen.update(tuple(row) for row in found.rows)
        keep = np.ones(len(keys), dtype=bool)
        for row, key in enumerate(keys):
            keep[row] = key not in seen
            seen.add(key)
        repeats = len(keys) - int(keep.sum())
        if not repeats:
            return table
        log.info("%d rows of %s repeat ones already stored; not inserted again", repeats, spec.name)
        return table.filter(pa.array(keep))


def _plain(column: pa.ChunkedArray) -> list[Any]:
    """A column's values as Python scalars, times as epoch milliseconds."""
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    values: list[Any] = column.to_pylist()
    return values


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Flush before partitions go; learn what is stored before new ones are read."""

    def __init__(self, sink: ClickHouseSink, consumer: AIOKafkaConsumer) -> None:
        self._sink = sink
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._sink._flush(self._consumer)
        except Exception as error:  # reported by the consume loop, not lost in aiokafka's task
            self._sink._failure = error

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._sink._recover(assigned)
        except Exception as error:
            self._sink._failure = SinkError(
                f"could not read the stored offsets of {sorted(map(str, assigned))}: {error}"
            )


def jsonable(value: Any) -> Any:
    """A query value as JSON can carry it: times as ISO 8601, maps as objects, bytes as text."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, list):
        # Arrow hands ClickHouse maps over as lists of (key, value) tuples.
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): jsonable(v) for k, v in value}
        return [jsonable(v) for v in value]
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


class SqlEndpoint:
    """Answers SQL over HTTP on loopback: POST the statement to ``/`` with a key of the
    ``read`` role.

    The answer is ``{"columns": [...], "rows": [[...], ...]}``; in the one error body
    (:mod:`connectors.http.errors`), 403 when the statement is refused
    (:class:`SqlRefusedError`), 400 when ClickHouse rejects it or a limit stops it. Statements
    run through ``sql``, which judges each and runs it in a session of its own, so requests are
    answered side by side. Every statement is recorded in ``audit`` (``sql.query``, the
    statement as target): SUCCEEDED with the rows answered, REFUSED with the guard's reason,
    FAILED with ClickHouse's message.
    """

    def __init__(
        self,
        sql: UserSql,
        port: int,
        gatekeeper: Gatekeeper,
        audit: AuditTrail,
        tls: TlsConfig | None = None,
    ) -> None:
        self._sql = sql
        self._audit = audit
        self.app = self._app(gatekeeper)
        """The ASGI application (in-process clients use it without a socket)."""
        self._http = HttpServer(self.app, SQL_HOST, port, tls)

    @property
    def port(self) -> int:
        return self._http.port

    async def start(self) -> None:
        await self._http.start()

    async def stop(self) -> None:
        await self._http.stop()

    def _app(self, gatekeeper: Gatekeeper) -> FastAPI:
        app = create_app("Foresight SQL", gatekeeper, max_body_bytes=MAX_STATEMENT_BYTES)

        @app.post("/")
        async def sql(request: Request, key: Annotated[ApiKey, require(READ)]) -> dict[str, Any]:
            try:
                statement = (await request.body()).decode()
            except UnicodeDecodeError as error:
                raise ApiError(400, f"the statement is not UTF-8 text: {error}") from None

            def audit(outcome: str, **details: str) -> None:
                self._audit.record(
                    "sql.query",
                    statement,
                    outcome,
                    key=key,
                    origin=client_address(request.scope),
                    details=details,
                )

            try:
                result = await asyncio.to_thread(self._sql.query, statement)
            except SqlRefusedError as refused:
                audit(REFUSED, reason=str(refused))
                raise ApiError(403, str(refused)) from None
            except SqlError as error:  # ClickHouse's message, or the limit that stopped it
                audit(FAILED, error=str(error))
                raise ApiError(400, str(error)) from None
            audit(SUCCEEDED, rows=str(len(result.rows)))
            rows = [[jsonable(v) for v in row] for row in result.rows]
            return {"columns": result.columns, "rows": rows}

        return app


def loopback_for(bind_host: str) -> str:
    """The address to reach a server bound to ``bind_host`` from this machine."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)


def ask_sink(
    port: int, sql: str, key: str | None, timeout: float = 60.0, tls: TlsConfig | None = None
) -> QueryResult:
    """Run ``sql`` through the SQL endpoint of the sink running on this machine at ``port``,
    with ``key`` (``read`` role); over https, verified with ``tls``'s CA, when ``tls`` has a
    certificate (the sink's settings are the caller's).

    Raises :class:`SinkUnavailableError` when nothing answers there, :class:`SqlRefusedError`
    when the statement (or the key) is refused, :class:`SqlError` with ClickHouse's message
    when it fails.
    """
    tls = tls or TlsConfig()
    url = tls.url(SQL_HOST, port)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, data=sql.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(
            request, timeout=timeout, context=tls.client_context()
        ) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            raise SinkUnavailableError(
                f"{url} answered {error.code}, not as a sink would"
            ) from error
        if error.code == 403:
            raise SqlRefusedError(message) from error
        if error.code != 400:
            message = f"the ClickHouse sink at {url} refused the query ({error.code}): {message}"
        raise SqlError(message) from error
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        reason = getattr(error, "reason", None)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise SqlError(
                f"the ClickHouse sink at {url} presented a certificate this client does not "
                f"trust ({reason.verify_message}); set FORESIGHT_TLS_CA to the CA that signed it"
            ) from error
        raise SinkUnavailableError(f"no ClickHouse sink answers SQL at {url}: {error}") from error
    except ValueError as error:
        raise SinkUnavailableError(f"{url} answered something other than a sink's JSON") from error
    return QueryResult(list(body["columns"]), [tuple(row) for row in body["rows"]])
