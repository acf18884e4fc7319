"""Seeded, reproducible operations telemetry with injected incidents and their ground truth.

The simulator is the pure core behind ``foresight simulate`` and the demo: it yields
``(topic, key, record)`` tuples in event-time order and never touches Kafka, so the producer
decides the pacing (sleeping between steps replays in real time; not sleeping replays as fast
as the machine allows) and tests consume the same stream in memory.

What it models, and why:

* **Hosts** share one load curve (:func:`load_curve`: business-hours peak, night trough,
  quieter weekends), each with its own scale, phase jitter and slow AR(1) wander, so the
  forecasters see daily and weekly seasonality and no two hosts are copies. CPU, network,
  disk I/O and queue depth follow load; latency grows like an M/M/1 queue, ``u / (1 - u)``
  in CPU utilisation ``u``, so it bends upward near saturation; the error rate grows with
  latency. Every host sends one :data:`METRIC_NAMES` MetricBatch per scrape interval.
* **Agents** run tasks as a Poisson process. Durations are log-normal, with a median that
  depends on the agent and the task type (each agent has a specialty type it runs twice as
  fast, and a weak type it runs slower and fails more often), so execution-time prediction
  and agent-selection advice have something to learn.
* **Incidents** (:class:`IncidentType`) change the hosts' or agents' behaviour for a while and
  publish ``Label`` records on ``telemetry.labels`` only when the truth becomes known: the
  INCIDENT label when the incident ends (or at its failure), the FAILURE label at the failure
  moment. That is the delayed ground truth the failure predictor learns from and the
  evaluation scores against.
* **Workflows** (optional, :attr:`SimulationConfig.workflows_per_min`) are drawn from
  :func:`workflow_stream`, the generator the workflow benchmark uses: trees of tasks that
  carry a ``workflow_id``, each run by one agent of a pool of their own
  (:data:`WORKFLOW_POOL`), a few with an injected pattern (a rare path, a loop, a stall, a
  precursor error). Their truth is :meth:`Simulation.workflows`.

Randomness comes from one seed split into independent streams (fleet parameters, host noise,
agent tasks), so a run is a pure function of :class:`SimulationConfig` and the duration.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.signals import MetricKind
from schemas.codec import Record
from streams.csv_files import iter_rows
from streams.topics import AGENT_EVENTS, LABELS, METRICS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: One simulator output: topic name, Kafka key (the entity or agent), Avro record.
SimEvent = tuple[str, str, Record]

#: Metrics of every host batch, in this order.
METRIC_NAMES: tuple[str, ...] = (
    "cpu_percent",
    "memory_percent",
    "disk_used_percent",
    "disk_io_mbps",
    "network_mbps",
    "request_latency_ms",
    "error_rate",
    "queue_depth",
)
_CPU, _MEMORY, _DISK, _DISK_IO, _NETWORK, _LATENCY, _ERRORS, _QUEUE = range(len(METRIC_NAMES))

#: Task types the agents run, with the median duration (ms) of an average agent, the
#: log-normal sigma, the base failure probability and the cost per second of run time.
TASK_TYPES: tuple[str, ...] = ("summarise", "triage", "deploy", "code_review", "data_sync")
_TASK_MEDIAN_MS = np.array([8_000.0, 4_000.0, 90_000.0, 45_000.0, 30_000.0])
_TASK_SIGMA = np.array([0.35, 0.30, 0.50, 0.45, 0.40])
_TASK_FAILURE = np.array([0.02, 0.02, 0.06, 0.03, 0.05])
_TASK_COST_PER_S = np.array([0.0008, 0.0005, 0.0001, 0.0012, 0.00005])

_ERROR_CLASSES: tuple[str, ...] = ("timeout", "tool_error", "rate_limited", "invalid_output", "oom")


def _cumulative(weights: list[float]) -> FloatArray:
    """Cumulative probabilities ending at exactly 1, for sampling by ``uniform > cum``."""
    cumulative: FloatArray = np.cumsum(weights)
    cumulative /= cumulative[-1]
    return cumulative


_ERROR_WEIGHTS = _cumulative([0.30, 0.30, 0.15, 0.20, 0.05])
#: In a failure burst a dependency is down: tool errors and rate limits dominate.
_BURST_ERROR_WEIGHTS = _cumulative([0.10, 0.50, 0.35, 0.05, 0.0])
_BURST_FAILURE = 0.65
#: A degrading agent's durations grow linearly to this multiple by the incident's end.
_DEGRADATION_FACTOR = 3.0

#: (role, service, typical memory_percent) by host index, round robin.
_ROLES: tuple[tuple[str, str, float], ...] = (
    ("web", "frontend", 40.0),
    ("api", "checkout", 45.0),
    ("db", "orders-db", 62.0),
    ("cache", "session-cache", 68.0),
    ("worker", "billing-worker", 50.0),
)
_REGIONS: tuple[str, ...] = ("eu-west-1", "us-east-1", "ap-southeast-1")
#: Agents' model tiers and their price multipliers (bigger models cost more per second).
_AGENT_MODELS: tuple[tuple[str, float], ...] = (("large", 3.0), ("medium", 1.5), ("small", 1.0))

#: 2024-03-04T08:00:00Z, a Monday morning: a default run starts as the working day does.
DEFAULT_START_MS = 1_709_539_200_000
_DAY_MS = 86_400_000.0
_HOUR_MS = 3_600_000.0
_NIGHT_LOAD = 0.15
_WEEKEND_LOAD = 0.45


class IncidentType(StrEnum):
    """The kinds of incident the simulator injects (the ``incident_type`` of its labels)."""

    MEMORY_LEAK = "memory_leak"
    CPU_SATURATION = "cpu_saturation"
    DISK_FILL = "disk_fill"
    LATENCY_REGRESSION = "latency_regression"
    AGENT_FAILURE_BURST = "agent_failure_burst"
    AGENT_DEGRADATION = "agent_degradation"

    @property
    def on_agent(self) -> bool:
        """Whether the incident targets an agent (otherwise a host)."""
        return self in (IncidentType.AGENT_FAILURE_BURST, IncidentType.AGENT_DEGRADATION)

    @property
    def ends_in_failure(self) -> bool:
        """Whether the incident ends with the entity failing (an OOM kill, a full disk)."""
        return self in (IncidentType.MEMORY_LEAK, IncidentType.DISK_FILL)

    @property
    def metric(self) -> str:
        """The metric the incident affects most, carried on its labels."""
        return _INCIDENT_METRIC[self]


#: A latency regression multiplies latency by this and adds this much to the error rate.
_REGRESSION_LATENCY = 1.8
_REGRESSION_ERRORS = 0.02

#: What each incident's labels say; ``str.format`` fields: entity, start, end, version.
_DESCRIPTIONS: dict[IncidentType, str] = {
    IncidentType.MEMORY_LEAK: "memory leak on {entity} from {start}: memory_percent climbed "
    "to 100 and the process was OOM-killed at {end}, then restarted",
    IncidentType.DISK_FILL: "disk filling on {entity} from {start}: disk_used_percent reached "
    "100 (disk full) at {end}, then logs were cleaned up",
    IncidentType.CPU_SATURATION: "CPU saturation on {entity} from {start} to {end}: cpu "
    "pinned near 100, latency and queue depth exploded",
    IncidentType.LATENCY_REGRESSION: "latency regression on {entity} after deploy {version} "
    f"at {{start}}: request_latency_ms x{_REGRESSION_LATENCY:g} and error_rate "
    f"+{_REGRESSION_ERRORS:g} until rollback at {{end}}",
    IncidentType.AGENT_FAILURE_BURST: "failure burst of {entity} from {start} to {end}: "
    f"{_BURST_FAILURE:.0%} of its tasks failed (tool errors, rate limits)",
    IncidentType.AGENT_DEGRADATION: "{entity} degrading from {start} to {end}: task "
    f"durations drifted up to x{_DEGRADATION_FACTOR:g}",
}

_INCIDENT_METRIC: dict[IncidentType, str] = {
    IncidentType.MEMORY_LEAK: "memory_percent",
    IncidentType.CPU_SATURATION: "cpu_percent",
    IncidentType.DISK_FILL: "disk_used_percent",
    IncidentType.LATENCY_REGRESSION: "request_latency_ms",
    IncidentType.AGENT_FAILURE_BURST: "failure_rate",
    IncidentType.AGENT_DEGRADATION: "duration_ms",
}


@dataclass(frozen=True)
class Incident:
    """An incident to inject, in seconds from the start of the run.

    Parameters
    ----------
    incident_type
        What happens (an :class:`IncidentType` or its string value).
    entity
        The host (``host-03``) or agent (``agent-01``) it happens to.
    start_s
        Seconds after the run's start when it begins.
    duration_s
        How long it lasts. For a memory leak or a disk fill this is the build-up: the entity
        fails (memory or disk reaches 100%) ``duration_s`` after ``start_s``.
    """

    incident_type: IncidentType
    entity: str
    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "incident_type", IncidentType(self.incident_type))
        except ValueError:
            known = ", ".join(t.value for t in IncidentType)
            raise ValueError(
                f"unknown incident type {self.incident_type!r}; use one of: {known}"
            ) from None
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(
                f"incident {self.incident_type} on {self.entity}: start_s={self.start_s!r} "
                "must be a finite number of seconds >= 0 after the run's start"
            )
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(
                f"incident {self.incident_type} on {self.entity}: duration_s="
                f"{self.duration_s!r} must be a finite number of seconds > 0"
            )


@dataclass(frozen=True)
class ScheduledIncident:
    """An incident as a run will play it: absolute times, snapped to the scrape grid.

    ``end_ms`` is when the incident stops (for a failing incident, the failure moment, which
    equals ``failure_ms``); ``failure_ms`` is ``None`` for incidents that do not end in a
    failure. ``description`` is the text its labels carry.
    """

    incident_type: IncidentType
    entity: str
    start_ms: int
    end_ms: int
    failure_ms: int | None
    metric: str
    description: str


def host_name(index: int, hosts: int) -> str:
    """The entity name of host ``index`` (0-based) in a fleet of ``hosts``: ``host-01``..."""
    return f"host-{index + 1:0{max(2, len(str(hosts)))}d}"


def agent_name(index: int, agents: int, pool: str = "agent") -> str:
    """The name of agent ``index`` (0-based) among ``agents`` of a pool: ``agent-01``..."""
    return f"{pool}-{index + 1:0{max(2, len(str(agents)))}d}"


#: The default schedule as (type, which host or agent, start, duration) in fractions of the
#: span: with the default 60-minute span the memory leak fails at minute 30 after 25 minutes
#: of build-up, and the disk fills at minute 40 after 30.
_DEFAULT_HOST_PLAN: tuple[tuple[IncidentType, float, float], ...] = (
    (IncidentType.MEMORY_LEAK, 5 / 60, 25 / 60),
    (IncidentType.DISK_FILL, 10 / 60, 30 / 60),
    (IncidentType.CPU_SATURATION, 20 / 60, 10 / 60),
    (IncidentType.LATENCY_REGRESSION, 35 / 60, 15 / 60),
)
_DEFAULT_AGENT_PLAN: tuple[tuple[IncidentType, float, float], ...] = (
    (IncidentType.AGENT_FAILURE_BURST, 15 / 60, 10 / 60),
    (IncidentType.AGENT_DEGRADATION, 5 / 60, 50 / 60),
)


def default_incidents(hosts: int, agents: int, span_s: float = 3600.0) -> tuple[Incident, ...]:
    """One incident of each type on distinct entities, spread over the first ``span_s``.

    The host incidents go to ``host-01``.. ``host-04`` (memory leak, disk fill, CPU
    saturation, latency regression) and the agent incidents to ``agent-01`` (failure burst)
    and ``agent-02`` (degradation); at least one host and one agent always stay healthy, so
    a small fleet gets fewer incidents. Times scale with ``span_s``; with the default hour:

    ====================  ========  =====  =======================
    type                  entity    start  end (failure)
    ====================  ========  =====  =======================
    memory_leak           host-01   5 min  30 min (OOM)
    disk_fill             host-02   10     40 (disk full)
    cpu_saturation        host-03   20     30
    latency_regression    host-04   35     50 (rollback)
    agent_failure_burst   agent-01  15     25
    agent_degradation     agent-02  5      55
    ====================  ========  =====  =======================

    To repeat incidents over a long run, concatenate schedules built for later windows
    (shift ``start_s``) and pass them as :attr:`SimulationConfig.incidents`.
    """
    if not (math.isfinite(span_s) and span_s > 0):
        raise ValueError(f"span_s={span_s!r} must be a finite number of seconds > 0")
    planned = [
        Incident(kind, host_name(i, hosts), start * span_s, duration * span_s)
        for i, (kind, start, duration) in enumerate(_DEFAULT_HOST_PLAN[: max(0, hosts - 1)])
    ]
    planned += [
        Incident(kind, agent_name(i, agents), start * span_s, duration * span_s)
        for i, (kind, start, duration) in enumerate(_DEFAULT_AGENT_PLAN[: max(0, agents - 1)])
    ]
    return tuple(planned)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; a run is a pure function of this and its duration.

    Parameters
    ----------
    hosts
        Number of hosts (entities ``host-01``...), each sending one MetricBatch of
        :data:`METRIC_NAMES` per scrape. Default 20.
    agents
        Number of agents (``agent-01``...) running tasks. Default 5.
    seed
        Seed of every random choice: the same seed gives the same events. Default 42.
    scrape_interval_s
        Event time between two scrapes of the hosts; the simulation's step. Default 10.
    start_ms
        Event time of the first scrape, epoch milliseconds (UTC). Default
        :data:`DEFAULT_START_MS`, a Monday 08:00; pass the current time for a live demo.
    incidents
        Incidents to inject. ``None`` (the default) uses :func:`default_incidents` for the
        fleet's size; ``()`` injects none.
    task_rate_per_agent_per_min
        Mean number of tasks each agent starts per minute (Poisson arrivals). Default 4.
    workflows_per_min
        Workflows starting per minute (:func:`workflow_stream` seeded with ``seed``, each
        run by one agent of :data:`WORKFLOW_POOL`, apart from the fleet's, so the agent
        incidents stay as they are). Default 0: none.
    utc_offset_ms
        The fleet's local time minus UTC: its business hours (:func:`load_curve`) follow
        local time. Default 0.
    """

    hosts: int = 20
    agents: int = 5
    seed: int = 42
    scrape_interval_s: float = 10.0
    start_ms: int = DEFAULT_START_MS
    incidents: tuple[Incident, ...] | None = None
    task_rate_per_agent_per_min: float = 4.0
    workflows_per_min: float = 0.0
    utc_offset_ms: int = 0

    def __post_init__(self) -> None:
        if self.hosts < 0 or self.agents < 0:
            raise ValueError(f"hosts={self.hosts} and agents={self.agents} must both be >= 0")
        if not (math.isfinite(self.scrape_interval_s) and self.scrape_interval_s >= 0.001):
            raise ValueError(
                f"scrape_interval_s={self.scrape_interval_s!r} must be a finite number of "
                "seconds >= 0.001 (event times are whole milliseconds)"
            )
        if self.start_ms < 0:
            raise ValueError(f"start_ms={self.start_ms} must be epoch milliseconds >= 0")
        if not (
            math.isfinite(self.task_rate_per_agent_per_min)
            and self.task_rate_per_agent_per_min >= 0
        ):
            raise ValueError(
                f"task_rate_per_agent_per_min={self.task_rate_per_agent_per_min!r} must be "
                "a finite rate >= 0"
            )
        if not (math.isfinite(self.workflows_per_min) and self.workflows_per_min >= 0):
            raise ValueError(
                f"workflows_per_min={self.workflows_per_min!r} must be a finite rate >= 0 "
                "(0: no workflows)"
            )


def utc_offset_ms(local_hour: float, at_ms: int) -> int:
    """The offset from UTC (in ``[0, 1 day)``) of a clock that reads ``local_hour`` at epoch
    milliseconds ``at_ms``: a fleet's time zone, for :attr:`SimulationConfig.utc_offset_ms`.

    >>> utc_offset_ms(4.0, DEFAULT_START_MS) // 3_600_000  # the default start is 08:00 UTC
    20
    """
    if not math.isfinite(local_hour):
        raise ValueError(f"local hour {local_hour!r} must be a finite number of hours")
    return int((local_hour * _HOUR_MS - at_ms) % _DAY_MS)


def load_curve(time_ms: FloatArray) -> FloatArray:
    """The shared demand curve in ``[0.15, 1]`` at epoch milliseconds ``time_ms`` (UTC).

    Business hours (about 08:00 to 19:00) rise to a peak near 14:00; nights sit at 0.15;
    Saturdays and Sundays carry 45% of a weekday's daytime demand.

    Examples
    --------
    >>> import numpy as np
    >>> monday = DEFAULT_START_MS - 8 * 3_600_000
    >>> peak, night = load_curve(np.array([monday + 14 * 3_600_000, monday + 3 * 3_600_000]))
    >>> bool(peak > 0.9 > 0.2 > night)
    True
    """
    hours = (time_ms / _HOUR_MS) % 24.0
    weekday = (np.floor(time_ms / _DAY_MS) + 3.0) % 7.0  # 1970-01-01 was a Thursday
    day = _sigmoid((hours - 8.0) / 1.0) * _sigmoid((19.0 - hours) / 1.5)
    day *= 0.85 + 0.15 * np.exp(-(((hours - 14.0) / 3.0) ** 2))
    day = np.where(weekday >= 5.0, _WEEKEND_LOAD * day, day)
    result: FloatArray = _NIGHT_LOAD + (1.0 - _NIGHT_LOAD) * day
    return result


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return result


@dataclass(frozen=True)
class _Fleet:
    """The hosts' fixed parameters, one array entry per host."""

    phase_ms: FloatArray
    cpu_idle: FloatArray
    cpu_span: FloatArray
    memory: FloatArray
    disk: FloatArray
    disk_io: FloatArray
    network: FloatArray
    latency: FloatArray
    errors: FloatArray
    queue: FloatArray

    @classmethod
    def draw(cls, rng: np.random.Generator, hosts: int, utc_offset_ms: int) -> _Fleet:
        role_memory = np.array([_ROLES[i % len(_ROLES)][2] for i in range(hosts)])
        cpu_idle = rng.uniform(3.0, 10.0, hosts)
        return cls(
            phase_ms=rng.normal(0.0, 0.33 * _HOUR_MS, hosts) + utc_offset_ms,
            cpu_idle=cpu_idle,
            cpu_span=rng.uniform(45.0, 80.0, hosts) - cpu_idle,
            memory=role_memory + rng.uniform(-8.0, 8.0, hosts),
            disk=rng.uniform(20.0, 60.0, hosts),
            disk_io=rng.uniform(5.0, 40.0, hosts),
            network=rng.uniform(50.0, 400.0, hosts),
            latency=rng.uniform(15.0, 60.0, hosts),
            errors=rng.uniform(0.001, 0.005, hosts),
            queue=rng.uniform(2.0, 12.0, hosts),
        )


@dataclass(frozen=True)
class _Crew:
    """The agents' fixed parameters: per agent, and per agent and task type."""

    median_ms: FloatArray  # (agents, types)
    failure: FloatArray  # (agents, types)
    mix: FloatArray  # (agents, types) cumulative task-type probabilities
    price: FloatArray  # (agents,)

    @classmethod
    def draw(cls, rng: np.random.Generator, agents: int) -> _Crew:
        types = len(TASK_TYPES)
        speed = np.exp(rng.normal(0.0, 0.25, (agents, types)))
        reliability = np.exp(rng.normal(0.0, 0.3, (agents, types)))
        rows = np.arange(agents)
        specialty, weak = rows % types, (rows + 2) % types
        speed[rows, specialty] *= 0.5
        speed[rows, weak] *= 1.7
        reliability[rows, weak] *= 2.5
        mix = np.cumsum(rng.dirichlet(np.full(types, 3.0), agents), axis=1)
        mix[:, -1] = 1.0
        return cls(
            median_ms=_TASK_MEDIAN_MS * speed,
            failure=np.minimum(_TASK_FAILURE * reliability, 0.5),
            mix=mix,
            price=np.array([_AGENT_MODELS[a % len(_AGENT_MODELS)][1] for a in range(agents)]),
        )


@dataclass(frozen=True)
class _Window:
    """A scheduled incident in scrape steps, with its target's index."""

    incident_type: IncidentType
    target: int
    start_step: int
    end_step: int
    start_ms: int
    end_ms: int

    def progress(self, step: int) -> float:
        """0 at the first step, 1 at ``end_step``; ``-1`` outside ``[start_step, end_step]``."""
        if step < self.start_step or step > self.end_step:
            return -1.0
        return (step - self.start_step) / (self.end_step - self.start_step)


class Simulation:
    """Seeded telemetry of hosts and agents, with injected incidents and delayed labels.

    Parameters
    ----------
    config
        What to simulate; ``None`` uses :class:`SimulationConfig`'s defaults.

    Attributes
    ----------
    config : SimulationConfig
        The configuration.
    hosts : tuple[str, ...]
        Host entity names, ``host-01``...
    agents : tuple[str, ...]
        Agent names, ``agent-01``...
    incidents : tuple[ScheduledIncident, ...]
        The planned incidents in start order, with absolute times, for summaries and checks.

    Raises
    ------
    ValueError
        If an incident names an entity the fleet does not have, or a host incident targets
        an agent (or the reverse).

    Examples
    --------
    >>> sim = Simulation(SimulationConfig(hosts=3, agents=2, seed=7))
    >>> [(i.incident_type.value, i.entity, i.failure_ms) for i in sim.incidents]
    [('memory_leak', 'host-01', 1709541000000), ('disk_fill', 'host-02', 1709541600000), \
('agent_failure_burst', 'agent-01', None)]
    >>> topic, key, record = next(sim.events(duration_s=60))
    >>> topic, key, record["names"][:2], len(record["values"])
    ('telemetry.metrics', 'host-01', ['cpu_percent', 'memory_percent'], 8)
    >>> from collections import Counter
    >>> Counter(topic for topic, _, _ in sim.events(duration_s=3600))
    Counter({'telemetry.metrics': 1080, 'telemetry.agent-events': 1030, 'telemetry.labels': 5})
    """

    def __init__(self, config: SimulationConfig | None = None) -> None:
        self.config = config if config is not None else SimulationConfig()
        cfg = self.config
        self.hosts = tuple(host_name(i, cfg.hosts) for i in range(cfg.hosts))
        self.agents = tuple(agent_name(i, cfg.agents) for i in range(cfg.agents))
        fleet_seed, self._host_seed, self._agent_seed = np.random.SeedSequence(cfg.seed).spawn(3)
        fleet_rng = np.random.default_rng(fleet_seed)
        self._fleet = _Fleet.draw(fleet_rng, cfg.hosts, cfg.utc_offset_ms)
        self._crew = _Crew.draw(fleet_rng, cfg.agents)
        self._host_labels = tuple(
            {
                "host": name,
                "service": _ROLES[i % len(_ROLES)][1],
                "role": _ROLES[i % len(_ROLES)][0],
                "region": _REGIONS[i % len(_REGIONS)],
            }
            for i, name in enumerate(self.hosts)
        )
        self._agent_labels = tuple(
            {"model": _AGENT_MODELS[i % len(_AGENT_MODELS)][0], "region": _REGIONS[i % 2]}
            for i in range(cfg.agents)
        )
        planned = cfg.incidents
        if planned is None:
            planned = default_incidents(cfg.hosts, cfg.agents)
        windows = sorted(
            (self._window(incident) for incident in planned), key=lambda w: w.start_step
        )
        self._windows = tuple(windows)
        self.incidents = tuple(self._schedule(w, n) for n, w in enumerate(windows))
        self._workflows = (
            WorkflowScenario(seed=cfg.seed, per_min=cfg.workflows_per_min,
                             start_ms=cfg.start_ms, pool=WORKFLOW_POOL, one_agent=True)
            if cfg.workflows_per_min > 0
            else None
        )  # fmt: skip

    def _step_ms(self, step: int) -> int:
        return self.config.start_ms + round(step * self.config.scrape_interval_s * 1000.0)

    def _window(self, incident: Incident) -> _Window:
        kind = incident.incident_type
        names, what, count = (
            (self.agents, "agents", "SimulationConfig.agents")
            if kind.on_agent
            else (self.hosts, "hosts", "SimulationConfig.hosts")
        )
        if incident.entity not in names:
            have = f"{names[0]}..{names[-1]}" if names else "none"
            raise ValueError(
                f"incident {kind.value} targets {incident.entity!r}, which is not one of the "
                f"simulated {what} ({have}); name one of them or raise {count}"
            )
        interval = self.config.scrape_interval_s
        # Snap to the scrape grid so the failure moment is a scrape (memory reads exactly 100).
        start = math.ceil(incident.start_s / interval - 1e-9)
        end = max(start + 1, math.ceil((incident.start_s + incident.duration_s) / interval - 1e-9))
        return _Window(
            kind,
            names.index(incident.entity),
            start,
            end,
            self._step_ms(start),
            self._step_ms(end),
        )

    def _schedule(self, window: _Window, number: int) -> ScheduledIncident:
        kind = window.incident_type
        entity = (self.agents if kind.on_agent else self.hosts)[window.target]
        description = _DESCRIPTIONS[kind].format(
            entity=entity,
            start=_iso(window.start_ms),
            end=_iso(window.end_ms),
            version=f"v1.{number + 7}.0",
        )
        return ScheduledIncident(
            incident_type=kind,
            entity=entity,
            start_ms=window.start_ms,
            end_ms=window.end_ms,
            failure_ms=window.end_ms if kind.ends_in_failure else None,
            metric=kind.metric,
            description=description,
        )

    def workflows(self, duration_s: float = math.inf) -> Iterator[SimulatedWorkflow]:
        """The workflows a run of ``duration_s`` starts, with their truth and all their
        events (those after the run's end are not played); none without
        :attr:`SimulationConfig.workflows_per_min`."""
        if self._workflows is None:
            return iter(())
        end_ms = self.config.start_ms + duration_s * 1000.0
        return itertools.takewhile(lambda w: w.start_ms < end_ms, workflow_stream(self._workflows))

    def judged_workflows(
        self, duration_s: float, learn_s: float
    ) -> dict[str, WorkflowPattern | None]:
        """The workflows a run of ``duration_s`` lets one judge pattern alerts on, with their
        injected pattern: those started after the first ``learn_s`` (the models learn
        before), save those whose pattern the run ended before playing in full."""
        end_ms = self.config.start_ms + duration_s * 1000.0
        learned_ms = self.config.start_ms + learn_s * 1000.0
        return {
            w.workflow_id: w.truth.pattern
            for w in self.workflows(duration_s)
            if w.start_ms >= learned_ms
            and (w.truth.pattern_ms is None or w.truth.pattern_ms < end_ms)
        }

    def events(self, duration_s: float = math.inf) -> Iterator[SimEvent]:
        """Yield the run's ``(topic, key, record)`` tuples in non-decreasing event time.

        Each step yields one MetricBatch per host at the scrape time, then the labels that
        became known at that scrape, then the agent events (of single tasks and of
        workflows) up to the next scrape. Every call replays the same run from the start.
        Incidents still under way when the run stops publish no label (their truth is not
        known yet), and tasks and workflows still running publish only their events so far.

        Parameters
        ----------
        duration_s
            Simulated seconds to run; scrapes happen at ``0, interval, ...`` strictly before
            it. ``math.inf`` (the default) runs until the caller stops iterating.

        Raises
        ------
        ValueError
            If ``duration_s`` is negative or NaN.
        """
        if math.isnan(duration_s) or duration_s < 0:
            raise ValueError(f"duration_s={duration_s!r} must be a number of seconds >= 0")
        interval = self.config.scrape_interval_s
        end_ms = self.config.start_ms + duration_s * 1000.0
        steps: Iterable[int] = (
            itertools.count()
            if math.isinf(duration_s)
            else range(math.ceil(duration_s / interval - 1e-9))
        )
        hosts = _HostRun(self._fleet, np.random.default_rng(self._host_seed), interval)
        agents = _AgentRun(
            self._crew,
            self.agents,
            self._agent_labels,
            tuple(w for w in self._windows if w.incident_type.on_agent),
            self.config.task_rate_per_agent_per_min,
            np.random.default_rng(self._agent_seed),
        )
        workflows = self.workflows()
        upcoming = next(workflows, None)
        pending: list[tuple[int, int, str, str, Record]] = []
        order = itertools.count()
        names = list(METRIC_NAMES)
        kinds = [MetricKind.GAUGE.value] * len(names)
        for step in steps:
            now_ms = self._step_ms(step)
            until_ms = min(self._step_ms(step + 1), end_ms)
            values = hosts.step(now_ms, step, self._windows)
            for entity, labels, row in zip(
                self.hosts, self._host_labels, values.tolist(), strict=True
            ):
                yield (
                    METRICS.name,
                    entity,
                    {
                        "entity": entity,
                        "event_time": now_ms,
                        "labels": dict(labels),
                        "names": names.copy(),
                        "values": row,
                        "source": "simulator",
                        "kinds": kinds.copy(),
                        "ended": [],
                    },
                )
            for incident in self.incidents:
                if incident.end_ms == now_ms:
                    for label in _labels(incident):
                        heapq.heappush(pending, (now_ms, next(order), LABELS.name, *label))
            for event_ms, agent, record in agents.tasks(now_ms, self._step_ms(step + 1)):
                heapq.heappush(pending, (event_ms, next(order), AGENT_EVENTS.name, agent, record))
            while upcoming is not None and upcoming.start_ms < self._step_ms(step + 1):
                for event_ms, agent, record in upcoming.events:
                    heapq.heappush(
                        pending, (event_ms, next(order), AGENT_EVENTS.name, agent, record)
                    )
                upcoming = next(workflows, None)
            while pending and pending[0][0] < until_ms:
                _, _, topic, key, record = heapq.heappop(pending)
                yield topic, key, record


def _labels(incident: ScheduledIncident) -> list[tuple[str, Record]]:
    """The labels an incident publishes when it ends: INCIDENT, and FAILURE if it failed."""
    labels: list[tuple[str, Record]] = [
        (
            incident.entity,
            {
                "entity": incident.entity,
                "kind": "INCIDENT",
                "incident_type": incident.incident_type.value,
                "start_time": incident.start_ms,
                "end_time": incident.end_ms,
                "metric": incident.metric,
                "description": incident.description,
            },
        )
    ]
    if incident.failure_ms is not None:
        labels.append(
            (
                incident.entity,
                {
                    "entity": incident.entity,
                    "kind": "FAILURE",
                    "incident_type": incident.incident_type.value,
                    "start_time": incident.failure_ms,
                    "end_time": None,
                    "metric": incident.metric,
                    "description": incident.description,
                },
            )
        )
    return labels


class _HostRun:
    """The hosts' changing state during one run; one vectorised update per scrape."""

    def __init__(self, fleet: _Fleet, rng: np.random.Generator, interval_s: float) -> None:
        self._fleet = fleet
        self._rng = rng
        size = fleet.cpu_idle.shape[0]
        self._size = size
        # AR(1) wander of each host's load, with a 5-minute memory and a 8% spread.
        self._phi = math.exp(-interval_s / 300.0)
        self._wander = rng.normal(0.0, 0.08, size)
        self._backlog = np.zeros(size)
        self._interval_s = interval_s
        self._ramp_steps = max(1.0, 60.0 / interval_s)

    def step(self, now_ms: int, step: int, windows: tuple[_Window, ...]) -> FloatArray:
        """The hosts' metrics at one scrape, shape ``(hosts, len(METRIC_NAMES))``."""
        fleet, size = self._fleet, self._size
        z = self._rng.standard_normal((9, size))
        leak, fill, saturation, regression = (np.zeros(size) for _ in range(4))
        for window in windows:
            if window.incident_type.on_agent:
                continue
            progress = window.progress(step)
            if progress < 0 or (progress == 1.0 and not window.incident_type.ends_in_failure):
                continue
            target = window.target
            match window.incident_type:
                case IncidentType.MEMORY_LEAK:
                    leak[target] = progress
                case IncidentType.DISK_FILL:
                    fill[target] = progress
                case IncidentType.CPU_SATURATION:
                    ramp = (step - window.start_step + 1) / self._ramp_steps
                    saturation[target] = min(1.0, ramp)
                case IncidentType.LATENCY_REGRESSION:
                    regression[target] = 1.0

        self._wander = self._phi * self._wander + math.sqrt(1 - self._phi**2) * 0.08 * z[0]
        load = np.clip(load_curve(now_ms + fleet.phase_ms) * (1.0 + self._wander), 0.0, 1.2)

        out = np.empty((size, len(METRIC_NAMES)))
        cpu = fleet.cpu_idle + fleet.cpu_span * load + 2.0 * z[1] + 25.0 * leak**4  # GC thrash
        cpu += (98.5 - cpu) * saturation
        cpu = out[:, _CPU] = np.clip(cpu, 0.0, 100.0)

        # Overload queues work: the backlog grows while saturated and drains afterwards.
        growth = np.where(saturation > 0, 3.0 * saturation * (0.5 + load), -8.0)
        self._backlog = np.maximum(0.0, self._backlog + growth * self._interval_s)
        busy = np.minimum(cpu / 100.0, 0.99)
        queueing = busy / (1.0 - busy)  # M/M/1: waiting grows like u / (1 - u)
        out[:, _QUEUE] = np.rint(
            fleet.queue * load * (1.0 + 0.5 * queueing) * np.exp(0.15 * z[2]) + self._backlog
        )
        latency = fleet.latency * (0.9 + 0.2 * load) * (1.0 + 0.12 * queueing)
        latency = latency * np.exp(0.08 * z[3]) * (1.0 + (_REGRESSION_LATENCY - 1.0) * regression)
        latency = out[:, _LATENCY] = latency + 0.5 * self._backlog
        # Errors grow with latency (timeouts); 1 - exp(-x) keeps the rate below 1.
        raw_errors = fleet.errors * (latency / fleet.latency) ** 1.5 * np.exp(0.2 * z[4])
        out[:, _ERRORS] = 1.0 - np.exp(-(raw_errors + _REGRESSION_ERRORS * regression))
        out[:, _NETWORK] = fleet.network * (0.1 + 0.9 * load) * np.exp(0.05 * z[5])
        out[:, _DISK_IO] = (
            fleet.disk_io * (0.3 + 0.7 * load) * np.exp(0.2 * z[6]) * (1.0 + 1.5 * (fill > 0))
        )
        memory = fleet.memory + 8.0 * load + 0.7 * z[7]
        out[:, _MEMORY] = np.clip(memory + (100.0 - memory) * leak**1.3, 0.0, 100.0)
        disk = fleet.disk + 0.05 * z[8]
        out[:, _DISK] = np.clip(disk + (100.0 - disk) * fill, 0.0, 100.0)
        return out


class _AgentRun:
    """The agents' task arrivals during one run; tasks of one step are drawn together."""

    def __init__(
        self,
        crew: _Crew,
        names: tuple[str, ...],
        labels: tuple[dict[str, str], ...],
        windows: tuple[_Window, ...],
        rate_per_min: float,
        rng: np.random.Generator,
    ) -> None:
        self._crew = crew
        self._names = names
        self._labels = labels
        self._windows = windows
        self._rate_per_ms = rate_per_min / 60_000.0
        self._rng = rng
        self._sequence = itertools.count(1)

    def tasks(self, from_ms: int, to_ms: int) -> Iterator[tuple[int, str, Record]]:
        """STARTED events of tasks arriving in ``[from_ms, to_ms)`` and their finish events.

        Finish events may lie far beyond ``to_ms``; the caller orders them by time.
        """
        crew, rng = self._crew, self._rng
        agents = len(self._names)
        counts = rng.poisson(self._rate_per_ms * (to_ms - from_ms), agents)
        total = int(counts.sum())
        if total == 0:
            return
        who: IntArray = np.repeat(np.arange(agents), counts)
        started = from_ms + np.floor(rng.uniform(0.0, to_ms - from_ms, total)).astype(np.int64)
        kind = (rng.random(total)[:, None] > crew.mix[who]).sum(axis=1)
        duration = crew.median_ms[who, kind] * np.exp(
            _TASK_SIGMA[kind] * rng.standard_normal(total)
        )
        failure = crew.failure[who, kind]
        error_weights = np.broadcast_to(_ERROR_WEIGHTS, (total, len(_ERROR_CLASSES)))
        for window in self._windows:
            active = (
                (who == window.target) & (started >= window.start_ms) & (started < window.end_ms)
            )
            if window.incident_type is IncidentType.AGENT_FAILURE_BURST:
                failure = np.where(active, _BURST_FAILURE, failure)
                error_weights = np.where(active[:, None], _BURST_ERROR_WEIGHTS, error_weights)
            else:
                drift = (started - window.start_ms) / (window.end_ms - window.start_ms)
                duration *= np.where(active, 1.0 + (_DEGRADATION_FACTOR - 1.0) * drift, 1.0)
        failed = rng.random(total) < failure
        error = (rng.random(total)[:, None] > error_weights).sum(axis=1)
        # A timeout fails at the limit (3x the median); other errors cut the run short.
        cut = np.where(
            error == 0, 3.0 * crew.median_ms[who, kind], duration * rng.uniform(0.1, 0.9, total)
        )
        duration = np.where(failed, cut, duration)
        cost = (0.001 + duration / 1000.0 * _TASK_COST_PER_S[kind]) * crew.price[who]
        cost *= np.exp(0.1 * rng.standard_normal(total))
        finished = started + np.rint(duration).astype(np.int64)
        for a, k, t0, t1, usd, bad, e in zip(
            who.tolist(),
            kind.tolist(),
            started.tolist(),
            finished.tolist(),
            cost.tolist(),
            failed.tolist(),
            error.tolist(),
            strict=True,
        ):
            agent, task_type = self._names[a], TASK_TYPES[k]
            task_id = f"{agent}-{t0}-{next(self._sequence)}"
            base = {"agent": agent, "task_id": task_id, "task_type": task_type,
                    "workflow_id": None, "parent_task_id": None, "step": None}  # fmt: skip
            yield (
                t0,
                agent,
                {
                    **base,
                    "phase": "STARTED",
                    "event_time": t0,
                    "duration_ms": None,
                    "cost": None,
                    "error_class": None,
                    "labels": dict(self._labels[a]),
                },
            )
            yield (
                t1,
                agent,
                {
                    **base,
                    "phase": "FAILED" if bad else "SUCCEEDED",
                    "event_time": t1,
                    "duration_ms": float(t1 - t0),
                    "cost": round(usd, 6),
                    "error_class": _ERROR_CLASSES[e] if bad else None,
                    "labels": dict(self._labels[a]),
                },
            )


@dataclass(frozen=True)
class RoutingScenario:
    """A stream of tasks to route and the agents that can take them (the routing benchmark's
    world; see :class:`RoutingWorld`).

    Parameters
    ----------
    agents
        Agents (``agent-01``...), every one able to take every task type. Default 8.
    seed
        Seed of the agents' parameters, their drift and the tasks. Default 0.
    duration_s
        Simulated seconds of task arrivals. Default 3600.
    utilisation
        Offered work over the fleet's capacity at each agent's best concurrency, outside
        bursts. Default 0.6.
    burst_every_s, burst_tasks, burst_window_s
        Every ``burst_every_s`` (default 600), ``burst_tasks`` more tasks (default 40) arrive
        within ``burst_window_s`` (default 30), each with a deadline and priority 1.
    deadline_share
        Share of the other tasks that carry a deadline (default 0.3).
    degrade
        Whether the fastest agent degrades from a third of the run (over five minutes, or a
        sixth of a shorter run, its run times grow until it is three times slower than the
        fleet's median agent, and its failures double), and recovers over two minutes from
        two thirds. Default True.
    """

    agents: int = 8
    seed: int = 0
    duration_s: float = 3600.0
    utilisation: float = 0.6
    burst_every_s: float = 600.0
    burst_tasks: int = 40
    burst_window_s: float = 30.0
    deadline_share: float = 0.3
    degrade: bool = True

    def __post_init__(self) -> None:
        if self.agents < 2:
            raise ValueError(f"agents={self.agents}: routing needs at least 2 agents")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"duration_s={self.duration_s!r} must be a finite number > 0")
        if not 0 < self.utilisation < 2:
            raise ValueError(f"utilisation={self.utilisation!r} must be in (0, 2)")


@dataclass(frozen=True)
class RoutedTask:
    """A task to route: when it arrives, its type, deadline (None: none) and priority, and
    its own random draws, so it runs alike under every policy (one per attempt)."""

    task_id: str
    arrival_ms: int
    task_type: int
    deadline_ms: int | None
    priority: int
    noise: tuple[float, ...]  # standard normal: its run time's deviation
    fail_draw: tuple[float, ...]  # uniform: it fails when below the failure probability
    cut: tuple[float, ...]  # uniform in [0.1, 0.9]: how far a failed run got


#: The most attempts a task gets (a failed run is retried on a newly chosen agent).
MAX_ATTEMPTS = 5
#: A degraded agent ends up this many times slower than the fleet's median agent, and its
#: failures double.
_ROUTING_DEGRADATION = 3.0
#: Past its knee, each more task running at once makes an agent's runs this much longer.
_CONCURRENCY_SLOWDOWN = 0.5
_DRIFT_STEP_MS = 60_000


class RoutingWorld:
    """Heterogeneous agents whose speeds and failure rates differ and drift, one of which
    degrades mid-run, and a seeded task stream with bursts and deadlines.

    Each agent has a speed per task type (the crew of :class:`Simulation`, with a wider
    spread between agents), a slow random walk of its speed (a 20-minute memory, 15% spread)
    and a knee: up to ``knee`` tasks at once run at full speed, each one more beyond makes
    runs :data:`_CONCURRENCY_SLOWDOWN` longer, and past ``2 * knee`` tasks wait in its queue.
    The truth is public (:meth:`mean_ms`, :meth:`failure`), for an oracle and for regret.

    Examples
    --------
    >>> world = RoutingWorld(RoutingScenario(agents=4, duration_s=600, seed=3))
    >>> len(world.tasks), world.agents[world.degraded]
    (111, 'agent-02')
    >>> [round(world.slowdown(world.degraded, t), 1) for t in (0, 250_000, 350_000, 599_000)]
    [1.0, 2.6, 4.2, 1.0]
    """

    def __init__(self, scenario: RoutingScenario | None = None) -> None:
        self.scenario = cfg = scenario or RoutingScenario()
        crew_seed, drift_seed, task_seed = np.random.SeedSequence(cfg.seed).spawn(3)
        rng = np.random.default_rng(crew_seed)
        crew = _Crew.draw(rng, cfg.agents)
        self.agents = tuple(agent_name(i, cfg.agents) for i in range(cfg.agents))
        speed = np.exp(rng.normal(0.0, 0.4, cfg.agents))[:, None]
        self.median_ms: FloatArray = crew.median_ms * speed
        self.base_failure: FloatArray = crew.failure
        self.knee: IntArray = rng.integers(2, 5, cfg.agents)
        self.slots: IntArray = 2 * self.knee
        self.mix: FloatArray = np.array([0.25, 0.3, 0.1, 0.15, 0.2])
        steps = int(cfg.duration_s * 1000 // _DRIFT_STEP_MS) + 2
        walk = np.zeros((steps, cfg.agents))
        phi = math.exp(-_DRIFT_STEP_MS / 1_200_000)
        shocks = np.random.default_rng(drift_seed).normal(0.0, 0.15, walk.shape)
        walk[0] = shocks[0]
        for t in range(1, steps):
            walk[t] = phi * walk[t - 1] + math.sqrt(1 - phi**2) * shocks[t]
        self.drift: FloatArray = np.exp(walk)
        typical = (self.median_ms * self.mix).sum(axis=1)
        self.degraded = int(np.argmin(typical))
        span = cfg.duration_s * 1000
        start, worst = round(span / 3), round(span / 3 + min(300_000, span / 6))
        self.degrade_ms = (start, worst, round(2 * span / 3))
        ratio = float(np.median(typical) / typical[self.degraded])
        self.degradation = _ROUTING_DEGRADATION * ratio
        #: When the degrading agent becomes slower than the fleet's median agent.
        self.worse_ms = round(start + (ratio - 1) / (self.degradation - 1) * (worst - start))
        self.tasks = self._draw_tasks(np.random.default_rng(task_seed), typical)

    def _draw_tasks(self, rng: np.random.Generator, typical: FloatArray) -> tuple[RoutedTask, ...]:
        cfg = self.scenario
        mean_run = float(np.mean(typical)) * math.exp(float(np.mean(_TASK_SIGMA)) ** 2 / 2)
        rate_per_ms = cfg.utilisation * float(self.knee.sum()) / mean_run
        span = cfg.duration_s * 1000
        arrivals = list(np.sort(rng.uniform(0, span, rng.poisson(rate_per_ms * span))))
        bursts: list[float] = []
        if cfg.burst_every_s > 0:
            for start in np.arange(cfg.burst_every_s, cfg.duration_s, cfg.burst_every_s):
                window = rng.uniform(0, cfg.burst_window_s, cfg.burst_tasks)
                bursts += list((start + window) * 1000)
        times = np.array(arrivals + bursts)
        burst = np.r_[np.zeros(len(arrivals), bool), np.ones(len(bursts), bool)]
        order = np.argsort(times, kind="stable")
        times, burst = times[order], burst[order]
        count = len(times)
        kinds = (rng.random(count)[:, None] > np.cumsum(self.mix)).sum(axis=1)
        kinds = np.minimum(kinds, len(TASK_TYPES) - 1)
        with_deadline = burst | (rng.random(count) < cfg.deadline_share)
        slack = np.where(burst, 3.0, 4.0) * _TASK_MEDIAN_MS[kinds]
        draws = rng.standard_normal((count, MAX_ATTEMPTS))
        fails = rng.random((count, MAX_ATTEMPTS))
        cuts = rng.uniform(0.1, 0.9, (count, MAX_ATTEMPTS))
        return tuple(
            RoutedTask(
                task_id=f"task-{i:06d}",
                arrival_ms=int(times[i]),
                task_type=int(kinds[i]),
                deadline_ms=int(times[i] + slack[i]) if with_deadline[i] else None,
                priority=int(burst[i]),
                noise=tuple(draws[i].tolist()),
                fail_draw=tuple(fails[i].tolist()),
                cut=tuple(cuts[i].tolist()),
            )
            for i in range(count)
        )

    def slowdown(self, agent: int, t_ms: float) -> float:
        """How much longer than usual the agent's runs take at ``t_ms`` (its degradation)."""
        if agent != self.degraded or not self.scenario.degrade:
            return 1.0
        start, worst, recover = self.degrade_ms
        if t_ms < start:
            return 1.0
        if t_ms < worst:
            return 1.0 + (self.degradation - 1.0) * (t_ms - start) / (worst - start)
        if t_ms < recover:
            return self.degradation
        return max(1.0, self.degradation - (self.degradation - 1.0) * (t_ms - recover) / 120_000)

    def concurrency_factor(self, agent: int, running: int) -> float:
        """How much longer runs take with ``running`` tasks at once (this one included)."""
        return 1.0 + _CONCURRENCY_SLOWDOWN * max(0, running - int(self.knee[agent]))

    def median_at(self, agent: int, task_type: int, t_ms: float) -> float:
        """The agent's true median run time of a task type at ``t_ms``, alone."""
        step = min(int(t_ms // _DRIFT_STEP_MS), len(self.drift) - 1)
        drift = float(self.drift[step, agent])
        return float(self.median_ms[agent, task_type]) * drift * self.slowdown(agent, t_ms)

    def mean_ms(self, agent: int, task_type: int, t_ms: float, running: int) -> float:
        """The agent's true mean run time at ``t_ms`` with ``running`` tasks at once."""
        sigma = float(_TASK_SIGMA[task_type])
        median = self.median_at(agent, task_type, t_ms)
        return median * math.exp(sigma**2 / 2) * self.concurrency_factor(agent, running)

    def failure(self, agent: int, task_type: int, t_ms: float) -> float:
        """The agent's true failure probability for a task type at ``t_ms``."""
        doubled = 2.0 if self.slowdown(agent, t_ms) > 1.0 else 1.0
        return min(float(self.base_failure[agent, task_type]) * doubled, 0.9)

    def run(
        self, task: RoutedTask, attempt: int, agent: int, t_ms: float, running: int
    ) -> tuple[float, bool]:
        """One attempt of ``task`` on ``agent`` starting at ``t_ms`` with ``running`` tasks at
        once (itself included): its run time and whether it succeeded."""
        kind = task.task_type
        duration = (
            self.median_at(agent, kind, t_ms)
            * math.exp(float(_TASK_SIGMA[kind]) * task.noise[attempt])
            * self.concurrency_factor(agent, running)
        )
        if task.fail_draw[attempt] < self.failure(agent, kind, t_ms):
            return duration * task.cut[attempt], False
        return duration, True


@dataclass(frozen=True)
class WorkflowKind:
    """A kind of workflow: its root task type, its usual steps (an optional step is taken
    with probability ``optional[step]``) and how often a workflow of it fails."""

    name: str
    steps: tuple[str, ...]
    optional: Mapping[str, float]
    failure: float


#: The simulated kinds of workflow, each with optional steps some of its workflows skip (one
#: in ten incidents skips code review: uncommon, not rare). A release without ``lint``
#: fails three times as often as one with it: the injected best practice.
WORKFLOW_KINDS: tuple[WorkflowKind, ...] = (
    WorkflowKind("release", ("plan", "build", "lint", "test", "deploy"), {"lint": 0.5}, 0.06),
    WorkflowKind("incident", ("triage", "summarise", "code_review", "data_sync"),
                 {"summarise": 0.6, "code_review": 0.9}, 0.08),
    WorkflowKind("onboarding", ("plan", "data_sync", "summarise", "code_review"),
                 {"summarise": 0.9}, 0.05),
)  # fmt: skip
#: How often a release without ``lint`` fails (with it: its kind's ``failure``).
RELEASE_WITHOUT_LINT_FAILURE = 0.18
#: The features that say "release workflows with lint fail less", each with the sign of its
#: association with failure (a release has lint or goes straight from build to test).
INJECTED_ADVICE: dict[str, tuple[tuple[str, int], ...]] = {
    "release": (("has:lint", -1), ("build>lint", -1), ("lint>test", -1), ("build>test", 1)),
}
#: The agents that run the live simulation's workflows, ``wf-agent-01``..., each workflow on
#: one of them: one partition of the agent-event topic then carries a workflow's events in
#: the order they happened. The worker waits only ``FORESIGHT_WORKFLOW_REORDER_S`` (5 s) of
#: event time for a late step: 55 ms of wall time in the demo's 90x replay, less than
#: partitions drift apart.
WORKFLOW_POOL = "wf-agent"
#: The error class injected as a precursor: a workflow whose step fails with it fails in the
#: end with probability :data:`_PRECURSOR_FAILURE`.
PRECURSOR_ERROR = "quota_exceeded"
_PRECURSOR_FAILURE = 0.85
_TRANSIENT_ERRORS = ("timeout", "tool_error", "invalid_output")
_STEP_MEDIAN_S = {
    "plan": 20.0, "build": 120.0, "lint": 30.0, "test": 90.0, "deploy": 60.0, "triage": 15.0,
    "summarise": 10.0, "code_review": 45.0, "data_sync": 40.0,
}  # fmt: skip
_TRANSIENT_FAILURE = 0.05  # a step fails and is retried (same step); the outcome is unchanged
_STALL_S = (2_400.0, 3_000.0)  # a stalled step hangs this long before it finishes
#: A stalled step has shown as one once it has hung this long: no usual step takes a quarter
#: hour (the slowest, ``build``, would be five sigmas above its median).
_STALL_SHOWN_S = 900.0


class WorkflowPattern(StrEnum):
    """What a simulated workflow was given to find."""

    RARE_PATH = "rare_path"  # a step of a task type its kind never takes
    LOOP = "loop"  # two steps repeated three to five times in a row
    STALL = "stall"  # one step hangs for 40 to 50 minutes
    PRECURSOR = "precursor"  # one step fails with PRECURSOR_ERROR (and is retried)


@dataclass(frozen=True)
class WorkflowScenario:
    """A seeded stream of workflows with injected patterns (see :func:`workflow_stream`).

    Parameters
    ----------
    workflows
        Workflows a :class:`WorkflowWorld` runs (the stream itself never ends). Default 3000.
    seed
        Seed of every choice. Default 0.
    per_min
        Workflows starting per minute (Poisson). Default 10.
    shares
        Share of the workflows given each pattern (at most one each). Default 1.5% rare
        paths, 1% loops, 1% stalls, 3% precursors.
    agents
        Agents that run the steps (``agent-01``...); the roots run on ``orchestrator``.
    start_ms
        Event time the arrivals count from (the first workflow starts a little after).
    pool
        The agents' name before their number: ``agent`` (the default) names them
        ``agent-01``...
    one_agent
        Whether each workflow runs all its tasks, root included, on one agent of the pool
        (in turn) rather than its root on ``orchestrator`` and each step on any agent.
        Default False.
    """

    workflows: int = 3000
    seed: int = 0
    per_min: float = 10.0
    shares: Mapping[WorkflowPattern, float] = field(
        default_factory=lambda: {
            WorkflowPattern.RARE_PATH: 0.015,
            WorkflowPattern.LOOP: 0.01,
            WorkflowPattern.STALL: 0.01,
            WorkflowPattern.PRECURSOR: 0.03,
        }
    )
    agents: int = 8
    start_ms: int = DEFAULT_START_MS
    pool: str = "agent"
    one_agent: bool = False

    def __post_init__(self) -> None:
        if self.workflows < 1 or self.agents < 1:
            raise ValueError(f"workflows={self.workflows} and agents={self.agents} must be >= 1")
        if not (math.isfinite(self.per_min) and self.per_min > 0):
            raise ValueError(f"per_min={self.per_min!r} must be a finite rate > 0")
        if any(not 0 <= s < 1 for s in self.shares.values()) or sum(self.shares.values()) >= 1:
            raise ValueError(f"shares={dict(self.shares)} must be in [0, 1) and sum below 1")


@dataclass(frozen=True)
class WorkflowTruth:
    """What a simulated workflow was: its kind, injected pattern, path and outcome, and the
    event time by which its pattern has been played (``None`` without one): the start of a
    rare step or of a loop's last step, a quarter hour into a stalled step, the end of the
    step that failed with the precursor error."""

    kind: str
    pattern: WorkflowPattern | None
    path: tuple[str, ...]
    failed: bool
    pattern_ms: int | None = None


@dataclass(frozen=True)
class SimulatedWorkflow:
    """One workflow of :func:`workflow_stream`: its id, its truth, and its AgentEvents as
    ``(event time, agent, record)`` in event-time order, from the root's STARTED at
    ``start_ms`` to the root's end at ``end_ms``."""

    workflow_id: str
    truth: WorkflowTruth
    events: tuple[tuple[int, str, Record], ...]

    @property
    def start_ms(self) -> int:
        return self.events[0][0]

    @property
    def end_ms(self) -> int:
        return self.events[-1][0]


def workflow_stream(scenario: WorkflowScenario) -> Iterator[SimulatedWorkflow]:
    """Seeded workflows, in start order, without end (``scenario.workflows`` is not read).

    Each workflow is a root task (its kind's type, on ``orchestrator``) spanning its steps,
    run one after another on random agents, each a child of the root with its
    ``step``. A step fails now and then with a transient error and is retried under the
    same step; a workflow that fails has its last step fail, then its root. Injected: rare
    paths (a step of a type the kind never takes), loops, stalls, and the precursor error
    class :data:`PRECURSOR_ERROR`; and a shape that truly fails more (a release without
    ``lint``, :data:`INJECTED_ADVICE`). The benchmark's :class:`WorkflowWorld` and the live
    :class:`Simulation` both draw their workflows from here.

    Examples
    --------
    >>> first = next(workflow_stream(WorkflowScenario(seed=1)))
    >>> first.workflow_id, first.truth.kind, [agent for _, agent, _ in first.events[:2]]
    ('wf-1-00000', 'onboarding', ['orchestrator', 'agent-04'])
    """
    rng = np.random.default_rng(scenario.seed)
    agents = tuple(agent_name(i, scenario.agents, scenario.pool) for i in range(scenario.agents))
    t_ms = float(scenario.start_ms)
    for i in itertools.count():
        t_ms += rng.exponential(60_000.0 / scenario.per_min)
        workers = (agents[i % len(agents)],) if scenario.one_agent else agents
        yield _workflow(rng, scenario, workers, f"wf-{scenario.seed}-{i:05d}", int(t_ms))


def _workflow(
    rng: np.random.Generator,
    scenario: WorkflowScenario,
    agents: tuple[str, ...],
    workflow_id: str,
    t0: int,
) -> SimulatedWorkflow:
    """One workflow of :func:`workflow_stream`, starting at ``t0``."""
    kind = WORKFLOW_KINDS[int(rng.choice(len(WORKFLOW_KINDS), p=[0.5, 0.3, 0.2]))]
    path = [s for s in kind.steps if rng.random() < kind.optional.get(s, 1.0)]
    failure = kind.failure
    if kind.name == "release" and "lint" not in path:
        failure = RELEASE_WITHOUT_LINT_FAILURE
    draw, pattern = rng.random(), None
    for candidate, share in scenario.shares.items():
        if draw < share:
            pattern = candidate
            break
        draw -= share
    at = int(rng.integers(1, len(path)))  # where a pattern goes: never the first step
    shown = 0  # a rare path or a loop is played when this step (numbered from 1) starts
    if pattern is WorkflowPattern.RARE_PATH:
        foreign = sorted(set(_STEP_MEDIAN_S) - set(kind.steps))
        path.insert(at, foreign[int(rng.integers(len(foreign)))])
        shown = at + 1
    elif pattern is WorkflowPattern.LOOP:
        repeats = int(rng.integers(2, 5))
        path[at + 1 : at + 1] = path[at - 1 : at + 1] * repeats
        shown = at + 2 * repeats + 1
    if pattern is WorkflowPattern.PRECURSOR:
        failure = _PRECURSOR_FAILURE
    failed = bool(rng.random() < failure)
    events: list[tuple[int, str, Record]] = []
    pattern_ms = None

    def emit(t_ms: int, agent: str, task_id: str, parent: str | None, step: int | None,
             task_type: str, phase: str, error_class: str | None = None,
             duration_ms: float | None = None) -> None:  # fmt: skip
        record = {
            "agent": agent, "task_id": task_id, "task_type": task_type, "phase": phase,
            "event_time": t_ms, "duration_ms": duration_ms, "cost": None,
            "error_class": error_class, "labels": {}, "workflow_id": workflow_id,
            "parent_task_id": parent, "step": step,
        }  # fmt: skip
        events.append((t_ms, agent, record))

    root = f"{workflow_id}-root"
    orchestrator = agents[0] if scenario.one_agent else "orchestrator"
    emit(t0, orchestrator, root, None, None, kind.name, "STARTED")
    t = t0 + int(rng.uniform(500, 2_000))
    for step, task_type in enumerate(path, start=1):
        last = step == len(path)
        attempts = ["ok"]
        if pattern is WorkflowPattern.PRECURSOR and step == at:
            attempts = [PRECURSOR_ERROR, "ok"]
        elif rng.random() < _TRANSIENT_FAILURE:
            attempts = [_TRANSIENT_ERRORS[int(rng.integers(3))], "ok"]
        if failed and last:
            attempts[-1] = _TRANSIENT_ERRORS[int(rng.integers(3))]
        for attempt, result in enumerate(attempts):
            seconds = _STEP_MEDIAN_S[task_type] * math.exp(0.4 * rng.standard_normal())
            if pattern is WorkflowPattern.STALL and step == at and attempt == 0:
                seconds = rng.uniform(*_STALL_S)
                pattern_ms = t + int(_STALL_SHOWN_S * 1000)
            task = f"{workflow_id}-s{step}-a{attempt}"
            agent = agents[int(rng.integers(len(agents)))]
            if step == shown and pattern_ms is None:
                pattern_ms = t
            emit(t, agent, task, root, step, task_type, "STARTED")
            t += int(seconds * 1000)
            error = None if result == "ok" else result
            phase = "SUCCEEDED" if error is None else "FAILED"
            emit(t, agent, task, root, step, task_type, phase, error, seconds * 1000)
            if pattern is WorkflowPattern.PRECURSOR and step == at and attempt == 0:
                pattern_ms = t
            t += int(rng.uniform(500, 5_000))
    emit(t, orchestrator, root, None, None, kind.name, "FAILED" if failed else "SUCCEEDED",
         "step_failed" if failed else None, float(t - t0))  # fmt: skip
    truth = WorkflowTruth(kind.name, pattern, tuple(path), failed, pattern_ms)
    return SimulatedWorkflow(workflow_id, truth, tuple(events))


class WorkflowWorld:
    """The first ``scenario.workflows`` of :func:`workflow_stream` as one run of AgentEvents
    (v2), with the ground truth of what was injected.

    Examples
    --------
    >>> world = WorkflowWorld(WorkflowScenario(workflows=20, seed=1))
    >>> len(world.truth), sum(t.failed for t in world.truth.values())
    (20, 1)
    >>> topic, key, first = next(iter(world.events()))
    >>> topic, first["task_type"], first["parent_task_id"], first["workflow_id"]
    ('telemetry.agent-events', 'onboarding', None, 'wf-1-00000')
    """

    def __init__(self, scenario: WorkflowScenario | None = None) -> None:
        self.scenario = cfg = scenario or WorkflowScenario()
        workflows = list(itertools.islice(workflow_stream(cfg), cfg.workflows))
        self.agents = tuple(agent_name(i, cfg.agents, cfg.pool) for i in range(cfg.agents))
        self.truth: dict[str, WorkflowTruth] = {w.workflow_id: w.truth for w in workflows}
        self._events = sorted(
            ((t_ms, n, agent, record) for n, (t_ms, agent, record) in
             enumerate(e for w in workflows for e in w.events)),
            key=lambda e: (e[0], e[1]),
        )  # fmt: skip

    def events(self) -> Iterator[SimEvent]:
        """The run's AgentEvents, ``(topic, agent, record)``, in event-time order."""
        for _, _, agent, record in self._events:
            yield AGENT_EVENTS.name, agent, record


def csv_series(
    path: str | Path,
    entity: str,
    metric: str,
    labels: Mapping[str, str] | None = None,
) -> Iterator[SimEvent]:
    """Replay a ``timestamp,value`` CSV file as MetricBatch records of one metric.

    The file needs a header naming a ``timestamp`` and a ``value`` column (any order, other
    columns ignored; the layout of the NAB corpus). Timestamps are ISO 8601 (naive ones are
    UTC) or epoch numbers: seconds, or milliseconds when above 10^11. Rows come out in file
    order, one single-sample batch per row, keyed by ``entity``; blank lines are skipped.
    The whole file is read and checked before the first record, so a bad line replays
    nothing.

    Raises
    ------
    OSError
        When the file cannot be read.
    ValueError
        Naming the file (and the line and its bad text), when it is not UTF-8 CSV, the
        header lacks the columns, or a timestamp or value does not parse (values must be
        finite numbers).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "cpu.csv").write_text("timestamp,value\\n2014-04-01 00:00:00,12.5\\n")
    >>> [(key, r["event_time"], r["names"], r["values"])
    ...  for _, key, r in csv_series(folder / "cpu.csv", "nab-1", "cpu_percent")]
    [('nab-1', 1396310400000, ['cpu_percent'], [12.5])]
    """
    rows = iter_rows(Path(path))
    header = [column.strip().lower() for column in next(rows, [])]
    if "timestamp" not in header or "value" not in header:
        raise ValueError(
            f"{path}: header {header!r} has no 'timestamp' and 'value' columns; the first "
            "line must name them, e.g. 'timestamp,value'"
        )
    time_column, value_column = header.index("timestamp"), header.index("value")
    # 16 bytes a row, so a long file is checked whole without holding its text.
    times, values = array("q"), array("d")
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(time_column, value_column):
            raise ValueError(f"{path}:{line}: row {row!r} has fewer columns than the header")
        where = f"{path}:{line}"
        times.append(_parse_time_ms(row[time_column], where))
        values.append(_parse_value(row[value_column], where))
    return _csv_records(times, values, entity, metric, dict(labels or {}))


def _csv_records(
    times: Sequence[int], values: Sequence[float], entity: str, metric: str, labels: dict[str, str]
) -> Iterator[SimEvent]:
    for event_ms, value in zip(times, values, strict=True):
        yield (
            METRICS.name,
            entity,
            {
                "entity": entity,
                "event_time": event_ms,
                "labels": dict(labels),
                "names": [metric],
                "values": [value],
                "source": "csv",
                "kinds": [MetricKind.GAUGE.value],  # a replayed series is modelled as it is
                "ended": [],
            },
        )


def _parse_time_ms(text: str, where: str) -> int:
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"{where}: timestamp {text!r} is not a finite epoch number")
        return round(number if abs(number) >= 1e11 else number * 1000.0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{where}: timestamp {text!r} is neither ISO 8601 (2014-04-01 00:00:00) nor "
            "epoch seconds or milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000.0)


def _parse_value(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: value {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: value {text!r} is not finite; drop or fill that row")
    return value


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
