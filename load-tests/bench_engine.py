"""Benchmark the worker's engine in process: no Kafka, no Faust, the CPU cost of its rules.

Feeds pre-encoded MetricBatch records (``--entities`` hosts, ``--metrics`` samples each,
one record per host every ``--scrape-s`` of event time) through
:meth:`streams.engine.Engine.metrics` a poll batch at a time, exactly as the worker does,
and reports what a process holding that engine costs:

* **samples/s** of CPU time (the process' own, so other jobs on the machine do not count)
  and of wall time, of the engine's calls after ``--warmup-s`` of event time (every entity
  is new then); the benchmark encodes each scrape round's records just before it feeds
  them, outside the timed calls, so it never holds more than a round of input;
* **predictions/s**: PredictionBatch records per CPU second;
* **CPU per event-second**: the median and the largest CPU time the calls of one second of
  event time took. A worker that keeps up on average still falls behind in a second that
  needs more than a second of CPU (every entity's step closing at once), and the records
  behind it wait: the largest over the median says how bursty the work is;
* **RSS** of the process after the warm-up and at the end (``/proc/self/status``), and its
  peak, and where the engine's memory goes (``memory``: model states in use and allocated,
  windows, checkpoint values kept between passes, as :meth:`streams.engine.Engine.held_bytes`
  counts them), with the in-memory bytes per series;
* **state bytes per series**: an entity's last checkpoint (windows and models, compressed),
  summed, over the series held;
* **changelog bytes per event-second**: what the checkpoints of the measured span write
  (windows snapshots, their journals and model states; the journals at a commit every
  ``FORESIGHT_WORKER_COMMIT_S`` of event time, as the worker writes them), per second of
  event time, which is the changelog's rate when the worker keeps up.

With ``--failure-model``, a trained XGBoost failure-risk model (200 rounds of depth 4, the
training defaults, over the bench's own features) is the registry's production version and
scores every step beside the online models, as a worker serving one does; its predictions at
or above ``FORESIGHT_EXPLAIN_MIN_RISK`` get their SHAP drivers.

``foresight bench engine`` runs this file; ``--profile FILE`` writes a py-spy profile of the
measured span when py-spy is installed. The pipeline benchmark measures the same engine
behind Kafka and Faust.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from profiling import Profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.features import feature_names
from models.registry import ModelRegistry
from models.training import (
    BOOSTER_FILE,
    FAILURE_RISK,
    XGBOOST_CLASSIFIER,
    FailureRiskModel,
    TrainingConfig,
)
from schemas.codec import Codec, Message
from streams import topics
from streams.engine import Checkpoint, Engine, Input
from streams.serving import serving_models
from streams.settings import Settings, load_settings

_METRIC_NAMES = "metric_{:03d}"


def make_inputs(
    entities: int, metrics: int, scrapes: int, scrape_ms: int, start_ms: int, partitions: int
) -> Iterator[list[Input]]:
    """Encoded MetricBatches, one list per scrape round (every entity once), as inputs,
    each round made when it is asked for."""
    codec = Codec()
    rng = np.random.default_rng(0)
    names = [_METRIC_NAMES.format(i) for i in range(metrics)]
    level = rng.uniform(10, 90, size=(entities, metrics))
    keys = [f"bench-{e:05d}" for e in range(entities)]
    offsets = [0] * partitions
    for k in range(scrapes):
        level += rng.normal(0, 0.5, level.shape)
        batch = []
        for e, key in enumerate(keys):
            record = {
                "entity": key,
                "event_time": start_ms + k * scrape_ms,
                "labels": {"bench": "engine"},
                "names": names,
                "values": level[e].tolist(),
                "source": "bench",
            }
            partition = e % partitions
            message = Message(
                topics.METRICS.name,
                partition,
                offsets[partition],
                key.encode(),
                codec.encode("metric_batch", record),
            )
            offsets[partition] += 1
            batch.append(Input(message, record["event_time"]))
        yield batch


def _rss_bytes() -> tuple[int, int]:
    """The process' resident set and its peak, from ``/proc/self/status`` (0 elsewhere)."""
    found = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found["VmRSS"], found["VmHWM"]


def serve_failure_model(settings: Settings, metrics: int, folder: str) -> Settings:
    """Train an XGBoost failure-risk model on random rows over the bench's features, make it
    production in a registry in ``folder``, and return the settings that read it."""
    rng = np.random.default_rng(1)
    features = feature_names([_METRIC_NAMES.format(i) for i in range(min(metrics, 10))])
    x = rng.uniform(0, 100, size=(4000, len(features)))
    y = (x[:, 0] + x[:, 5] + rng.normal(0, 20, len(x)) > 130).astype(np.int8)
    model = FailureRiskModel.fit(x, y, features, 1800, TrainingConfig())
    registry = ModelRegistry(folder)
    registry.register(
        FAILURE_RISK, {BOOSTER_FILE: model.booster_bytes()}, kind=XGBOOST_CLASSIFIER,
        features=features, since_ms=0, until_ms=1, params={"horizon_s": 1800, "threshold": 0.7},
    )  # fmt: skip
    registry.promote(FAILURE_RISK, "1")
    return dataclasses.replace(settings, model_registry_url=folder)


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    scrape_ms = int(args.scrape_s * 1000)
    scrapes = int(args.seconds / args.scrape_s)
    warm = int(args.warmup_s / args.scrape_s)
    start_ms = int(time.time() * 1000) - scrapes * scrape_ms - 60_000
    rounds = make_inputs(
        args.entities, args.metrics, scrapes, scrape_ms, start_ms, settings.topic_partitions
    )
    if args.failure_model:
        settings = serve_failure_model(settings, args.metrics, tempfile.mkdtemp())
    engine = Engine(settings, Checkpoint, Codec(), "bench.routing")
    served = serving_models(settings)
    engine.batch_models = [m.batch_model(settings.explain_min_risk) for m in served]
    measured = {"samples": 0, "predictions": 0, "records": 0, "changelog_bytes": 0}
    spent = {"cpu_s": 0.0, "wall_s": 0.0}
    per_second: dict[int, float] = defaultdict(float)  # CPU by second of event time
    committed_s = [0.0]

    def feed(items: Iterator[Input]) -> None:
        while chunk := list(itertools.islice(items, args.batch)):
            now_s = (chunk[-1].timestamp_ms or 0) / 1000 + 0.5  # the clock follows event time
            cpu, wall = time.process_time(), time.perf_counter()
            out = engine.metrics(chunk, now_s)
            if now_s - committed_s[0] >= settings.worker_commit_s:  # as the worker commits
                out.checkpoints += engine.commit()
                committed_s[0] = now_s
            took = time.process_time() - cpu
            spent["cpu_s"] += took
            per_second[(chunk[-1].timestamp_ms or 0) // 1000] += took
            spent["wall_s"] += time.perf_counter() - wall
            measured["samples"] += len(chunk) * args.metrics
            measured["records"] += len(chunk)
            measured["predictions"] += sum(r.topic == topics.PREDICTIONS.name for r in out.records)
            measured["changelog_bytes"] += sum(c.size for c in out.checkpoints)

    feed(itertools.chain.from_iterable(itertools.islice(rounds, warm)))
    rss_warm, _ = _rss_bytes()
    measured.update(dict.fromkeys(measured, 0))
    spent.update(dict.fromkeys(spent, 0.0))
    per_second.clear()
    profile = Profile(os.getpid(), args.profile) if args.profile else None
    feed(itertools.chain.from_iterable(rounds))
    if profile is not None:
        profile.stop()
    cpu_s, wall_s = spent["cpu_s"], spent["wall_s"]
    rss, peak = _rss_bytes()
    series = sum(len(p.windows.metrics) for p in engine.entities.values())
    # Every entity's whole state now, as its checkpoints would write it.
    windows = sum(len(p.windows_bytes()) for p in engine.entities.values())
    models = sum(len(p.models_bytes()) for p in engine.entities.values())
    held = engine.held_bytes()
    event_s = (scrapes - warm) * args.scrape_s
    return {
        "machine": {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")},
        "setup": {
            "entities": args.entities,
            "samples_per_record": args.metrics,
            "scrape_s": args.scrape_s,
            "step_s": settings.step_s,
            "event_seconds": args.seconds,
            "warmup_s": args.warmup_s,
            "batch": args.batch,
            "failure_model": args.failure_model,
            "explain_min_risk": settings.explain_min_risk,
        },
        "measured": measured,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "samples_per_cpu_s": measured["samples"] / cpu_s,
        "samples_per_wall_s": measured["samples"] / wall_s,
        "predictions_per_cpu_s": measured["predictions"] / cpu_s,
        "cpu_s_per_event_s": {
            "median": float(np.median(list(per_second.values()))),
            "max": max(per_second.values()),
        },
        "rss_after_warmup_bytes": rss_warm,
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
        "memory": held,
        "memory_bytes_per_series": (held["model_states"] + held["windows"]) / max(series, 1),
        "series": series,
        "state_bytes_per_series": (windows + models) / max(series, 1),
        "windows_bytes_per_series": windows / max(series, 1),
        "changelog_bytes_per_event_s": measured["changelog_bytes"] / event_s,
    }


def print_table(result: dict[str, Any]) -> None:
    s = result["setup"]
    print(
        f"{s['entities']:,} entities x {s['samples_per_record']} samples every "
        f"{s['scrape_s']:g}s (step {s['step_s']:g}s), {result['series']:,} series"
        + (", an XGBoost failure-risk model serving" if s["failure_model"] else "")
    )
    print(f"{'samples/s (CPU)':<34}{result['samples_per_cpu_s']:>14,.0f}")
    print(f"{'samples/s (wall)':<34}{result['samples_per_wall_s']:>14,.0f}")
    print(f"{'predictions/s (CPU)':<34}{result['predictions_per_cpu_s']:>14,.0f}")
    burst = result["cpu_s_per_event_s"]
    print(f"{'CPU ms per event-s, median (max)':<34}{burst['median'] * 1000:>14,.0f}"
          f" ({burst['max'] * 1000:,.0f})")  # fmt: skip
    print(f"{'RSS MiB (peak)':<34}{result['rss_bytes'] / 2**20:>14,.0f}"
          f" ({result['peak_rss_bytes'] / 2**20:,.0f})")  # fmt: skip
    print(f"{'RSS MiB after the warm-up':<34}{result['rss_after_warmup_bytes'] / 2**20:>14,.0f}")
    for holder, size in result["memory"].items():
        print(f"{'  ' + holder.replace('_', ' ') + ', MiB':<34}{size / 2**20:>14,.0f}")
    print(f"{'memory bytes per series':<34}{result['memory_bytes_per_series']:>14,.0f}")
    print(f"{'state bytes per series (saved)':<34}{result['state_bytes_per_series']:>14,.0f}")
    print(
        f"{'changelog bytes per event-second':<34}{result['changelog_bytes_per_event_s']:>14,.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="foresight bench engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=50, help="samples per record")
    parser.add_argument("--scrape-s", type=float, default=1.0, help="event seconds per scrape")
    parser.add_argument("--seconds", type=float, default=60.0, help="event seconds in all")
    parser.add_argument("--warmup-s", type=float, default=20.0, help="unmeasured event seconds")
    parser.add_argument("--batch", type=int, default=1000, help="records per engine call")
    parser.add_argument(
        "--failure-model", action="store_true", help="serve a trained XGBoost failure-risk model"
    )
    parser.add_argument("--profile", help="write a py-spy profile (raw, for flamegraphs) here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    # A worker holds FORESIGHT_MAX_ENTITIES (10,000 by default); past it every new entity
    # is dead-lettered: the benchmark measures holding them all, so the limit makes room.
    settings = settings.replace(max_entities=max(settings.max_entities, args.entities))
    result = run(args, settings)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
