"""Agent selection: the same seeded task stream routed by several policies, side by side.

Each seed's :class:`~streams.simulation.RoutingWorld` (heterogeneous agents whose speeds
drift, the fastest degrading from a third of the run and recovering at two thirds, bursts of
tasks with deadlines) is replayed as a discrete-event simulation under every policy:

* ``random`` and ``round-robin``;
* ``greedy``: today's :func:`models.agents.advise` (each agent tried once first, then the best
  expected time to success, no exploration, no view of load);
* ``river-ts``: River's Thompson sampling (``bandit.ThompsonSampling`` with a Gaussian reward,
  the negative log run time, a failure counting as three times its run), one per task type;
* ``learned``: :class:`models.routing.RoutingPolicy` with the concurrency limits
  :class:`models.routing.AgentConcurrency` learns, waiting tasks ordered by
  :func:`models.routing.task_order_key`; ``learned-fifo``: the same with first-come queues;
* ``oracle``: knows every agent's true current speed, failure rate and knee.

An agent runs up to twice its knee at once (slower past the knee) and queues the rest; a
failed run is routed again. Reported per policy: mean and p95 completion time (arrival to
success), deadline misses, load imbalance (coefficient of variation of busy time across
agents), cumulative regret (per decision, the true expected time to a success of the chosen
agent minus the best one's, then summed) and how many tasks the degraded agent got after it
became slower than the fleet's median agent until its share of a trailing window fell for
good to half a fair share.

    python load-tests/bench_routing.py --seeds 5 [--json]

``--live-rate R --live-seconds S`` also measures the decision latency through Kafka: a worker
of its own answers ``routing.requests`` sent at R a second for S seconds (needs the stack),
sent without linger as ``POST /v1/route`` sends them; and the worker's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from river import bandit, proba

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.agents import AgentTaskStats, advise  # noqa: E402
from models.routing import AgentConcurrency, RoutingPolicy, task_order_key  # noqa: E402
from streams.simulation import (  # noqa: E402
    MAX_ATTEMPTS,
    TASK_TYPES,
    RoutedTask,
    RoutingScenario,
    RoutingWorld,
)

QueueKey = Callable[[RoutedTask, int, float], tuple[Any, ...]]


@dataclass
class AgentState:
    """An agent in the simulation: tasks running, tasks waiting, time spent busy."""

    running: int = 0
    queue: list[tuple[tuple[Any, ...], int, RoutedTask, int]] = field(default_factory=list)
    busy_ms: float = 0.0
    busy_since: float = 0.0


class Router(Protocol):
    """A policy: choose an agent, and hear what became of the tasks."""

    def choose(self, task: RoutedTask, now_ms: int, sim: Replay) -> int: ...

    def started(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> None: ...

    def finished(
        self, agent: int, task: RoutedTask, duration_ms: float, ok: bool, now_ms: int, sim: Replay
    ) -> None: ...

    def queue_key(
        self, agent: int, task: RoutedTask, now_ms: int, sim: Replay
    ) -> tuple[Any, ...]: ...


class Fifo:
    """First come first served within a priority, and no learning: the baselines' base."""

    def started(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> None:
        return None

    def finished(
        self, agent: int, task: RoutedTask, duration_ms: float, ok: bool, now_ms: int, sim: Replay
    ) -> None:
        return None

    def queue_key(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> tuple[Any, ...]:
        return (-task.priority, now_ms)


class RandomRouter(Fifo):
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def choose(self, task: RoutedTask, now_ms: int, sim: Replay) -> int:
        return int(self.rng.integers(len(sim.agents)))


class RoundRobin(Fifo):
    def __init__(self) -> None:
        self.next = itertools.count()

    def choose(self, task: RoutedTask, now_ms: int, sim: Replay) -> int:
        return next(self.next) % len(sim.agents)


class Greedy(Fifo):
    """Today's advice: best expected time to success among agents with statistics."""

    def __init__(self) -> None:
        self.stats: dict[tuple[int, int], AgentTaskStats] = {}

    def choose(self, task: RoutedTask, now_ms: int, sim: Replay) -> int:
        names = sim.world.agents
        untried = [a for a in range(len(names)) if (a, task.task_type) not in self.stats]
        if untried:
            return untried[0]
        known = {names[a]: self.stats[(a, task.task_type)] for a in range(len(names))}
        decision = advise(TASK_TYPES[task.task_type], known, now_ms)
        assert decision is not None
        return names.index(decision["agent"])

    def started(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> None:
        self.stats.setdefault((agent, task.task_type), AgentTaskStats()).started(now_ms)

    def finished(
        self, agent: int, task: RoutedTask, duration_ms: float, ok: bool, now_ms: int, sim: Replay
    ) -> None:
        self.stats.setdefault((agent, task.task_type), AgentTaskStats()).finished(
            duration_ms, ok, now_ms
        )


class RiverThompson(Fifo):
    """River's Thompson sampling, one policy per task type, reward the negative log run time
    (a failure as three times its run)."""

    def __init__(self, seed: int) -> None:
        self.policies = {
            k: bandit.ThompsonSampling(reward_obj=proba.Gaussian(), seed=seed + k)  # type: ignore[no-untyped-call]
            for k in range(len(TASK_TYPES))
        }

    def choose(self, task: RoutedTask, now_ms: int, sim: Replay) -> int:
        return int(self.policies[task.task_type].pull(list(range(len(sim.agents)))))

    def finished(
        self, agent: int, task: RoutedTask, duration_ms: float, ok: bool, now_ms: int, sim: Replay
    ) -> None:
        cost = duration_ms * (1.0 if ok else 3.0)
        self.policies[task.task_type].update(agent, -math.log(max(cost, 1.0)))  # type: ignore[no-untyped-call]


class Learned:
    """:class:`RoutingPolicy` fed as the worker feeds it: loads and limits from the agents'
    events, outcomes as they finish, each decision pending until its task starts."""

    def __init__(self, seed: int, order: bool = True) -> None:
        self.policy = RoutingPolicy(seed=seed)
        self.concurrency = AgentConcurrency()
        self.order = order
        self.decide_s: list[float] = []

    def _publish_load(self, agent: int, sim: Replay) -> None:
        name = sim.world.agents[agent]
        self.policy.observe_load(
            name, self.concurrency.in_flight(name), self.concurrency.limit(name)
        )

    def choose(self, task: RoutedTask, now_ms: int, sim: Replay) -> int:
        started = time.perf_counter()
        choice = self.policy.decide(TASK_TYPES[task.task_type], sim.world.agents, now_ms)
        self.decide_s.append(time.perf_counter() - started)
        self.policy.assigned(choice.agent, sim.attempt_id(task), now_ms)
        return sim.world.agents.index(choice.agent)

    def started(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> None:
        name = sim.world.agents[agent]
        self.concurrency.started(name, sim.attempt_id(task))
        self.policy.started(name, sim.attempt_id(task))
        self._publish_load(agent, sim)

    def finished(
        self, agent: int, task: RoutedTask, duration_ms: float, ok: bool, now_ms: int, sim: Replay
    ) -> None:
        name, kind = sim.world.agents[agent], TASK_TYPES[task.task_type]
        arms = self.policy.arms.get(kind)
        residual = None
        if ok and arms is not None and name in arms.index and arms.n[arms.index[name]] > 0:
            residual = math.log(duration_ms) - float(arms.mean[arms.index[name]])
        self.policy.learn(name, kind, duration_ms, ok)
        self.concurrency.finished(name, sim.attempt_id(task), residual)
        self._publish_load(agent, sim)

    def queue_key(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> tuple[Any, ...]:
        if not self.order:
            return (-task.priority, now_ms)
        arms = self.policy.arms.get(TASK_TYPES[task.task_type])
        name = sim.world.agents[agent]
        expected = math.exp(arms.mean[arms.index[name]]) if arms and name in arms.index else 0.0
        return task_order_key(task.priority, task.deadline_ms, expected, now_ms)


class Oracle:
    """The agent with the smallest true expected time to a success, now."""

    def choose(self, task: RoutedTask, now_ms: int, sim: Replay) -> int:
        costs = sim.true_costs(task, now_ms)
        return int(np.argmin(costs))

    def started(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> None:
        return None

    def finished(
        self, agent: int, task: RoutedTask, duration_ms: float, ok: bool, now_ms: int, sim: Replay
    ) -> None:
        return None

    def queue_key(self, agent: int, task: RoutedTask, now_ms: int, sim: Replay) -> tuple[Any, ...]:
        running = int(sim.world.knee[agent])
        expected = sim.world.mean_ms(agent, task.task_type, now_ms, running)
        return task_order_key(task.priority, task.deadline_ms, expected, now_ms)


class Replay:
    """One policy's run of one world: events in time order, and what they cost."""

    def __init__(self, world: RoutingWorld, router: Router) -> None:
        self.world = world
        self.router = router
        self.agents = [AgentState() for _ in world.agents]
        self.events: list[tuple[float, int, str, Any]] = []
        self.order = itertools.count()
        self.attempts: dict[str, int] = {}
        self.done_ms: dict[str, float] = {}
        self.succeeded: dict[str, bool] = {}
        self.decisions: list[tuple[int, int]] = []  # (time, agent)
        self.regret_ms = 0.0

    def attempt_id(self, task: RoutedTask) -> str:
        return f"{task.task_id}/{self.attempts.get(task.task_id, 0)}"

    def true_costs(self, task: RoutedTask, now_ms: float) -> np.ndarray:
        """Each agent's true expected time to a success for ``task`` now: the wait behind
        its queue, its run at the concurrency it would start at, over its success rate."""
        world, kind = self.world, task.task_type
        costs = np.empty(len(self.agents))
        for a, state in enumerate(self.agents):
            slots = int(world.slots[a])
            behind = max(0, state.running + len(state.queue) + 1 - slots) / slots
            run_now = world.mean_ms(a, kind, now_ms, min(state.running + 1, slots))
            run_full = world.mean_ms(a, kind, now_ms, slots)
            costs[a] = (behind * run_full + run_now) / (1.0 - world.failure(a, kind, now_ms))
        return costs

    def route(self, task: RoutedTask, now_ms: float) -> None:
        costs = self.true_costs(task, now_ms)
        agent = self.router.choose(task, int(now_ms), self)
        self.regret_ms += float(costs[agent] - costs.min())
        self.decisions.append((int(now_ms), agent))
        state = self.agents[agent]
        if state.running < int(self.world.slots[agent]):
            self._start(agent, task, now_ms)
        else:
            key = self.router.queue_key(agent, task, int(now_ms), self)
            heapq.heappush(state.queue, (key, next(self.order), task, 0))

    def _start(self, agent: int, task: RoutedTask, now_ms: float) -> None:
        state = self.agents[agent]
        if state.running == 0:
            state.busy_since = now_ms
        state.running += 1
        self.router.started(agent, task, int(now_ms), self)
        attempt = self.attempts.get(task.task_id, 0)
        duration, ok = self.world.run(task, attempt, agent, now_ms, state.running)
        heapq.heappush(
            self.events,
            (now_ms + duration, next(self.order), "finish", (agent, task, duration, ok)),
        )

    def _finish(self, agent: int, task: RoutedTask, duration: float, ok: bool, now: float) -> None:
        state = self.agents[agent]
        state.running -= 1
        if state.running == 0:
            state.busy_ms += now - state.busy_since
        self.router.finished(agent, task, duration, ok, int(now), self)
        attempt = self.attempts.get(task.task_id, 0) + 1
        if ok or attempt >= MAX_ATTEMPTS:
            self.done_ms[task.task_id] = now - task.arrival_ms
            self.succeeded[task.task_id] = ok
        else:
            self.attempts[task.task_id] = attempt
            self.route(task, now)
        if state.queue:
            _, _, waiting, _ = heapq.heappop(state.queue)
            self._start(agent, waiting, now)

    def run(self) -> None:
        for task in self.world.tasks:
            heapq.heappush(self.events, (float(task.arrival_ms), next(self.order), "arrive", task))
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if kind == "arrive":
                self.route(payload, now)
            else:
                agent, task, duration, ok = payload
                self._finish(agent, task, duration, ok, now)

    def shift_tasks(self) -> tuple[int, bool]:
        """Tasks the degraded agent got from when it became slower than the fleet's median
        agent until its share of
        the trailing ``5 x agents`` decisions fell, for good, to half a fair share or less;
        and whether that happened before its recovery."""
        world = self.world
        recover = world.degrade_ms[2]
        window = 5 * len(self.agents)
        trailing: deque[int] = deque(maxlen=window)
        threshold = window / (2 * len(self.agents))
        count = until_off = 0
        for t, agent in self.decisions:
            if t >= recover:
                break
            trailing.append(int(agent == world.degraded))
            if t < world.worse_ms:
                continue
            count += agent == world.degraded
            if len(trailing) < window or sum(trailing) > threshold:
                until_off = count
        return until_off, sum(trailing) <= threshold

    def report(self) -> dict[str, Any]:
        tasks = self.world.tasks
        done = np.array([self.done_ms[t.task_id] for t in tasks]) / 1000
        due = [t for t in tasks if t.deadline_ms is not None]
        missed = sum(
            1
            for t in due
            if not self.succeeded[t.task_id]
            or t.arrival_ms + self.done_ms[t.task_id] > (t.deadline_ms or 0)
        )
        busy = np.array([a.busy_ms for a in self.agents])
        shifted, in_time = self.shift_tasks()
        return {
            "tasks": len(tasks),
            "mean_s": float(done.mean()),
            "p95_s": float(np.percentile(done, 95)),
            "deadline_tasks": len(due),
            "deadline_misses": missed,
            "imbalance_cv": float(busy.std() / busy.mean()) if busy.mean() else 0.0,
            "regret_s": self.regret_ms / 1000,
            "shift_tasks": shifted,
            "shifted": in_time,
            "failed": sum(not ok for ok in self.succeeded.values()),
        }


POLICIES: dict[str, Callable[[int], Router]] = {
    "random": RandomRouter,
    "round-robin": lambda seed: RoundRobin(),
    "greedy": lambda seed: Greedy(),
    "river-ts": RiverThompson,
    "learned": Learned,
    "learned-fifo": lambda seed: Learned(seed, order=False),
    "oracle": lambda seed: Oracle(),
}


def replay_seed(scenario: RoutingScenario, policies: list[str]) -> dict[str, Any]:
    world = RoutingWorld(scenario)
    out: dict[str, Any] = {}
    for name in policies:
        router = POLICIES[name](scenario.seed)
        replay = Replay(world, router)
        started = time.perf_counter()
        replay.run()
        out[name] = replay.report() | {"seconds": round(time.perf_counter() - started, 2)}
        if isinstance(router, Learned) and name == "learned":
            out[name]["decide_us"] = [s * 1e6 for s in router.decide_s]
    return out


def summarise(runs: list[dict[str, Any]], policies: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name in policies:
        rows = [r[name] for r in runs]
        table[name] = {
            "mean_s": float(np.mean([r["mean_s"] for r in rows])),
            "p95_s": float(np.mean([r["p95_s"] for r in rows])),
            "deadline_misses": sum(r["deadline_misses"] for r in rows),
            "deadline_tasks": sum(r["deadline_tasks"] for r in rows),
            "imbalance_cv": float(np.mean([r["imbalance_cv"] for r in rows])),
            "regret_s": sum(r["regret_s"] for r in rows),
            "shift_tasks": [r["shift_tasks"] for r in rows],
            "shifted": [r["shifted"] for r in rows],
            "failed": sum(r["failed"] for r in rows),
            "per_seed_mean_s": [round(r["mean_s"], 2) for r in rows],
        }
    return table


def goals(table: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, where the policies they compare were run."""
    out: dict[str, Any] = {}
    learned = table.get("learned")
    if learned is None:
        return out
    if "round-robin" in table:
        gain = 1 - learned["mean_s"] / table["round-robin"]["mean_s"]
        out["mean_vs_round_robin"] = {"lower_by": gain, "goal": 0.2, "met": gain >= 0.2}
    if "random" in table:
        share = learned["regret_s"] / max(table["random"]["regret_s"], 1e-9)
        out["regret_vs_random"] = {"share": share, "goal": 0.25, "met": share <= 0.25}
    worst = max(learned["shift_tasks"])
    out["shift_off_degraded"] = {
        "most_tasks": worst,
        "goal": 50,
        "met": worst <= 50 and all(learned["shifted"]),
    }
    return out


# -- decision latency through Kafka -----------------------------------------------------------
async def live_latency(rate: float, seconds: float, agents: int) -> dict[str, Any]:
    """Routing requests at ``rate`` a second for ``seconds`` to a worker of its own; the time
    from each request's send to its decision's arrival."""
    from connectors.kafka_admin import ensure_topics
    from connectors.kafka_producer import RecordProducer
    from streams import topics
    from streams.commands.stack import local_stack, topic_requests
    from streams.settings import load_settings
    from streams.worker_process import WorkerProcess

    settings = load_settings()
    local_stack(settings, quiet=True).up()
    kafka = settings.kafka()
    await ensure_topics(kafka, topic_requests(settings))
    run = uuid.uuid4().hex[:8]
    logs = Path(settings.stack_dir) / "logs" / f"bench-routing-{run}"
    logs.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(settings, f"bench-routing-{run}", logs / "worker.log")
    worker.start()
    consumer = kafka.consumer(topics.ROUTING.name, group_id=None, auto_offset_reset="latest")
    producer = RecordProducer(kafka)
    # Requests go as `POST /v1/route` sends them (streams/api/route.py): no linger.
    requester = kafka.producer(acks=1, linger_ms=0)
    await consumer.start()
    await producer.start()
    await requester.start()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    names = [f"bench-{run}-agent-{i}" for i in range(agents)]
    task_type = f"bench-{run}"

    done_sending = asyncio.Event()

    async def collect(until: float) -> None:
        """Decisions until every request sent is answered, or ``until``."""
        while time.monotonic() < until and not (done_sending.is_set() and not sent):
            batches = await consumer.getmany(timeout_ms=200)
            arrived = time.perf_counter()
            for messages in batches.values():
                for message in messages:
                    key = (message.key or b"").decode()
                    if key in sent:
                        latencies.append(arrived - sent.pop(key))

    try:
        await worker.ready()
        await consumer.seek_to_end()
        now_ms = int(time.time() * 1000)
        for i, agent in enumerate(names):  # some history, so decisions are informed
            for phase in ("STARTED", "SUCCEEDED"):
                event: dict[str, Any] = {
                    "agent": agent, "task_id": f"warm-{i}", "task_type": task_type,
                    "phase": phase, "event_time": now_ms, "labels": {},
                    "duration_ms": 1000.0 * (i + 1) if phase == "SUCCEEDED" else None,
                }  # fmt: skip
                await producer.send(topics.AGENT_EVENTS.name, agent, "agent_event", event)
        await producer.flush()
        # Warm-up: requests until one is answered, so the worker's routes are in place.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not latencies:
            task_id = f"warm-{uuid.uuid4().hex[:8]}"
            await _request(requester, producer.codec, task_id, task_type, names)
            sent[task_id] = time.perf_counter()
            done_sending.set()
            await collect(time.monotonic() + 1.0)
        if not latencies:
            raise RuntimeError(f"the worker answered no routing request in 60 s; see {worker.log}")
        sent.clear()
        latencies.clear()
        done_sending.clear()
        collector = asyncio.create_task(collect(time.monotonic() + seconds + 30))
        interval = 1.0 / rate
        cpu_before = worker.cpu_seconds()
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            wait = started + i * interval - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            task_id = f"{run}-{i}"
            sent[task_id] = time.perf_counter()
            await _request(requester, producer.codec, task_id, task_type, names)
        await requester.flush()
        done_sending.set()
        await collector
        cpu_after = worker.cpu_seconds()
    finally:
        await requester.stop()
        await producer.stop()
        await consumer.stop()
        worker.stop()
    answered = np.array(latencies) * 1000
    requests = int(rate * seconds)
    cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": requests,
        "answered": len(latencies),
        # CPU the worker spent from the first request to the last decision, per request: what
        # the machine must have free for the worker to keep up at this rate.
        "worker_cpu_us_per_request": None if cpu_s is None else cpu_s / requests * 1e6,
        "p50_ms": float(np.percentile(answered, 50)) if len(answered) else None,
        "p95_ms": float(np.percentile(answered, 95)) if len(answered) else None,
        "p99_ms": float(np.percentile(answered, 99)) if len(answered) else None,
        "worker_log": str(worker.log),
    }


async def _request(
    producer: Any, codec: Any, task_id: str, task_type: str, candidates: list[str]
) -> None:
    from streams import topics

    record = {
        "task_id": task_id,
        "task_type": task_type,
        "candidates": candidates,
        "deadline": None,
        "priority": 0,
        "event_time": int(time.time() * 1000),
    }
    value = codec.encode("routing_request", record)
    await producer.send(topics.ROUTING_REQUESTS.name, value, key=task_id.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=3600.0)
    parser.add_argument("--utilisation", type=float, default=RoutingScenario.utilisation)
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    parser.add_argument("--live-rate", type=float, default=0.0, help="requests/s through Kafka")
    parser.add_argument("--live-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        parser.error(f"unknown policies {unknown}; choose among {', '.join(POLICIES)}")
    started = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        scenario = RoutingScenario(
            agents=args.agents, seed=seed, duration_s=args.duration_s, utilisation=args.utilisation
        )
        runs.append(replay_seed(scenario, policies))
        if not args.json:
            print(
                f"  seed {seed}: "
                + ", ".join(f"{p} {runs[-1][p]['mean_s']:.1f} s" for p in policies),
                file=sys.stderr,
            )
    table = summarise(runs, policies)
    decide_us = [us for r in runs for us in r.get("learned", {}).pop("decide_us", [])]
    result: dict[str, Any] = {
        "seeds": args.seeds,
        "agents": args.agents,
        "duration_s": args.duration_s,
        "tasks": sum(r[policies[0]]["tasks"] for r in runs),
        "policies": table,
        "goals": goals(table),
        "decision_us": {
            "decisions": len(decide_us),
            "p50": float(np.percentile(decide_us, 50)) if decide_us else None,
            "p99": float(np.percentile(decide_us, 99)) if decide_us else None,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.live_rate > 0:
        result["live"] = asyncio.run(live_latency(args.live_rate, args.live_seconds, args.agents))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{'policy':<13}{'mean s':>9}{'p95 s':>9}{'missed':>13}{'imbalance':>11}"
        f"{'regret s':>12}  shift tasks (per seed)"
    )
    for name, row in table.items():
        shifts = ", ".join(
            f"{n}{'' if ok else '+'}"
            for n, ok in zip(row["shift_tasks"], row["shifted"], strict=True)
        )
        print(
            f"{name:<13}{row['mean_s']:>9.1f}{row['p95_s']:>9.1f}"
            f"{row['deadline_misses']:>6}/{row['deadline_tasks']:<6}{row['imbalance_cv']:>11.2f}"
            f"{row['regret_s']:>12.0f}  {shifts}"
        )
    print("(+: traffic never left the degraded agent before it recovered)")
    for goal, verdict in result["goals"].items():
        print(f"goal {goal}: {'met' if verdict['met'] else 'NOT met'} {verdict}")
    d = result["decision_us"]
    if d["decisions"]:
        print(f"learned decision in process: p50 {d['p50']:.0f} us, p99 {d['p99']:.0f} us")
    if "live" in result:
        live = result["live"]
        print(
            f"through Kafka at {live['rate']:g}/s: {live['answered']}/{live['requests']} "
            f"answered, p50 {live['p50_ms']:.1f} ms, p99 {live['p99_ms']:.1f} ms, worker CPU "
            f"{live['worker_cpu_us_per_request'] or math.nan:.0f} us a request"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
