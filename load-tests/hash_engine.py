"""Hash every output of the engine on varied simulated streams: a change meant to keep the
numbers (a speed-up) must leave the digest as it was.

Three runs feed encoded MetricBatch records through :meth:`streams.engine.Engine.metrics` a
poll batch at a time, with the wall clock fixed, and hash every record out, decoded (features,
predictions, alerts and their JSON twins, dead letters), every checkpoint, and at the end
every entity's whole state as its checkpoints would write it. The streams hold what the
worker meets: gauges, counters with resets, histograms, a scrape split in two records, late
records and replays, a metric set that varies and a value that is NaN, spikes that fire and
resolve alerts, disks filling up, entities out of phase; and they run long enough (up to
1,400 scrapes) for forecasts to be learned and the anomaly detectors to pass their warm-up.

Run it from a checkout before and after a change (``python load-tests/hash_engine.py``, or
``cd COPY && PYTHONPATH=COPY python load-tests/hash_engine.py`` for a ``git archive`` copy)
and compare the digests. It takes about half a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.codec import Codec, DecodeError, Message
from streams import topics
from streams.engine import Checkpoint, Engine, Input
from streams.settings import load_settings

_GAUGES = [f"g_{i:02d}" for i in range(18)]
# (entities, scrapes, ms between scrapes, seed, records per engine call)
RUNS = (
    (60, 400, 1000, 7, 97),  # 1 s scrapes: a step closes every ten
    (35, 320, 10_000, 3, 50),  # a step per record; the detectors pass their warm-up
    (12, 1400, 5000, 5, 31),  # forecasts learned 23 times, spikes that alert
)


def _series(e: int, k: int, scrapes: int, level: Any, counters: Any) -> tuple[Any, ...]:
    """Entity ``e``'s names, values and kinds at scrape ``k``, by its shape (``e % 7``)."""
    shape = e % 7
    spike = 40.0 if (k > scrapes * 0.7 and e % 5 == 1 and k % 9 < 4) else 0.0
    lv = level[e] + spike
    if shape == 0:  # gauges, a fixed set
        return _GAUGES, lv[:18].tolist(), []
    if shape == 1:  # gauges and counters, with kinds
        names = [*_GAUGES[:10], "req_total", "err_total", 'http_seconds_count{code="200"}']
        return names, lv[:10].tolist() + counters[e].tolist(), ["GAUGE"] * 10 + ["COUNTER"] * 3
    if shape == 2:  # a metric set that varies, now and then beyond the usual
        n = 40 if k % 50 == 7 else 10 + (k % 5)
        values = lv[:n].tolist()
        if k % 41 == 9:
            values[-1] = float("nan")
        return [f"v_{i:02d}" for i in range(n)], values, []
    if shape == 3:  # a histogram (derived quantiles) and a gauge
        names = [f'lat_bucket{{le="{b}"}}' for b in ("0.1", "0.5", "1", "+Inf")]
        c = counters[e, 0]
        values = [c * 0.2, c * 0.6, c * 0.9, c, c * 0.3, c, lv[0]]
        return (
            [*names, "lat_sum", "lat_count", "cpu_percent"],
            values,
            ["HISTOGRAM"] * 6 + ["GAUGE"],
        )
    if shape == 4:  # a scrape split in two records
        return (_GAUGES[:9] if k % 2 == 0 else _GAUGES[9:]), lv[:9].tolist(), []
    if shape == 5:  # capacity-bound signals
        names = ["memory_percent", "disk_used_percent", "cpu_percent", "go_goroutines"]
        return names, lv[:4].tolist(), []
    fill = min(99.0, 20 + 70 * k / scrapes + (e % 4) * 3)  # a disk filling up
    return (
        ["disk_used_percent", "memory_percent", "cpu_percent"],
        [fill, 50 + lv[1] * 0.1, lv[2]],
        [],
    )


def records(entities: int, scrapes: int, scrape_ms: int, seed: int) -> list[Input]:
    """The run's encoded MetricBatch records, in the order the engine takes them."""
    rng = np.random.default_rng(seed)
    codec = Codec()
    start = 1_900_000_000_000 + seed * 7_777
    offsets: Counter[int] = Counter()
    level = rng.uniform(10, 90, size=(entities, 40))
    counters = np.zeros((entities, 3))
    out: list[Input] = []
    for k in range(scrapes):
        level += rng.normal(0, 0.5, level.shape)
        counters += rng.uniform(0, 50, counters.shape)
        if k % 37 == 5:
            counters[k % entities] = 0  # a reset
        for e in range(entities):
            t = start + k * scrape_ms + (e % 3) * 137  # entities out of phase
            if e % 7 == 4 and k % 23 == 3:
                t -= 400_000  # late beyond the allowed lateness
            names, values, kinds = _series(e, k, scrapes, level, counters)
            key = f"hash-{e:04d}"
            record = {
                "entity": key,
                "event_time": t,
                "labels": {"shape": str(e % 7)},
                "names": names,
                "values": values,
                "kinds": kinds,
                "ended": ["go_goroutines"] if e % 7 == 5 and k % 11 == 0 else [],
                "source": "hash",
            }
            p = e % 4
            value = codec.encode("metric_batch", record)
            out.append(Input(Message(topics.METRICS.name, p, offsets[p], key.encode(), value), t))
            offsets[p] += 1
            if e % 97 == 3 and k % 13 == 2:  # a replay of the same offset
                out.append(out[-1])
    return out


def run(entities: int, scrapes: int, scrape_ms: int, seed: int, chunk: int) -> dict[str, Any]:
    """One run's digest, and counts of what it produced (to see that it covers something)."""
    codec = Codec()
    engine = Engine(load_settings(), Checkpoint, codec, "hash.routing")
    digest = hashlib.sha256()
    counts: Counter[str] = Counter()
    inputs = records(entities, scrapes, scrape_ms, seed)
    for i in range(0, len(inputs), chunk):
        part = inputs[i : i + chunk]
        out = engine.metrics(part, max(x.timestamp_ms or 0 for x in part) / 1000 + 0.5)
        for r in out.records:
            counts[r.topic] += 1
            decoded: Any
            try:
                _, decoded = codec.decode(r.value)
            except DecodeError:  # a JSON twin
                decoded = r.value
            digest.update(r.topic.encode() + (r.key or b""))
            digest.update(repr(decoded).encode())
            if r.topic == topics.DEADLETTER.name:
                counts["dead letters: " + decoded["error_kind"]] += 1
            if r.topic == topics.PREDICTIONS.name:
                counts.update("batches with " + kind for kind in set(decoded["kinds"]))
        for c in [*out.checkpoints, *engine.commit()]:  # the worker commits after passes
            counts["checkpoints"] += 1
            counts["model checkpoints"] += c.models is not None
            digest.update(repr((c.entity, c.windows, c.journal, c.models)).encode())
    for name in sorted(engine.entities):
        pipeline = engine.entities[name]
        digest.update(pipeline.windows_bytes() + pipeline.models_bytes())
    return {"sha256": digest.hexdigest(), "counts": dict(sorted(counts.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with mock.patch("time.time", return_value=2_000_000_000.0):  # emitted_at, latency_ms
        runs = [run(*spec) for spec in RUNS]
    total = hashlib.sha256("".join(r["sha256"] for r in runs).encode()).hexdigest()
    if args.json:
        print(json.dumps({"sha256": total, "runs": runs}, indent=2))
        return 0
    for spec, result in zip(RUNS, runs, strict=True):
        entities, scrapes, scrape_ms = spec[:3]
        print(f"{entities} entities x {scrapes} scrapes every {scrape_ms / 1000:g}s: "
              f"{result['sha256'][:16]}")  # fmt: skip
        print("  " + ", ".join(f"{k} {v:,}" for k, v in result["counts"].items()))
    print(f"all: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
