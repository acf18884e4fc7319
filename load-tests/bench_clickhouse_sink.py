"""Benchmark: rows/s the ClickHouse sink sustains from Kafka into chdb, against raw inserts.

Produces ``--records`` MetricBatch records of ``--samples`` samples each to a fresh topic, runs
the real sink (raw aiokafka, decode, flatten, insert, commit) on a temporary chdb folder until
every sample is stored, then inserts the same rows, flattened into Arrow batches of the same
size, straight into a fresh chdb folder. Both rates come from the same run, so their ratio
says what the sink costs on top of ClickHouse itself (target: >= 100,000 rows/s through the
sink).

    .venv/bin/python load-tests/bench_clickhouse_sink.py --records 20000 --samples 100 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.clickhouse import ChdbStore
from connectors.clickhouse_schema import TABLE_FOR_SCHEMA, Consumed, create_tables
from connectors.clickhouse_sink import ClickHouseSink
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from schemas.codec import Codec


def metric_batches(records: int, samples: int, now_ms: int) -> list[dict[str, Any]]:
    names = [f"metric_{j}" for j in range(samples)]
    return [
        {
            "entity": f"host-{i % 500}",
            "event_time": now_ms + i,
            "labels": {"region": "eu", "job": "node"},
            "names": names,
            "values": [float(i * samples + j) for j in range(samples)],
            "source": "bench",
        }
        for i in range(records)
    ]


async def produce(kafka: KafkaConfig, topic: str, partitions: int, batches: list[Any]) -> None:
    await ensure_topics(kafka, [TopicRequest(topic, partitions, {})])
    codec = Codec()
    producer = kafka.producer(linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for record in batches:
            await producer.send(
                topic, codec.encode("metric_batch", record), key=record["entity"].encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def run_sink(args: argparse.Namespace, topic: str, folder: Path, rows: int) -> float:
    """Rows/s from the sink's first consumed record to the insert of the last row."""
    sink = ClickHouseSink(
        kafka=KafkaConfig(args.bootstrap),
        topics=[topic],
        group_id=f"bench-{topic}",
        store_factory=lambda: ChdbStore(str(folder)),
        batch_rows=args.batch_rows,
        batch_seconds=args.batch_seconds,
        ttl_days=30,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    first: float | None = None
    deadline = time.monotonic() + args.timeout
    while sink.stats.rows_inserted < rows:
        if task.done():
            task.result()
            raise RuntimeError("the sink stopped before storing every row")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sink.stats.rows_inserted} of {rows} rows in {args.timeout}s")
        if first is None and sink.stats.records:
            first = time.perf_counter()
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    stop.set()
    await task
    return rows / elapsed


def raw_insert(args: argparse.Namespace, batches: list[dict[str, Any]], folder: Path) -> float:
    """Rows/s of inserting the same rows, already flattened into Arrow, straight into chdb."""
    spec = TABLE_FOR_SCHEMA["metric_batch"]
    per_insert = max(1, args.batch_rows // args.samples)
    tables = []
    for start in range(0, len(batches), per_insert):
        consumed = Consumed()
        for offset, record in enumerate(batches[start : start + per_insert], start):
            consumed.add(record, "bench", 0, offset)
        tables.append(spec.flatten(consumed))
    store = ChdbStore(str(folder))
    try:
        create_tables(store, 30)
        started = time.perf_counter()
        for table in tables:
            store.insert_arrow(spec.name, table)
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    return float(sum(t.num_rows for t in tables) / elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka brokers")
    parser.add_argument("--records", type=int, default=20_000, help="MetricBatch records")
    parser.add_argument("--samples", type=int, default=100, help="samples per record")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topic")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="rows per insert")
    parser.add_argument("--batch-seconds", type=float, default=1.0, help="longest batch wait")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to give the sink")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    topic = f"bench.sink.{uuid.uuid4().hex[:10]}"
    batches = metric_batches(args.records, args.samples, int(time.time() * 1000))
    rows = args.records * args.samples
    asyncio.run(produce(KafkaConfig(args.bootstrap), topic, args.partitions, batches))
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        sink_rate = asyncio.run(run_sink(args, topic, Path(tmp) / "sink", rows))
        raw_rate = raw_insert(args, batches, Path(tmp) / "raw")
    result = {
        "rows": rows,
        "records": args.records,
        "samples_per_record": args.samples,
        "batch_rows": args.batch_rows,
        "sink_rows_per_s": round(sink_rate),
        "raw_insert_rows_per_s": round(raw_rate),
        "sink_to_raw_ratio": round(sink_rate / raw_rate, 3),
        "target_rows_per_s": 100_000,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"sink {result['sink_rows_per_s']:,} rows/s, raw insert "
            f"{result['raw_insert_rows_per_s']:,} rows/s, ratio {result['sink_to_raw_ratio']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
