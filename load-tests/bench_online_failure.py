"""The online failure model on simulated fleets with delayed labels, through the worker's engine.

The worker's shadow model ``failure_risk_online`` learns from FAILURE labels while it scores:
each label resolves the steps logged before it. This benchmark replays simulated fleets
(several seeds; the default incident schedule repeated every hour, so memory leaks and disk
fills end in a failure again and again) through :class:`streams.engine.Engine`, metrics and
labels in event-time order as a worker consumes them, and scores the model's predictions as
they were made (each before the labels that resolve it, so nothing is scored on what it learned
from):

* **AUC-PR** and **Brier score** of every step's risk against "a failure of this entity
  follows within ``FORESIGHT_FAILURE_HORIZON_S``";
* the risk of the **hosts with no incident** over the last ``--tail-min`` minutes (median and
  largest): what the live page shows for a healthy host once the model has learned;
* the risk of a **steady drifter**, a host added beside the fleet whose memory rises slowly
  and steadily (``--drift-per-hour`` percent an hour, with a line that fits almost exactly),
  as a real host's does: a trend that fits is not a leak;
* the risk in the **minutes before each failure** (``--before-min``, median).

No Kafka: the pipeline benchmark measures the plumbing.

    python load-tests/bench_online_failure.py --seeds 3 [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.training import average_precision
from schemas.codec import Codec, Message
from schemas.predictions import prediction_rows
from streams import topics
from streams.engine import ONLINE_FAILURE_MODEL, Checkpoint, Engine, Input
from streams.setting_domains import Between, option
from streams.settings import Settings, load_settings
from streams.simulation import Simulation, SimulationConfig, default_incidents

DRIFTER = "steady-drift"


def fleet_inputs(
    seed: int, hosts: int, hours: int, drift_per_hour: float
) -> Iterator[tuple[str, Input]]:
    """The simulated fleet's metrics and labels, and the drifter's metrics at each scrape, as
    ``("metrics" | "labels", input)`` in event-time order."""
    incidents = [
        dataclasses.replace(i, start_s=i.start_s + hour * 3600 + 600)
        for hour in range(hours)
        for i in default_incidents(hosts, 0, span_s=3000.0)
    ]
    simulation = Simulation(
        SimulationConfig(hosts=hosts, agents=0, seed=seed, incidents=tuple(incidents))
    )
    codec, offsets, rng = Codec(), defaultdict[str, int](int), np.random.default_rng(seed)
    start_ms: int | None = None
    last_ms: int | None = None

    def make(topic: topics.TopicSpec, key: str, record: dict[str, Any], t_ms: int) -> Input:
        offsets[topic.name] += 1
        value = codec.encode(topic.schema, record)
        return Input(Message(topic.name, 0, offsets[topic.name], key.encode(), value), t_ms)

    for topic, key, record in simulation.events(hours * 3600.0):
        if topic == topics.LABELS.name:  # published when the truth is known: now
            yield "labels", make(topics.LABELS, key, record, last_ms or 0)
            continue
        t_ms = record["event_time"]
        if t_ms != last_ms:  # the first host of a scrape: the drifter's sample of it
            start_ms = t_ms if start_ms is None else start_ms
            last_ms, hours_in = t_ms, (t_ms - start_ms) / 3_600_000
            drift = {
                **record,
                "entity": DRIFTER,
                "labels": {"host": DRIFTER},
                "names": ["memory_percent", "disk_used_percent"],
                "values": [
                    45.0 + drift_per_hour * hours_in + rng.normal(0.0, 0.05),
                    60.0 + drift_per_hour / 5 * hours_in,
                ],
                "kinds": record["kinds"][:2],
            }
            yield "metrics", make(topics.METRICS, DRIFTER, drift, t_ms)
        yield "metrics", make(topics.METRICS, key, record, t_ms)


def replay(seed: int, args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """One fleet through an engine; the online model's scores against the failures."""
    engine = Engine(settings, Checkpoint, Codec(), "bench.routing")
    risks: list[tuple[str, int, float]] = []  # entity, step time, online risk
    chunk: list[tuple[str, Input]] = []

    def feed() -> None:
        now_s = max(i.timestamp_ms or 0 for _, i in chunk) / 1000 + 0.5  # clock: event time
        for kind in ("metrics", "labels"):
            items = [i for k, i in chunk if k == kind]
            if not items:
                continue
            out = getattr(engine, kind)(items, now_s)
            for r in out.records:
                if r.topic != topics.PREDICTIONS.name:
                    continue
                batch = engine.codec.decode(r.value)[1]
                for p in prediction_rows(batch, "FAILURE_RISK"):
                    if p["model"] == ONLINE_FAILURE_MODEL:
                        risks.append((batch["entity"], batch["event_time"], p["score"]))
        chunk.clear()

    simulation_failures: dict[str, list[int]] = defaultdict(list)
    incident_hosts: set[str] = set()
    for kind, item in fleet_inputs(seed, args.hosts, args.hours, args.drift_per_hour):
        if kind == "labels":
            label = engine.codec.decode(item.message.value)[1]
            incident_hosts.add(label["entity"])
            if label["kind"] == "FAILURE":
                simulation_failures[label["entity"]].append(label["start_time"])
        chunk.append((kind, item))
        if len(chunk) >= args.batch or kind == "labels":
            feed()
    if chunk:
        feed()
    horizon_ms = settings.failure_horizon_s * 1000
    truth = np.array([
        any(t <= f <= t + horizon_ms for f in simulation_failures.get(e, ())) for e, t, _ in risks
    ])  # fmt: skip
    scores = np.array([r for _, _, r in risks])
    end_ms = max(t for _, t, _ in risks)
    tail_ms = end_ms - args.tail_min * 60_000
    healthy = [r for e, t, r in risks if t > tail_ms and e not in incident_hosts | {DRIFTER}]
    drifter = [r for e, t, r in risks if t > tail_ms and e == DRIFTER]
    before = [
        r for e, t, r in risks
        if any(f - args.before_min * 60_000 <= t <= f for f in simulation_failures.get(e, ()))
    ]  # fmt: skip
    return {
        "seed": seed,
        "steps": len(risks),
        "failures": sum(map(len, simulation_failures.values())),
        "auc_pr": average_precision(truth.astype(np.int8), scores),
        "positive_share": float(truth.mean()),
        "brier": float(np.mean((scores - truth) ** 2)),
        "healthy_median": float(np.median(healthy)),
        "healthy_max": float(np.max(healthy)),
        "drifter_median": float(np.median(drifter)),
        "before_failure_median": float(np.median(before)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    count = option(Between(1), int)
    minutes = option(Between(0, above=True))
    parser.add_argument("--seeds", type=count, default=3)
    parser.add_argument(
        "--hosts", type=option(Between(3), int), default=20,
        help="simulated hosts: two fail every hour, at least one stays healthy",
    )  # fmt: skip
    parser.add_argument("--hours", type=count, default=4, help="simulated hours, one schedule each")
    parser.add_argument("--drift-per-hour", type=option(Between(0, 100)), default=0.5)
    parser.add_argument("--tail-min", type=minutes, default=30.0)
    parser.add_argument("--before-min", type=minutes, default=10.0)
    parser.add_argument("--batch", type=count, default=200, help="records per engine call")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    started = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        runs.append(replay(seed, args, settings))
        if not args.json:
            r = runs[-1]
            print(
                f"  seed {seed}: AUC-PR {r['auc_pr']:.3f}, Brier {r['brier']:.4f}, healthy "
                f"{r['healthy_median']:.3f} (max {r['healthy_max']:.3f}), drifter "
                f"{r['drifter_median']:.3f}, before failure {r['before_failure_median']:.3f}",
                file=sys.stderr,
            )
    keys = [k for k in runs[0] if k not in ("seed", "steps", "failures")]
    medians = {k: float(np.median([r[k] for r in runs])) for k in keys}
    result = {
        "model": ONLINE_FAILURE_MODEL,
        "horizon_s": settings.failure_horizon_s,
        "runs": runs,
        "median": medians,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = medians
        print(
            f"{ONLINE_FAILURE_MODEL}, medians of {args.seeds} seeds: AUC-PR {m['auc_pr']:.3f} "
            f"(positives {m['positive_share']:.1%}), Brier {m['brier']:.4f}; risk of healthy "
            f"hosts {m['healthy_median']:.3f} (max {m['healthy_max']:.3f}), of the steady "
            f"drifter {m['drifter_median']:.3f}, before a failure {m['before_failure_median']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
