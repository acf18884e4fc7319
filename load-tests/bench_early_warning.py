"""Failure early warning on the simulator's incidents, with the stream's own models.

Replays simulated fleets (several seeds) through the same per-entity step the worker runs,
scrape by scrape, and scores the alerts against the injected incidents: the share of
failures (OOM, disk full) warned at least ``--lead-min`` minutes ahead, what else was caught,
and false alarms per entity per simulated day. No Kafka: this measures the models and alert
rules, the pipeline benchmark measures the plumbing.

    python load-tests/bench_early_warning.py --seeds 5 [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.entity import ModelSet, PipelineConfig, replay_scrapes
from models.incident_report import Incident, match_alerts
from streams.simulation import Simulation, SimulationConfig, default_incidents


def replay(seed: int, hosts: int, duration_s: float, quiet_s: float) -> dict[str, Any]:
    """One simulated fleet through the pipeline; its incident report."""
    models = ModelSet(PipelineConfig())
    incidents = tuple(
        dataclasses.replace(i, start_s=i.start_s + quiet_s)
        for i in default_incidents(hosts, 0, span_s=min(duration_s - quiet_s, 3600.0))
    )
    simulation = Simulation(SimulationConfig(hosts=hosts, agents=0, seed=seed, incidents=incidents))
    by_time: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for topic, _, record in simulation.events(duration_s):
        if topic == "telemetry.metrics":
            by_time[record["event_time"]].append(record)
    alerts: list[dict[str, Any]] = []
    for _, stepped in replay_scrapes(sorted(by_time.items()), models):
        for _, _, step_alerts in stepped:
            alerts += step_alerts
    report = match_alerts(
        [Incident(i.entity, str(i.incident_type), i.start_ms, i.end_ms, i.failure_ms)
         for i in simulation.incidents],
        alerts,
    )  # fmt: skip
    return report.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--duration-s", type=float, default=5400.0)
    parser.add_argument("--quiet-s", type=float, default=1800.0)
    parser.add_argument("--lead-min", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    reports = []
    for seed in range(args.seeds):
        reports.append(replay(seed, args.hosts, args.duration_s, args.quiet_s))
        if not args.json:
            print(
                f"  seed {seed}: {reports[-1]['caught']}/{reports[-1]['incidents']} caught, "
                f"{reports[-1]['false_alarms']} false alarms",
                file=sys.stderr,
            )
    outcomes = [o for r in reports for o in r["outcomes"]]
    failures = [o for o in outcomes if o["incident_type"] in ("memory_leak", "disk_fill")]
    warned = [o for o in failures if (o["lead_time_s"] or 0) >= args.lead_min * 60]
    others = [o for o in outcomes if o not in failures]
    entity_days = args.seeds * args.hosts * args.duration_s / 86_400
    false_alarms = sum(r["false_alarms"] for r in reports)
    result = {
        "seeds": args.seeds,
        "failures": len(failures),
        "warned_at_least_min": args.lead_min,
        "warned_share": len(warned) / max(len(failures), 1),
        "lead_time_min_median": float(
            np.median(
                [o["lead_time_s"] / 60 for o in failures if o["lead_time_s"] is not None] or [0]
            )
        ),
        "other_incidents_caught": f"{sum(o['caught'] for o in others)}/{len(others)}",
        "false_alarms": false_alarms,
        "false_alarms_per_entity_day": false_alarms / entity_days,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"failures warned >= {args.lead_min:g} min ahead: {len(warned)}/{len(failures)} "
            f"({result['warned_share']:.0%}), median lead {result['lead_time_min_median']:.1f} min"
        )
        print(f"other incidents caught: {result['other_incidents_caught']}")
        print(
            f"false alarms: {false_alarms} = {result['false_alarms_per_entity_day']:.2f} "
            "per entity per simulated day"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
