"""Benchmark the real pipeline: sustained samples/s and event-to-prediction latency.

Runs on the local stack, all in one run so the ratios are fair:

1. **raw ceiling**: a plain aiokafka loop (its own process) consumes the same batched
   MetricBatch records, decodes each, adds a field, encodes and produces it;
2. **max rate**: a Foresight worker (its own process) takes the same records as fast as a
   producer can write them; throughput is the slope of its samples counter, PredictionBatches/s
   (one per entity step) and predictions/s (their rows: one per predicted value) those of its
   counters, and its CPU seconds per second come from ``/proc``.
   With ``--workers 1 2``, a group of each size in turn (one consumer group each), and the
   combined rate of each against the first's;
3. **fixed rates**: a paced producer writes ``--rates`` samples/s for ``--seconds`` each,
   stamping each record's event time with the wall clock; a consumer of ``predictions``
   measures how long each step's prediction took to arrive after the record that closed it,
   and how many arrived per second. The first group of ``--workers`` takes them.

``foresight bench pipeline`` runs this file; ``--json`` prints the results for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from profiling import Profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.kafka_admin import TopicRequest, ensure_topics  # noqa: E402
from connectors.kafka_clients import KafkaConfig  # noqa: E402
from schemas.codec import Codec, DecodeError  # noqa: E402
from streams import topics  # noqa: E402
from streams.commands.stack import local_stack, topic_requests  # noqa: E402
from streams.settings import Settings, load_settings  # noqa: E402
from streams.worker_process import WorkerProcess, group_ready  # noqa: E402

_MIB = 1024 * 1024


def make_records(
    entities: int, metrics: int, count: int, start_ms: int, step_ms: int
) -> list[tuple[bytes, bytes]]:
    """``count`` encoded MetricBatch records, round robin over entities, as (key, value)."""
    codec = Codec()
    rng = np.random.default_rng(0)
    names = [f"metric_{i:03d}" for i in range(metrics)]
    level = rng.uniform(10, 90, size=(entities, metrics))
    out = []
    for i in range(count):
        e = i % entities
        level[e] += rng.normal(0, 0.5, metrics)
        record = {
            "entity": f"bench-{e:05d}",
            "event_time": start_ms + (i // entities) * step_ms,
            "labels": {"bench": "pipeline"},
            "names": names,
            "values": level[e].tolist(),
            "source": "bench",
        }
        out.append((record["entity"].encode(), codec.encode("metric_batch", record)))
    return out


async def produce(kafka: KafkaConfig, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Write records as fast as possible; returns the seconds it took."""
    producer = kafka.producer(linger_ms=5, max_batch_size=_MIB, max_request_size=4 * _MIB)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_passthrough(
    kafka: KafkaConfig, source: str, sink: str, expect: int
) -> dict[str, Any]:
    """The ceiling: consume, decode, add a field, encode, produce, with raw aiokafka."""
    codec = Codec()
    consumer = kafka.consumer(
        source,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * _MIB,
        fetch_max_bytes=32 * _MIB,
    )
    producer = kafka.producer(linger_ms=5, max_batch_size=_MIB)
    await consumer.start()
    await producer.start()
    done = samples = 0
    started = cpu = 0.0
    try:
        while done < expect:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if not started and batches:
                started, cpu = time.perf_counter(), time.process_time()
            pending = []
            for messages in batches.values():
                for m in messages:
                    _, record = codec.decode(m.value)
                    record["source"] = "passthrough"
                    samples += len(record["values"])
                    pending.append(
                        await producer.send(sink, codec.encode("metric_batch", record), key=m.key)
                    )
                    done += 1
            await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
        return {
            "records": done,
            "samples": samples,
            "seconds": elapsed,
            "samples_per_s": samples / elapsed,
            "cpu_us_per_record": (time.process_time() - cpu) / done * 1e6,
        }
    finally:
        await consumer.stop()
        await producer.stop()


def _raw_in_subprocess(settings: Settings, source: str, expect: int) -> dict[str, Any]:
    # load-tests is not an importable package name, so the child runs this file by path,
    # with its folder on the path for the modules beside it.
    here = Path(__file__).parent
    script = (
        "import asyncio, json, runpy, sys; from connectors.kafka_clients import KafkaConfig; "
        f"sys.path.insert(0, {str(here)!r}); m = runpy.run_path({str(Path(__file__))!r}); "
        f"print(json.dumps(asyncio.run(m['raw_passthrough']({settings.kafka()!r}, "
        f"{source!r}, {source + '.out'!r}, {expect}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _cpu_seconds(workers: list[WorkerProcess]) -> float:
    """The CPU time the workers have used between them (NaN where there is no ``/proc``)."""
    return sum(worker.cpu_seconds() or math.nan for worker in workers)


async def max_rate(
    settings: Settings,
    workers: list[WorkerProcess],
    records: list[tuple[bytes, bytes]],
    samples_per_record: int,
) -> dict[str, Any]:
    """Flood a group of workers and read its sustained rate off their counters."""

    def counters() -> tuple[float, float, float, float]:
        counted = [
            worker.metrics(
                "foresight_samples_in_total",
                f'foresight_events_out_total{{topic="{topics.PREDICTIONS.name}"}}',
                "foresight_predictions_total{",
            )
            for worker in workers
        ]
        samples, batches, rows = (sum(column) for column in zip(*counted, strict=True))
        return samples, batches, rows, _cpu_seconds(workers)

    before = counters()[0]
    total = before + len(records) * samples_per_record
    produce_task = asyncio.create_task(produce(settings.kafka(), topics.METRICS.name, records))
    points: list[tuple[float, tuple[float, float, float, float]]] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        now = counters()
        points.append((time.perf_counter(), now))
        if now[0] >= total:
            break
        await asyncio.sleep(0.5)
    await produce_task
    # The steady middle: between 10% and 90% of the samples.
    low, high = before + 0.1 * (total - before), before + 0.9 * (total - before)
    span = [(t, c) for t, c in points if low <= c[0] <= high]
    if len(span) < 2:
        span = points
    (t0, c0), (t1, c1) = span[0], span[-1]
    seconds = max(t1 - t0, 1e-9)
    return {
        "workers": len(workers),
        "samples": int(total - before),
        "samples_per_s": (c1[0] - c0[0]) / seconds,
        "prediction_batches_per_s": (c1[1] - c0[1]) / seconds,
        "predictions_per_s": (c1[2] - c0[2]) / seconds,
        "worker_cpu_per_s": (c1[3] - c0[3]) / seconds,
        "complete": points[-1][1][0] >= total,
    }


async def fixed_rate(
    settings: Settings,
    workers: list[WorkerProcess],
    rate: float,
    seconds: float,
    entities: int,
    metrics: int,
    warmup_s: float = 30.0,
    drain_s: float = 180.0,
) -> dict[str, Any]:
    """Produce ``rate`` samples/s stamped with the wall clock; measure prediction latency.

    The first ``warmup_s`` are not measured: every entity is new then, and its first steps
    allocate state and fit models once (a cold start, not the steady state). Their latency is
    reported apart (``warmup_latency_ms_*``): on 2 cores at 50,000 samples/s, 1,000 new
    entities' first round took the engine about 2 s of CPU, and the backlog it left took
    about 20 s to drain (a 15 s warm-up once left p99s of 0.7 to 1.2 s in the first measured
    seconds, and under 100 ms after). After the last
    record, predictions are awaited up to ``drain_s`` (``drained`` false if some never came).
    ``worker_cpu_per_s`` is the workers' CPU over the measured seconds: near 1 per worker, a
    worker is at its limit at this rate, and its latency rises and falls with any other load.
    ``by_second`` has the p99 latency of each measured second of event time and the workers'
    CPU in each second of the run, to see when a tail happened and what the workers did then.
    """
    codec = Codec()
    records_per_s = rate / metrics
    consumer = settings.kafka().consumer(
        topics.PREDICTIONS.name,
        group_id=f"bench-lat-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    for tp in consumer.assignment():
        await consumer.position(tp)
    latencies: list[float] = []
    cold: list[float] = []  # the warm-up's
    by_second: dict[int, list[float]] = {}  # the latencies by second of event time measured
    rows = [0]  # their predictions (the batches' rows)
    in_worker: list[float] = []  # the worker's own stamp: emission minus the input's Kafka time
    newest = [0]  # the newest measured step's event time
    wanted = [math.inf]  # the step whose prediction ends the wait (set after the last record)
    drained = asyncio.Event()
    stop = asyncio.Event()
    run = uuid.uuid4().hex[:4]
    measure_from_ms = time.time() * 1000 + warmup_s * 1000

    async def collect() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time() * 1000
            for messages in batches.values():
                for m in messages:
                    try:
                        _, record = codec.decode(m.value)
                    except DecodeError:  # another producer's, of a schema this build lacks
                        continue
                    if not record["entity"].startswith(f"lat{run}-"):
                        continue
                    latency = now - record["event_time"]
                    if record["event_time"] < measure_from_ms:
                        cold.append(latency)
                        continue
                    latencies.append(latency)
                    second = int((record["event_time"] - measure_from_ms) // 1000)
                    by_second.setdefault(second, []).append(latency)
                    rows[0] += len(record["kinds"])
                    in_worker.append(record["latency_ms"])
                    newest[0] = max(newest[0], record["event_time"])
                    if newest[0] >= wanted[0]:
                        drained.set()

    collector = asyncio.create_task(collect())
    producer = settings.kafka().producer(linger_ms=1)
    await producer.start()
    names = [f"metric_{i:03d}" for i in range(metrics)]
    rng = np.random.default_rng(1)
    sent = 0
    started = time.perf_counter()
    cpu_from: tuple[float, float] | None = None  # (when, CPU seconds) as measuring starts
    cpu_by_second: list[float] = []  # the workers' CPU seconds a second, second by second
    cpu_mark = (0.0, 0.0)
    try:
        while (elapsed := time.perf_counter() - started) < warmup_s + seconds:
            if cpu_from is None and elapsed >= warmup_s:
                cpu_from = (time.perf_counter(), _cpu_seconds(workers))
                cpu_mark = cpu_from
            if cpu_from is not None and time.perf_counter() - cpu_mark[0] >= 1.0:
                now_cpu = (time.perf_counter(), _cpu_seconds(workers))
                cpu_by_second.append((now_cpu[1] - cpu_mark[1]) / (now_cpu[0] - cpu_mark[0]))
                cpu_mark = now_cpu
            due = int(elapsed * records_per_s) - sent
            for _ in range(due):
                e = sent % entities
                record = {
                    "entity": f"lat{run}-{e:05d}",
                    "event_time": int(time.time() * 1000),
                    "labels": {},
                    "names": names,
                    "values": rng.uniform(0, 100, metrics).tolist(),
                    "source": "bench",
                }
                await producer.send(
                    topics.METRICS.name,
                    codec.encode("metric_batch", record),
                    key=record["entity"].encode(),
                )
                sent += 1
            await asyncio.sleep(0.002)
        assert cpu_from is not None
        worker_cpu_per_s = (_cpu_seconds(workers) - cpu_from[1]) / (
            time.perf_counter() - cpu_from[0]
        )
        await producer.flush()
        # A worker that lags still answers: wait for the step before the last to be predicted
        # (the last closes only on idle time), so the percentiles include the lag.
        wanted[0] = time.time() * 1000 - 2 * settings.step_s * 1000
        if newest[0] >= wanted[0]:
            drained.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), drain_s)
    finally:
        stop.set()
        await collector
        await producer.stop()
        await consumer.stop()
    return {
        "rate_samples_per_s": rate,
        "achieved_samples_per_s": sent * metrics / (warmup_s + seconds),
        "prediction_batches": len(latencies),
        "prediction_batches_per_s": len(latencies) / seconds,
        "predictions_per_s": rows[0] / seconds,
        "drained": drained.is_set(),
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p95": _percentile(latencies, 95),
        "latency_ms_p99": _percentile(latencies, 99),
        "warmup_s": warmup_s,
        "warmup_latency_ms_p50": _percentile(cold, 50),
        "warmup_latency_ms_p99": _percentile(cold, 99),
        "worker_latency_ms_p50": _percentile(in_worker, 50),
        "worker_latency_ms_p99": _percentile(in_worker, 99),
        "worker_cpu_per_s": worker_cpu_per_s,
        "by_second": {
            "latency_ms_p99": [
                _percentile(by_second.get(k, []), 99) for k in range(max(by_second, default=-1) + 1)
            ],
            "worker_cpu_per_s": cpu_by_second,
        },
    }


def _percentile(values: list[float], q: float) -> float | None:
    """The ``q``th percentile, or None (null in JSON) when nothing arrived to measure."""
    return float(np.percentile(values, q)) if values else None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    def progress(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    stack = local_stack(settings, quiet=args.json)
    stack.up(timeout=180)
    await ensure_topics(settings.kafka(), topic_requests(settings))
    run_id = uuid.uuid4().hex[:6]
    records = make_records(
        args.entities, args.metrics, args.records, int(time.time() * 1000) - 3_000_000, 1000
    )
    samples = args.records * args.metrics
    source = f"bench.raw.{run_id}"
    await ensure_topics(
        settings.kafka(),
        [
            TopicRequest(source, settings.topic_partitions, {}),
            TopicRequest(source + ".out", settings.topic_partitions, {}),
        ],
    )
    progress(f"raw aiokafka passthrough over {args.records:,} records ({samples:,} samples)")
    await produce(settings.kafka(), source, records)
    raw = _raw_in_subprocess(settings, source, args.records)
    progress(f"  {raw['samples_per_s']:,.0f} samples/s")
    groups, fixed = [], []
    for n in args.workers:
        logs = Path(settings.stack_dir) / "logs"
        workers = [
            WorkerProcess(
                settings, f"bench-{run_id}-{n}", logs / f"bench-worker-{run_id}-{n}-{k}.log",
                FORESIGHT_LOG_LEVEL="WARNING",
            ).start()
            for k in range(n)
        ]  # fmt: skip
        try:
            await group_ready(workers, timeout_s=180)
            progress(f"{n} worker(s) at the maximum rate")
            profile = None
            if args.profile and n == args.workers[0]:
                assert workers[0].process is not None
                profile = Profile(workers[0].process.pid, args.profile)
            peak = await max_rate(settings, workers, records, args.metrics)
            if profile is not None:
                profile.stop()
            progress(f"  {peak['samples_per_s']:,.0f} samples/s")
            groups.append(peak)
            for rate in args.rates if n == args.workers[0] else []:
                progress(f"worker(s) at {rate:,.0f} samples/s for {args.seconds:.0f}s")
                result = await fixed_rate(
                    settings, workers, rate, args.seconds, args.entities, args.fixed_metrics,
                    args.warmup_s,
                )  # fmt: skip
                progress(
                    f"  p50 {_ms(result['latency_ms_p50'])} ms, "
                    f"p99 {_ms(result['latency_ms_p99'])} ms, "
                    f"worker CPU {result['worker_cpu_per_s']:.2f} s/s "
                    f"(the warm-up's p99: {_ms(result['warmup_latency_ms_p99'])} ms)"
                )
                fixed.append(result)
        finally:
            for worker in workers:
                worker.stop()
    peak = groups[0]
    return {
        "machine": {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")},
        "setup": {
            "entities": args.entities,
            "samples_per_record": args.metrics,
            "records": args.records,
            "step_s": settings.step_s,
        },
        "raw_passthrough": raw,
        "pipeline_max": peak,
        "ratio_to_raw": peak["samples_per_s"] / raw["samples_per_s"],
        "groups": [
            {**g, "ratio_to_first": g["samples_per_s"] / peak["samples_per_s"]} for g in groups
        ],
        "fixed_rates": fixed,
    }


def print_table(result: dict[str, Any]) -> None:
    raw = result["raw_passthrough"]
    print(f"{'contender':<34}{'samples/s':>14}")
    print(f"{'raw aiokafka passthrough':<34}{raw['samples_per_s']:>14,.0f}")
    for g in result["groups"]:
        print(
            f"{'Foresight worker(s) x' + str(g['workers']) + ' (max rate)':<34}"
            f"{g['samples_per_s']:>14,.0f}   {g['samples_per_s'] / raw['samples_per_s']:.0%} of "
            f"raw, {g['ratio_to_first']:.2f}x the first, {g['prediction_batches_per_s']:,.0f} "
            f"batches/s ({g['predictions_per_s']:,.0f} predictions/s), "
            f"{g['worker_cpu_per_s']:.2f} CPU"
        )
    print()
    print(
        f"{'offered samples/s':>18}{'achieved':>12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'worst second p99':>18}{'in worker p99':>15}{'batches/s':>11}{'predictions/s':>15}"
        f"{'worker CPU':>12}{'warm-up p99 ms':>16}"
    )
    for r in result["fixed_rates"]:
        seconds = [p99 for p99 in r["by_second"]["latency_ms_p99"] if p99 is not None]
        print(
            f"{r['rate_samples_per_s']:>18,.0f}{r['achieved_samples_per_s']:>12,.0f}"
            f"{_ms(r['latency_ms_p50']):>9}{_ms(r['latency_ms_p95']):>9}"
            f"{_ms(r['latency_ms_p99']):>9}{_ms(max(seconds, default=None)):>18}"
            f"{_ms(r['worker_latency_ms_p99']):>15}"
            f"{r['prediction_batches_per_s']:>11,.0f}{r['predictions_per_s']:>15,.0f}"
            f"{r['worker_cpu_per_s']:>12.2f}{_ms(r['warmup_latency_ms_p99']):>16}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="foresight bench pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=50, help="samples per record (max rate)")
    parser.add_argument("--records", type=int, default=40_000, help="records for the max rate")
    parser.add_argument(
        "--rates", type=float, nargs="*", default=[20_000.0], help="fixed rates in samples/s"
    )
    parser.add_argument(
        "--fixed-metrics",
        type=int,
        default=20,
        help="samples per record at fixed rates (20: a host's scrape)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per fixed rate")
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=30.0,
        help="seconds before each fixed rate measured apart (the entities' cold start)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[1],
        help="worker group sizes, each measured at the maximum rate (fixed rates: the first)",
    )
    parser.add_argument(
        "--profile", help="write a py-spy profile of the first worker at the maximum rate here"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args, load_settings()))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
