"""Workflow patterns and best-practice advice against the simulator's injected ground truth.

Each seed's :class:`~streams.simulation.WorkflowWorld` (three kinds of workflow; rare paths,
loops, stalls and a precursor error class injected into a few; releases without ``lint``
failing three times as often) is replayed through the worker's engine in process, as the
worker runs it: AgentEvents through :meth:`Engine.agent_events`, the workflow events it
re-keys onto the internal topic through :meth:`Engine.route`. No Kafka: this measures the
models and their wiring, not the plumbing.

Reported, over the seeds, per pattern alert: precision (the share of its alerts on a
workflow injected with that pattern; a rare-path alert on a loop counts as right, since a
loop is a rare path, but a loop is not needed for its recall) and recall (the share of
injected workflows it flagged). Workflows that started before ``--warmup`` workflows had
finished are left out of both, since nothing can be judged before the models have learned.
And the advice: whether the injected shape was published with the right sign, and what else
was published. Also the CPU per workflow event through the engine, and through the
:class:`~models.workflows.WorkflowTracker` alone.

    python load-tests/bench_workflows.py --seeds 5 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.incident_report import WORKFLOW_PATTERN_RULES, match_workflow_alerts  # noqa: E402
from models.workflows import ADVICE, WorkflowTracker  # noqa: E402
from schemas.codec import Codec, Message  # noqa: E402
from streams import topics  # noqa: E402
from streams.engine import Checkpoint, Engine, Input  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.simulation import INJECTED_ADVICE, WorkflowScenario, WorkflowWorld  # noqa: E402

INTERNAL = "bench.routing"


def replay(seed: int, workflows: int, warmup: int, batch: int) -> dict[str, Any]:
    """One seed's world through the engine: the alerts against the truth, and the cost."""
    now_ms = int(time.time() * 1000)
    span_ms = int(workflows / 10 * 60_000 * 1.5)  # the scenario's 10 a minute, with margin
    world = WorkflowWorld(WorkflowScenario(workflows=workflows, seed=seed,
                                           start_ms=now_ms - span_ms))  # fmt: skip
    codec = Codec()
    engine = Engine(Settings(), Checkpoint, codec, INTERNAL)
    events = list(world.events())
    alerts: list[dict[str, Any]] = []
    routed = 0
    started = time.process_time()
    for first in range(0, len(events), batch):
        inputs = [
            Input(Message(topics.AGENT_EVENTS.name, 0, first + i, key.encode(),
                          codec.encode("agent_event", record)))
            for i, (_, key, record) in enumerate(events[first : first + batch])
        ]  # fmt: skip
        out = engine.agent_events(inputs, now_ms / 1000)
        internal = [
            Input(Message(INTERNAL, 0, routed + i, r.key, r.value))
            for i, r in enumerate(r for r in out.records if r.topic == INTERNAL)
        ]
        routed += len(internal)
        out.extend(engine.route(internal, now_ms / 1000))
        alerts += [codec.decode(r.value)[1] for r in out.records if r.topic == topics.ALERTS.name]
    engine_cpu = time.process_time() - started
    tracker_cpu = _tracker_cpu(events)
    return {
        "seed": seed,
        "workflows": workflows,
        "events": len(events),
        "engine_us_per_event": engine_cpu / len(events) * 1e6,
        "tracker_us_per_event": tracker_cpu / len(events) * 1e6,
        "patterns": _score(world, alerts, warmup),
        "advice": _advice(alerts),
    }


def _tracker_cpu(events: list[tuple[str, str, dict[str, Any]]]) -> float:
    tracker = WorkflowTracker(Settings().workflow_config())
    started = time.process_time()
    for _, _, record in events:
        tracker.observe(record)
    return time.process_time() - started


def _score(world: WorkflowWorld, alerts: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Per pattern alert: true and false positives and misses, after the warm-up."""
    finished = sorted(
        (r["event_time"], r["workflow_id"]) for _, _, r in world.events()
        if r["parent_task_id"] is None and r["phase"] != "STARTED"
    )  # fmt: skip
    learned_ms = finished[min(warmup, len(finished) - 1)][0]
    starts = {r["workflow_id"]: r["event_time"] for _, _, r in world.events()
              if r["parent_task_id"] is None and r["phase"] == "STARTED"}  # fmt: skip
    judged = {w: world.truth[w].pattern for w, t in starts.items() if t >= learned_ms}
    scores = {
        o.rule: {"injected": o.injected, "alerts": o.alerted, "true_positives": o.right,
                 "found": o.caught}
        for o in match_workflow_alerts(judged, alerts)
    }  # fmt: skip
    return {"judged_workflows": len(judged), **scores}


def _advice(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """The advice standing at the end, and whether the injected shape is among it."""
    standing: dict[str, dict[str, Any]] = {}
    published = 0
    for alert in alerts:
        if alert["rule"] != ADVICE:
            continue
        if alert["status"] == "FIRING":
            standing[alert["entity"]] = alert
            published += 1
        else:
            standing.pop(alert["entity"], None)
    found: list[str] = []
    other: list[str] = []
    for entity, alert in sorted(standing.items()):
        kind, _, feature = entity.partition(":")
        signs = dict(INJECTED_ADVICE.get(kind, ()))
        right = feature in signs and (alert["value"] > 0) == (signs[feature] > 0)
        (found if right else other).append(alert["summary"])
    return {"published": published, "standing_found": found, "standing_other": other}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision and recall per pattern alert over every seed."""
    table = {}
    for rule in WORKFLOW_PATTERN_RULES:
        totals = {k: sum(r["patterns"][rule][k] for r in runs)
                  for k in ("injected", "alerts", "true_positives", "found")}  # fmt: skip
        table[rule] = {
            **totals,
            "precision": totals["true_positives"] / totals["alerts"] if totals["alerts"] else None,
            "recall": totals["found"] / totals["injected"] if totals["injected"] else None,
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workflows", type=int, default=3000, help="per seed")
    parser.add_argument("--warmup", type=int, default=500,
                        help="finished workflows before alerts are scored")  # fmt: skip
    parser.add_argument("--batch", type=int, default=500, help="events per engine call")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = []
    for seed in range(args.seeds):
        runs.append(replay(seed, args.workflows, args.warmup, args.batch))
        if not args.json:
            print(f"seed {seed}: {runs[-1]['events']:,} events", file=sys.stderr)
    table = summarise(runs)
    result = {
        "seeds": args.seeds,
        "workflows_per_seed": args.workflows,
        "warmup": args.warmup,
        "patterns": table,
        "advice_found_seeds": sum(bool(r["advice"]["standing_found"]) for r in runs),
        "advice_other": sum(len(r["advice"]["standing_other"]) for r in runs),
        "engine_us_per_event": sum(r["engine_us_per_event"] for r in runs) / len(runs),
        "tracker_us_per_event": sum(r["tracker_us_per_event"] for r in runs) / len(runs),
        "runs": runs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.seeds} seeds x {args.workflows:,} workflows, scored after {args.warmup} "
          "finished")  # fmt: skip
    print(f"{'alert':<20} {'injected':>9} {'alerts':>7} {'precision':>10} {'recall':>7}")
    for rule, row in table.items():
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        print(f"{rule:<20} {row['injected']:>9} {row['alerts']:>7} {precision:>10} {recall:>7}")
    print(f"advice: the injected shape stands at the end in {result['advice_found_seeds']} of "
          f"{args.seeds} seeds; other advice standing: {result['advice_other']}")  # fmt: skip
    for run in runs:
        for summary in run["advice"]["standing_found"] + run["advice"]["standing_other"]:
            print(f"  seed {run['seed']}: {summary}")
    print(
        f"CPU per workflow event: {result['engine_us_per_event']:.0f} us through the engine "
        f"(every agent-event step), {result['tracker_us_per_event']:.1f} us in the tracker"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
