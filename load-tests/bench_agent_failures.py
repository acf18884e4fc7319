"""Agent failure bursts on simulated agents: caught bursts and false alarms, per rule.

Simulated agents (``--agents``, with the workflows' own agents beside them at
``--workflows-per-min``) run for ``--hours``; two of them suffer a failure burst (most of the
tasks they start fail) of each length in ``--burst-min``, one early and one late in the run.
Every finished task goes through the worker's :class:`~models.agents.AgentTracker`, and two
rules are judged on the same steps:

* ``agent_failures``, the worker's rule: the recent failures against the agent's own usual
  rate (:meth:`~models.agents.AgentHealth.failure_surprise`);
* ``recent_rate_40``, the rule it replaced, kept here as the baseline: 40 % of the recent
  tasks (half-life 8 tasks) failed, for 3 tasks in a row.

A burst is caught when its agent's rule fires between the burst's start and 10 minutes after
its end; any other firing is a false alarm (reported per agent and simulated day). No Kafka:
the agent rules are plain code over events.

    python load-tests/bench_agent_failures.py --seeds 5 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.agents import AGENT_RULES, AgentTracker
from models.alerts import AlertRule, AlertState, evaluate
from streams.setting_domains import Between, option
from streams.simulation import Incident, IncidentType, Simulation, SimulationConfig

BASELINE = AlertRule(
    name="recent_rate_40",
    kind="FAILURE_RISK",
    threshold=0.4,
    clear=0.15,
    for_steps=3,
    severity="WARNING",
    summary="{entity}: {value:.0%} of recent tasks failed",
)
RULES = ("agent_failures", BASELINE.name)
_AFTER_S = 600.0  # a firing this long after a burst's end still counts as catching it


def bursts(agents: int, hours: float, minutes: float) -> tuple[Incident, ...]:
    """A burst of ``minutes`` on the first agent a quarter into the run, and on the third
    (the second when there are two) three quarters in."""
    late = "agent-03" if agents >= 3 else "agent-02"
    return tuple(
        Incident(IncidentType.AGENT_FAILURE_BURST, entity, share * hours * 3600, minutes * 60)
        for entity, share in (("agent-01", 0.25), (late, 0.75))
    )


def replay(seed: int, minutes: float, args: argparse.Namespace) -> dict[str, Any]:
    """One simulated run: each rule's firings judged against the bursts."""
    incidents = bursts(args.agents, args.hours, minutes)
    config = SimulationConfig(
        hosts=0, agents=args.agents, seed=seed, incidents=incidents,
        workflows_per_min=args.workflows_per_min,
    )  # fmt: skip
    simulation = Simulation(config)
    tracker = AgentTracker()
    baseline: dict[str, AlertState] = {}
    fired: dict[str, list[tuple[str, float]]] = {rule: [] for rule in RULES}
    agents: set[str] = set()
    for _, _, record in simulation.events(args.hours * 3600):
        if "phase" not in record or "agent" not in record:
            continue
        step = tracker.observe(record)
        if step is None:
            continue
        agent, t_s = record["agent"], (record["event_time"] - config.start_ms) / 1000
        agents.add(agent)
        for alert in step.alerts:
            if alert["rule"] == "agent_failures" and alert["status"] == "FIRING":
                fired["agent_failures"].append((agent, t_s))
        rate = tracker.health[agent].failure_rate
        state = baseline.setdefault(agent, AlertState())
        old = evaluate(BASELINE, state, agent, rate, "task_failure_rate", record["event_time"])
        if old is not None and old["status"] == "FIRING":
            fired[BASELINE.name].append((agent, t_s))

    def during(incident: Incident, agent: str, t_s: float) -> bool:
        end = incident.start_s + incident.duration_s + _AFTER_S
        return agent == incident.entity and incident.start_s <= t_s <= end

    return {
        rule: {
            "caught": sum(any(during(i, a, t) for a, t in firings) for i in incidents),
            "false_alarms": sum(not any(during(i, a, t) for i in incidents) for a, t in firings),
        }
        | {"bursts": len(incidents), "agents": len(agents)}
        for rule, firings in fired.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    count = option(Between(1), int)
    parser.add_argument("--seeds", type=count, default=5)
    parser.add_argument("--first-seed", type=option(Between(0), int), default=1)
    parser.add_argument("--agents", type=option(Between(2), int), default=5)
    parser.add_argument("--hours", type=option(Between(0.5)), default=8.0)
    parser.add_argument(
        "--burst-min", type=option(Between(0, above=True)), nargs="+", default=[5.0, 10.0],
        help="burst lengths in simulated minutes, each its own set of runs",
    )  # fmt: skip
    parser.add_argument("--workflows-per-min", type=option(Between(0)), default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if AGENT_RULES[0].name != "agent_failures":
        raise SystemExit(f"the worker's first agent rule is {AGENT_RULES[0].name}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results: list[dict[str, Any]] = []
    for minutes in args.burst_min:
        runs = [replay(seed, minutes, args) for seed in seeds]
        for rule in RULES:
            caught = sum(r[rule]["caught"] for r in runs)
            bursts_run = sum(r[rule]["bursts"] for r in runs)
            false_alarms = sum(r[rule]["false_alarms"] for r in runs)
            agent_days = sum(r[rule]["agents"] for r in runs) * args.hours / 24
            results.append(
                {
                    "burst_min": minutes,
                    "rule": rule,
                    "caught": caught,
                    "bursts": bursts_run,
                    "false_alarms": false_alarms,
                    "false_alarms_per_agent_day": round(false_alarms / agent_days, 3),
                }
            )
    summary = {
        "seeds": list(seeds),
        "agents": args.agents,
        "hours": args.hours,
        "workflows_per_min": args.workflows_per_min,
        "results": results,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"seeds {summary['seeds']}, {args.agents} agents and the workflows' own, "
          f"{args.hours:g} h each")  # fmt: skip
    print(f"{'burst':>7} {'rule':<16} {'caught':>9} {'false alarms':>13} {'per agent-day':>14}")
    for r in results:
        print(f"{r['burst_min']:>5g} m {r['rule']:<16} {r['caught']:>4} of {r['bursts']:<2} "
              f"{r['false_alarms']:>13} {r['false_alarms_per_agent_day']:>14.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
