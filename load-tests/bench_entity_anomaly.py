"""Entity anomaly scores on correlated faults that no single metric shows.

The simulator's hosts (their shared load curve drives CPU, network, disk I/O, queue and
latency together) run clean; then faults are written into their metrics that break how the
metrics move together, each held inside the host's own normal range (its 1st to 99th
percentile over the clean run), so no metric alone leaves it:

* ``cpu_without_load``: CPU climbs (a runaway process) while traffic stays as it was;
* ``throughput_drop``: network and disk I/O fall (traffic lost upstream) while CPU does not;
* ``latency_decoupled``: latency and queue depth climb (a slow dependency) at steady load;
* ``load_inversion``: CPU falls to its quiet level while traffic stays at its day level;
* ``pressure``: memory, CPU and error rate each rise a little at once.

Every detector scores every host step by step, causally, as the stream would, and is judged
on the steps after ``--warmup-s``: the area under the precision-recall curve per point
(average precision), and at an alert threshold the incidents caught and the false alarms
per host per day, alerts counted as the stream's anomaly rule raises them. The contenders:

* ``entity``: :class:`models.entity_anomaly.EntityAnomalyDetector`, the stream's settings;
* ``entity_independent``: the same with no principal directions (the metrics' z-scores
  combined as if independent);
* ``max_per_metric``: the stream's per-metric detector, the maximum over the metrics;
* ``rolling_z``: the largest absolute z-score of a metric against its last hour.

Thresholds of the last three are chosen on the ``--tune`` seeds (the one catching the most
incidents with at most ``--max-false-per-day`` false alarms per host per day) and reported
on the ``--seeds``; the entity score uses the threshold of the settings, untuned.

Every contender is judged twice: on the simulator's hosts as they are (``contenders``), and
with five awkward metrics added to each host, such as real exporters report beside the
smooth ones (``with_awkward_metrics``): a device that never moves, an error counter at zero
but for rare blips, a process count that steps by one now and then, a heavy-tailed metric,
and a gauge quantised to levels 25 apart. None of them is touched by the faults.

Then ``small_hosts``, the entity score alone on hosts of two or three metrics (a quiet one,
CPU noise and nothing else, and a cycling one, CPU and memory following a 12-hour cycle), with
something happening halfway, per seed: harmless changes that should raise no alert (a process
count stepping by one for good, a process count that wanders, an error counter's rare blips)
and breaks that should (memory leaving CPU for ten minutes, CPU six deviations up for ten
minutes). Each reports the alerts the anomaly rule raises in the hour after the change and
the minutes at or above the threshold.

    python load-tests/bench_entity_anomaly.py --tune 0 1 2 --seeds 3 4 5 6 7 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.alerts import AlertRule, AlertState, anomaly_rule, evaluate
from models.entity import ModelSet, PipelineConfig
from models.entity_anomaly import EntityAnomalyDetector
from models.incident_report import Incident, match_alerts
from models.training import average_precision
from streams.settings import load_settings
from streams.simulation import METRIC_NAMES, Simulation, SimulationConfig

FloatArray = npt.NDArray[np.float64]
FAULTS = (
    "cpu_without_load", "throughput_drop", "latency_decoupled", "load_inversion", "pressure"
)  # fmt: skip
_M = {name: i for i, name in enumerate(METRIC_NAMES)}
_DAY_S = 86_400.0


@dataclass(frozen=True)
class Fault:
    host: int
    kind: str
    start: int  # step
    end: int  # step, exclusive


@dataclass(frozen=True)
class Fleet:
    """One seed's hosts: values (steps, hosts, metrics), event times, faults, truth."""

    values: FloatArray
    times: npt.NDArray[np.int64]
    faults: list[Fault]
    truth: npt.NDArray[np.bool_]  # (steps, hosts)
    step_s: float


def make_fleet(seed: int, hosts: int, duration_s: float, warmup_s: float) -> Fleet:
    """A clean simulated fleet with correlated faults written in, inside each host's range."""
    step_s = 10.0
    simulation = Simulation(SimulationConfig(hosts=hosts, agents=0, seed=seed, incidents=()))
    records = [r for topic, _, r in simulation.events(duration_s) if topic == "telemetry.metrics"]
    steps = len(records) // hosts
    values = np.array([r["values"] for r in records[: steps * hosts]]).reshape(steps, hosts, -1)
    times = np.array([r["event_time"] for r in records[: steps * hosts : hosts]], dtype=np.int64)
    low, high = np.percentile(values, 1, axis=0), np.percentile(values, 99, axis=0)
    span = high - low
    rng = np.random.default_rng(10_000 + seed)
    first = int(warmup_s / step_s)
    faults = []
    truth = np.zeros((steps, hosts), dtype=bool)
    faulty = values.copy()
    for host in range(hosts):
        at = first + int(rng.integers(60, 360))
        while True:
            length = int(rng.integers(60, 240))  # 10 to 40 minutes
            if at + length >= steps:
                break
            kind = FAULTS[int(rng.integers(len(FAULTS)))]
            size = float(rng.uniform(0.25, 0.5))
            ramp = np.minimum(1.0, (np.arange(length) + 1) / 12.0)[:, None]  # 2-minute onset
            window = faulty[at : at + length, host]
            window += ramp * size * _shift(kind, window, low[host], span[host])
            faulty[at : at + length, host] = np.clip(window, low[host], high[host])
            faults.append(Fault(host, kind, at, at + length))
            truth[at : at + length, host] = True
            at += length + int(rng.integers(360, 1440))  # 1 to 4 hours apart
    return Fleet(faulty, times, faults, truth, step_s)


def with_awkward_metrics(fleet: Fleet, seed: int) -> Fleet:
    """``fleet`` with five awkward metrics added to every host (see the module docstring)."""
    steps, hosts, _ = fleet.values.shape
    rng = np.random.default_rng(20_000 + seed)
    shape = (steps, hosts)
    idle = np.zeros(shape)
    errors = (rng.random(shape) < 0.002) * rng.integers(1, 5, shape)
    processes = 120 + np.cumsum((rng.random(shape) < 0.003) * rng.choice([-1, 1], shape), axis=0)
    heavy_tailed = 3.0 + 0.5 * np.abs(rng.standard_cauchy(shape))
    quantised = np.round(fleet.values[:, :, _M["cpu_percent"]] / 25.0) * 25.0
    extra = np.stack([idle, errors, processes, heavy_tailed, quantised], axis=2)
    return replace(fleet, values=np.concatenate([fleet.values, extra], axis=2))


def _shift(kind: str, window: FloatArray, low: FloatArray, span: FloatArray) -> FloatArray:
    """The displacement a fault of ``kind`` applies at full size (one host's steps)."""
    shift = np.zeros_like(window)
    match kind:
        case "cpu_without_load":
            shift[:, _M["cpu_percent"]] = span[_M["cpu_percent"]]
        case "throughput_drop":
            for name in ("network_mbps", "disk_io_mbps"):
                shift[:, _M[name]] = -(window[:, _M[name]] - low[_M[name]])
        case "latency_decoupled":
            for name in ("request_latency_ms", "queue_depth"):
                shift[:, _M[name]] = span[_M[name]]
        case "load_inversion":
            cpu = _M["cpu_percent"]
            shift[:, cpu] = -(window[:, cpu] - low[cpu])
        case "pressure":
            for name in ("memory_percent", "cpu_percent", "error_rate"):
                shift[:, _M[name]] = 0.6 * span[_M[name]]
    return shift


Scorer = Callable[[Fleet], FloatArray]


def entity_scores(detector: EntityAnomalyDetector) -> Scorer:
    def score(fleet: Fleet) -> FloatArray:
        steps, hosts, metrics = fleet.values.shape
        state = detector.init_state(hosts * metrics)
        entity_state = detector.init_entity_state(hosts)
        starts = np.arange(hosts + 1) * metrics
        out = np.empty((steps, hosts))
        for k in range(steps):
            out[k] = detector.score_learn(
                state, entity_state, fleet.values[k].reshape(-1), starts
            ).scores
        return out

    return score


def max_per_metric(fleet: Fleet) -> FloatArray:
    detector = ModelSet(PipelineConfig()).detector  # configured as the stream's
    steps, hosts, metrics = fleet.values.shape
    state = detector.init_state(hosts * metrics)
    out = np.empty((steps, hosts))
    for k in range(steps):
        scores = detector.score_learn(state, fleet.values[k].reshape(-1), int(fleet.times[k]))
        out[k] = scores.reshape(hosts, metrics).max(axis=1)
    return out


def rolling_z(fleet: Fleet, window: int = 360) -> FloatArray:
    """The largest |z| of a metric against its previous ``window`` steps, mapped to [0, 1)."""
    v = fleet.values
    total = np.cumsum(np.concatenate([np.zeros((1, *v.shape[1:])), v]), axis=0)
    squares = np.cumsum(np.concatenate([np.zeros((1, *v.shape[1:])), v * v]), axis=0)
    steps = v.shape[0]
    k = np.arange(steps)
    lo = np.maximum(k - window, 0)
    n = (k - lo)[:, None, None]
    with np.errstate(all="ignore"):
        mean = (total[k] - total[lo]) / n
        var = (squares[k] - squares[lo]) / n - mean * mean
        z = np.abs(v - mean) / np.sqrt(np.maximum(var, 1e-12))
    z = np.where(n >= 30, np.nan_to_num(z, nan=0.0, posinf=0.0), 0.0).max(axis=2)
    scaled: FloatArray = 1.0 - np.exp(-z / 5.0)
    return scaled


def incidents(fleet: Fleet, scores: FloatArray, rule: AlertRule, first: int) -> dict[str, Any]:
    """Alerts from ``scores`` by ``rule`` after step ``first``, matched to the faults."""
    alerts = []
    for host in range(scores.shape[1]):
        state = AlertState()
        for k in range(first, scores.shape[0]):
            alert = evaluate(rule, state, f"h{host}", scores[k, host], "*", int(fleet.times[k]))
            if alert is not None:
                alerts.append(alert)
    report = match_alerts(
        [Incident(f"h{f.host}", f.kind, int(fleet.times[f.start]),
                  int(fleet.times[min(f.end, len(fleet.times) - 1)])) for f in fleet.faults],
        alerts,
    )  # fmt: skip
    return {
        "incidents": len(report.outcomes),
        "caught": report.caught,
        "false_alarms": len(report.false_alarms),
        "by_kind": {
            kind: [o.caught for o in report.outcomes if o.incident_type == kind].count(True)
            for kind in FAULTS
        },
    }


def judge(
    fleets: list[Fleet], scores: list[FloatArray], rule: AlertRule, first: int
) -> dict[str, Any]:
    """AUC-PR per point and incident recall and false alarms over several fleets."""
    points = np.concatenate([s[first:].reshape(-1) for s in scores])
    truth = np.concatenate([f.truth[first:].reshape(-1) for f in fleets])
    runs = [incidents(f, s, rule, first) for f, s in zip(fleets, scores, strict=True)]
    host_days = sum((len(f.times) - first) * f.step_s * f.values.shape[1] for f in fleets) / _DAY_S
    total = sum(r["incidents"] for r in runs)
    caught = sum(r["caught"] for r in runs)
    false_alarms = sum(r["false_alarms"] for r in runs)
    return {
        "auc_pr": round(average_precision(truth.astype(np.int8), points) or 0.0, 4),
        "threshold": rule.threshold,
        "incidents": total,
        "caught": caught,
        "recall": round(caught / max(total, 1), 3),
        "false_alarms": false_alarms,
        "false_alarms_per_host_day": round(false_alarms / host_days, 3),
        "caught_by_kind": {k: sum(r["by_kind"][k] for r in runs) for k in FAULTS},
    }


def tuned_rule(
    fleets: list[Fleet], scores: list[FloatArray], base: AlertRule, first: int, budget: float
) -> AlertRule:
    """The threshold catching the most tuning incidents within ``budget`` false alarms per
    host per day (the highest threshold among equals)."""
    best, best_caught = base, -1
    for threshold in np.round(np.arange(0.30, 0.995, 0.02), 2).tolist():
        rule = _rule(base, threshold)
        result = judge(fleets, scores, rule, first)
        if result["false_alarms_per_host_day"] <= budget and result["caught"] > best_caught:
            best, best_caught = rule, result["caught"]
    return best


SMALL_HOST_STEPS = 3000  # 8 hours and 20 minutes of 10 s steps
SMALL_HOST_CHANGE = 1500


def small_hosts(seed: int) -> dict[str, tuple[FloatArray, bool]]:
    """Hosts of two or three metrics (steps, metrics) with a change at step
    ``SMALL_HOST_CHANGE``, each with whether the change should raise an alert."""
    rng = np.random.default_rng(30_000 + seed)
    steps, at = SMALL_HOST_STEPS, SMALL_HOST_CHANGE
    k = np.arange(steps)
    quiet = 20.0 + rng.normal(0.0, 1.0, steps)
    load = 0.5 + 0.3 * np.sin(2 * np.pi * k / 4320)  # a 12-hour cycle
    cpu = 10.0 + 60.0 * load + rng.normal(0.0, 2.0, steps)
    memory = 30.0 + 20.0 * load + rng.normal(0.0, 0.5, steps)
    stepped_once = np.where(k < at, 200.0, 201.0)
    wandering = 200.0 + np.cumsum(rng.choice([-1.0, 0.0, 1.0], steps, p=[0.05, 0.9, 0.05]))
    blips = (rng.random(steps) < 0.002) * rng.integers(1, 5, steps).astype(np.float64)
    apart = memory.copy()
    apart[at : at + 60] += 6.0  # twelve of its deviations, with no CPU to go with it
    busy = quiet.copy()
    busy[at : at + 60] += 6.0
    hosts = {
        "quiet, a count steps once": (np.c_[quiet, stepped_once], False),
        "quiet, a count wanders": (np.c_[quiet, wandering], False),
        "quiet, error blips": (np.c_[quiet, blips], False),
        "quiet, CPU up for 10 min": (np.c_[busy, wandering], True),
        "cycling, a count steps once": (np.c_[cpu, memory, stepped_once], False),
        "cycling, memory leaves CPU": (np.c_[cpu, apart], True),
    }
    return hosts


def judge_small_hosts(
    detector: EntityAnomalyDetector, rule: AlertRule, seeds: list[int]
) -> dict[str, Any]:
    """The entity score on :func:`small_hosts`: per host and seed, alerts in the hour after
    the change and minutes at or above the threshold; the highest score before it."""
    out: dict[str, Any] = {}
    hour = 360
    for seed in seeds:
        for name, (values, expected) in small_hosts(seed).items():
            metrics = values.shape[1]
            state, entity = detector.init_state(metrics), detector.init_entity_state(1)
            starts = np.array([0, metrics])
            scores = np.array(
                [detector.score_learn(state, entity, v, starts).scores[0] for v in values]
            )
            alert_state, fired = AlertState(), 0
            for k in range(detector.warmup, SMALL_HOST_CHANGE + hour):
                alert = evaluate(rule, alert_state, "h", float(scores[k]), "*", k * 10_000)
                fired += (
                    k >= SMALL_HOST_CHANGE and alert is not None and alert["status"] == "FIRING"
                )
            after = scores[SMALL_HOST_CHANGE : SMALL_HOST_CHANGE + hour]
            entry = out.setdefault(
                name,
                {"should_alert": expected, "alerts": [], "minutes_at_threshold": [],
                 "max_before": []},
            )  # fmt: skip
            entry["alerts"].append(fired)
            entry["minutes_at_threshold"].append(
                round(float((after >= rule.threshold).sum()) / 6.0, 1)
            )
            entry["max_before"].append(
                round(float(scores[detector.warmup : SMALL_HOST_CHANGE].max()), 3)
            )
    return out


def _rule(base: AlertRule, threshold: float) -> AlertRule:
    return replace(base, threshold=threshold, clear=threshold / 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tune", type=int, nargs="+", default=[0, 1, 2], help="tuning seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6, 7])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--duration-s", type=float, default=12 * 3600.0)
    parser.add_argument("--warmup-s", type=float, default=3 * 3600.0)
    parser.add_argument("--max-false-per-day", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    settings = load_settings()
    rule = anomaly_rule(settings.entity_anomaly_threshold)
    contenders: dict[str, Scorer] = {
        "entity": entity_scores(EntityAnomalyDetector(warmup=settings.anomaly_warmup_steps)),
        "entity_independent": entity_scores(
            EntityAnomalyDetector(components=0, warmup=settings.anomaly_warmup_steps)
        ),
        "max_per_metric": max_per_metric,
        "rolling_z": rolling_z,
    }
    tune = [make_fleet(s, args.hosts, args.duration_s, args.warmup_s) for s in args.tune]
    test = [make_fleet(s, args.hosts, args.duration_s, args.warmup_s) for s in args.seeds]
    first = int(args.warmup_s / 10.0)
    judged: dict[str, dict[str, Any]] = {}
    for label, awkward in (("contenders", False), ("with_awkward_metrics", True)):
        if awkward:
            tune = [with_awkward_metrics(f, s) for f, s in zip(tune, args.tune, strict=True)]
            test = [with_awkward_metrics(f, s) for f, s in zip(test, args.seeds, strict=True)]
        results: dict[str, Any] = {}
        judged[label] = results
        for name, scorer in contenders.items():
            tuned = (
                rule
                if name == "entity"
                else tuned_rule(
                    tune, [scorer(f) for f in tune], rule, first, args.max_false_per_day
                )
            )
            results[name] = judge(test, [scorer(f) for f in test], tuned, first)
    small = judge_small_hosts(
        EntityAnomalyDetector(warmup=settings.anomaly_warmup_steps), rule, args.seeds
    )
    result = {
        "tune_seeds": args.tune,
        "seeds": args.seeds,
        "hosts": args.hosts,
        "duration_s": args.duration_s,
        **judged,
        "small_hosts": small,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for label, results in judged.items():
        print(f"{label.replace('_', ' '):<20} {'AUC-PR':>7} {'thresh':>6} {'caught':>9} "
              f"{'false/host-day':>15}")  # fmt: skip
        for name, r in results.items():
            print(
                f"  {name:<18} {r['auc_pr']:>7.3f} {r['threshold']:>6.2f} "
                f"{r['caught']:>4}/{r['incidents']:<4} {r['false_alarms_per_host_day']:>15.2f}"
            )
    print(f"{'small hosts (entity)':<30} {'should alert':>12}  alerts; minutes at the threshold")
    for name, r in small.items():
        print(
            f"  {name:<28} {'yes' if r['should_alert'] else 'no':>12}  {r['alerts']}; "
            f"{r['minutes_at_threshold']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
