"""Benchmark: the Redis read path of the gateway's API, ``FeatureStore.predictions`` per entity.

Caches ``--entities`` PredictionBatch records (60 s TTL, unique names), then times
``--reads`` sequential single-entity reads, and the same number spread over ``--concurrency``
concurrent tasks on one client. Reports p50/p99/max per read and reads/s.

    .venv/bin/python load-tests/bench_redis_read.py --reads 20000 --concurrency 64 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import numpy as np

from connectors.redis_store import FeatureStore
from streams.settings import load_settings


def batch(entity: str, now_ms: int) -> dict[str, Any]:
    return {
        "prediction_id": f"{entity}@{now_ms}",
        "entity": entity,
        "event_time": now_ms,
        "emitted_at": now_ms,
        "latency_ms": 3.0,
        "predictions": [
            {
                "metric": f"metric_{m}",
                "kind": kind,
                "model": "bench",
                "model_version": "1",
                "horizon_s": 300,
                "value": 50.0,
                "score": 0.1,
                "lower": 40.0,
                "upper": 60.0,
            }
            for m in range(5)
            for kind in ("ANOMALY", "FORECAST")
        ],
    }


def summary(seconds: list[float], wall: float) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "reads_per_s": round(len(seconds) / wall),
    }


async def bench(url: str, entities: int, reads: int, concurrency: int) -> dict[str, Any]:
    store = FeatureStore(url, prediction_ttl_s=60)
    names = [f"bench-{uuid.uuid4().hex[:8]}-{i}" for i in range(entities)]
    now_ms = int(time.time() * 1000)
    try:
        await store.put_predictions(batch(name, now_ms) for name in names)

        async def read(i: int, out: list[float]) -> None:
            start = time.perf_counter()
            (cached,) = await store.predictions([names[i % entities]])
            out.append(time.perf_counter() - start)
            assert cached is not None

        sequential: list[float] = []
        start = time.perf_counter()
        for i in range(reads):
            await read(i, sequential)
        sequential_wall = time.perf_counter() - start

        concurrent: list[float] = []

        async def worker(offset: int) -> None:
            for i in range(offset, reads, concurrency):
                await read(i, concurrent)

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        concurrent_wall = time.perf_counter() - start
    finally:
        await store.close()
    return {
        "entities": entities,
        "reads": reads,
        "sequential": summary(sequential, sequential_wall),
        f"concurrent_{concurrency}": summary(concurrent, concurrent_wall),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=1000, help="cached entities")
    parser.add_argument("--reads", type=int, default=20_000, help="reads per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent readers")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    url = load_settings().feature_store_url
    report = asyncio.run(bench(url, args.entities, args.reads, args.concurrency))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['reads']:,} reads of {report['entities']:,} cached entities")
    for phase in ("sequential", f"concurrent_{args.concurrency}"):
        r = report[phase]
        print(
            f"  {phase:<16} p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, "
            f"{r['reads_per_s']:,} reads/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
