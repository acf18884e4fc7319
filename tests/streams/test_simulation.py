"""The telemetry simulator: reproducibility, schema fit, physics, incidents and their labels."""

from __future__ import annotations

import argparse
import doctest
import itertools
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from schemas.codec import Codec, Record
from streams import simulation
from streams.cli import main
from streams.commands.simulate import add_simulation_arguments, simulation_from_args
from streams.simulation import (
    DEFAULT_START_MS,
    METRIC_NAMES,
    TASK_TYPES,
    Incident,
    IncidentType,
    ScheduledIncident,
    SimEvent,
    Simulation,
    SimulationConfig,
    csv_series,
    default_incidents,
)
from streams.topics import AGENT_EVENTS, LABELS, METRICS

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
MONDAY_MIDNIGHT_MS = DEFAULT_START_MS - 8 * HOUR_MS
PERCENT_METRICS = ("cpu_percent", "memory_percent", "disk_used_percent")


@pytest.fixture(scope="module")
def default_run() -> tuple[Simulation, list[SimEvent]]:
    """An hour of the default fleet (20 hosts, 5 agents, the default incident schedule)."""
    sim = Simulation()
    return sim, list(sim.events(duration_s=3600))


def series(events: list[SimEvent], entity: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Event times and values of one metric of one entity, in stream order."""
    column = METRIC_NAMES.index(metric)
    pairs = [
        (record["event_time"], record["values"][column])
        for topic, key, record in events
        if topic == METRICS.name and key == entity
    ]
    times, values = zip(*pairs, strict=True)
    return np.array(times), np.array(values)


def emitted_at(topic: str, record: Record) -> int:
    """When a record is emitted: its event time, or for a label the moment it became known."""
    if topic != LABELS.name:
        return int(record["event_time"])
    known = record["start_time"] if record["kind"] == "FAILURE" else record["end_time"]
    return int(known)


def incident_of(sim: Simulation, kind: IncidentType) -> ScheduledIncident:
    return next(i for i in sim.incidents if i.incident_type is kind)


def finished_tasks(events: list[SimEvent]) -> list[Record]:
    return [r for topic, _, r in events if topic == AGENT_EVENTS.name and r["phase"] != "STARTED"]


def test_same_seed_gives_identical_events() -> None:
    config = SimulationConfig(hosts=4, agents=3, seed=11)
    first = list(Simulation(config).events(duration_s=1200))
    again = Simulation(config)
    assert list(again.events(duration_s=1200)) == first
    assert list(again.events(duration_s=1200)) == first  # every call replays from the start


def test_different_seed_gives_different_events() -> None:
    one = list(Simulation(SimulationConfig(hosts=4, agents=3, seed=1)).events(duration_s=600))
    two = list(Simulation(SimulationConfig(hosts=4, agents=3, seed=2)).events(duration_s=600))
    assert one != two


def test_records_round_trip_through_their_avro_schemas(
    default_run: tuple[Simulation, list[SimEvent]],
) -> None:
    _, events = default_run
    codec = Codec()
    schema_of = {spec.name: spec.schema for spec in (METRICS, AGENT_EVENTS, LABELS)}
    assert {topic for topic, _, _ in events} == set(schema_of)
    for topic, key, record in events:
        name, decoded = codec.decode(codec.encode(schema_of[topic], record))
        assert name == schema_of[topic]
        assert decoded == record
        assert key == record.get("entity", record.get("agent"))


def test_events_come_in_event_time_order(default_run: tuple[Simulation, list[SimEvent]]) -> None:
    _, events = default_run
    times = [emitted_at(topic, record) for topic, _, record in events]
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert times[-1] < DEFAULT_START_MS + 3600 * 1000


def test_one_batch_per_host_per_scrape_with_physical_values(
    default_run: tuple[Simulation, list[SimEvent]],
) -> None:
    sim, events = default_run
    batches = [record for topic, _, record in events if topic == METRICS.name]
    assert len(batches) == len(sim.hosts) * 360  # an hour of 10-second scrapes
    assert all(b["names"] == list(METRIC_NAMES) and b["source"] == "simulator" for b in batches)
    assert set(batches[0]["labels"]) == {"host", "service", "role", "region"}
    values = np.array([b["values"] for b in batches])
    assert np.isfinite(values).all()
    assert (values >= 0).all()
    for metric in PERCENT_METRICS:
        assert (values[:, METRIC_NAMES.index(metric)] <= 100).all()
    assert (values[:, METRIC_NAMES.index("error_rate")] <= 1).all()


def test_default_schedule_spreads_one_incident_of_each_type() -> None:
    planned = default_incidents(hosts=20, agents=5)
    assert {i.incident_type for i in planned} == set(IncidentType)
    assert len({i.entity for i in planned}) == len(planned)
    assert all(i.start_s + i.duration_s <= 3600 for i in planned)
    # A small fleet keeps a healthy host and a healthy agent.
    small = default_incidents(hosts=2, agents=1)
    assert [(i.incident_type, i.entity) for i in small] == [(IncidentType.MEMORY_LEAK, "host-01")]


@pytest.mark.parametrize(
    ("kind", "metric"),
    [(IncidentType.MEMORY_LEAK, "memory_percent"), (IncidentType.DISK_FILL, "disk_used_percent")],
)
def test_resource_exhaustion_builds_up_then_fails_with_a_label(
    default_run: tuple[Simulation, list[SimEvent]], kind: IncidentType, metric: str
) -> None:
    sim, events = default_run
    incident = incident_of(sim, kind)
    assert incident.failure_ms is not None
    failure_ms = incident.failure_ms
    assert failure_ms - incident.start_ms >= 15 * MINUTE_MS
    times, values = series(events, incident.entity, metric)
    at = int(np.searchsorted(times, failure_ms))
    assert times[at] == failure_ms
    assert values[at] == pytest.approx(100.0)
    before = values[(times >= incident.start_ms - 5 * MINUTE_MS) & (times < incident.start_ms)]
    assert values[np.searchsorted(times, failure_ms - 15 * MINUTE_MS)] < 85
    building = values[(times >= incident.start_ms) & (times <= failure_ms)]
    minute = 6  # scrapes per minute
    per_minute = building[: len(building) // minute * minute].reshape(-1, minute).mean(axis=1)
    assert (np.diff(per_minute) > 0).all()  # climbs steadily, minute by minute
    assert values[at + 1] < before.mean() + 10  # restarted or cleaned up after the failure

    labels = [(n, r) for n, (topic, _, r) in enumerate(events) if topic == LABELS.name]
    failures = [
        (n, r) for n, r in labels if r["entity"] == incident.entity and r["kind"] == "FAILURE"
    ]
    assert len(failures) == 1
    position, failure = failures[0]
    assert failure["start_time"] == failure_ms
    assert failure["incident_type"] == kind.value
    assert failure["metric"] == metric
    # Delayed ground truth: the label comes right after the failing scrape, not before.
    earlier = [emitted_at(t, r) for t, _, r in events[:position] if t == METRICS.name]
    later = [emitted_at(t, r) for t, _, r in events[position:] if t == METRICS.name]
    assert max(earlier) == failure_ms < min(later)
    spans = [r for _, r in labels if r["entity"] == incident.entity and r["kind"] == "INCIDENT"]
    assert [(r["start_time"], r["end_time"]) for r in spans] == [(incident.start_ms, failure_ms)]


def test_every_ended_incident_is_labelled_and_healthy_entities_are_not(
    default_run: tuple[Simulation, list[SimEvent]],
) -> None:
    sim, events = default_run
    labels = [r for topic, _, r in events if topic == LABELS.name]
    spans = {(r["entity"], r["incident_type"]): r for r in labels if r["kind"] == "INCIDENT"}
    for incident in sim.incidents:
        label = spans[(incident.entity, incident.incident_type.value)]
        assert (label["start_time"], label["end_time"]) == (incident.start_ms, incident.end_ms)
        assert label["metric"] == incident.metric
    assert "deploy" in spans[("host-04", "latency_regression")]["description"]
    troubled = {i.entity for i in sim.incidents}
    healthy = [name for name in sim.hosts + sim.agents if name not in troubled]
    assert len(healthy) >= 10
    assert not [r for r in labels if r["entity"] in healthy]


def test_cpu_saturation_explodes_latency_and_queue(
    default_run: tuple[Simulation, list[SimEvent]],
) -> None:
    sim, events = default_run
    incident = incident_of(sim, IncidentType.CPU_SATURATION)

    def window(metric: str, start_ms: int, end_ms: int) -> np.ndarray:
        times, values = series(events, incident.entity, metric)
        selected: np.ndarray = values[(times >= start_ms) & (times < end_ms)]
        return selected

    before = (incident.start_ms - 10 * MINUTE_MS, incident.start_ms)
    late = (incident.end_ms - 5 * MINUTE_MS, incident.end_ms)
    assert window("cpu_percent", *late).min() > 90
    for metric, factor in (("request_latency_ms", 5), ("queue_depth", 20)):
        assert np.median(window(metric, *late)) > factor * np.median(window(metric, *before))
    assert np.median(window("error_rate", *late)) > 5 * np.median(window("error_rate", *before))


def test_latency_regression_steps_latency_and_errors_up(
    default_run: tuple[Simulation, list[SimEvent]],
) -> None:
    sim, events = default_run
    incident = incident_of(sim, IncidentType.LATENCY_REGRESSION)
    for metric, factor in (("request_latency_ms", 1.4), ("error_rate", 3)):
        times, values = series(events, incident.entity, metric)
        during = values[(times >= incident.start_ms) & (times < incident.end_ms)]
        before = values[(times >= incident.start_ms - 15 * MINUTE_MS) & (times < incident.start_ms)]
        assert np.median(during) > factor * np.median(before)


def test_daily_and_weekly_cycles_show_in_cpu() -> None:
    config = SimulationConfig(
        hosts=3,
        agents=0,
        incidents=(),
        scrape_interval_s=900,
        start_ms=MONDAY_MIDNIGHT_MS,
    )
    events = list(Simulation(config).events(duration_s=7 * 24 * 3600))
    cpu = METRIC_NAMES.index("cpu_percent")
    rows = [(r["event_time"], r["values"][cpu]) for t, _, r in events if t == METRICS.name]
    times = np.array([t for t, _ in rows])
    values = np.array([v for _, v in rows])
    hour = (times - MONDAY_MIDNIGHT_MS) % (24 * HOUR_MS) // HOUR_MS
    weekday = (times - MONDAY_MIDNIGHT_MS) // (24 * HOUR_MS)
    peak = values[(hour >= 12) & (hour < 16) & (weekday < 5)].mean()
    trough = values[(hour >= 1) & (hour < 5) & (weekday < 5)].mean()
    weekend_peak = values[(hour >= 12) & (hour < 16) & (weekday >= 5)].mean()
    assert peak > trough + 20
    assert trough < weekend_peak < peak - 10


def test_agent_tasks_start_then_finish_with_consistent_fields() -> None:
    config = SimulationConfig(hosts=1, agents=3, incidents=(), task_rate_per_agent_per_min=10)
    events = list(Simulation(config).events(duration_s=3600))
    started: dict[str, Record] = {}
    for topic, key, record in events:
        if topic != AGENT_EVENTS.name:
            continue
        assert key == record["agent"]
        if record["phase"] == "STARTED":
            assert record["duration_ms"] is None and record["cost"] is None
            started[record["task_id"]] = record
            continue
        start = started.pop(record["task_id"])  # STARTED came first
        assert record["task_type"] == start["task_type"] in TASK_TYPES
        assert record["event_time"] - start["event_time"] == record["duration_ms"] > 0
        assert record["cost"] > 0
        assert (record["error_class"] is None) == (record["phase"] == "SUCCEEDED")


def test_agent_durations_depend_on_agent_and_task_type() -> None:
    config = SimulationConfig(hosts=1, agents=4, incidents=(), task_rate_per_agent_per_min=20)
    tasks = finished_tasks(list(Simulation(config).events(duration_s=3 * 3600)))
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for task in tasks:
        if task["phase"] == "SUCCEEDED":
            durations[(task["agent"], task["task_type"])].append(task["duration_ms"])
    median = {pair: float(np.median(values)) for pair, values in durations.items()}
    for task_type in TASK_TYPES:
        by_agent = [m for (_, kind), m in median.items() if kind == task_type]
        assert max(by_agent) > 1.5 * min(by_agent), task_type  # some agents are faster at it
    assert median[("agent-01", "deploy")] > 5 * median[("agent-01", "triage")]


def test_agent_failure_burst_raises_the_failure_rate() -> None:
    burst = Incident(IncidentType.AGENT_FAILURE_BURST, "agent-01", 1200, 1200)
    config = SimulationConfig(hosts=1, agents=2, incidents=(burst,), task_rate_per_agent_per_min=10)
    sim = Simulation(config)
    incident = sim.incidents[0]
    tasks = [t for t in finished_tasks(list(sim.events(3600))) if t["agent"] == "agent-01"]
    starts = {t["task_id"]: t["event_time"] - t["duration_ms"] for t in tasks}

    def failure_rate(inside: bool) -> float:
        chosen = [
            t["phase"] == "FAILED"
            for t in tasks
            if (incident.start_ms <= starts[t["task_id"]] < incident.end_ms) == inside
        ]
        return float(np.mean(chosen))

    assert failure_rate(inside=True) > 0.4 > 3 * failure_rate(inside=False)


def test_degrading_agent_slows_down_over_the_incident() -> None:
    drift = Incident(IncidentType.AGENT_DEGRADATION, "agent-01", 1200, 2400)
    config = SimulationConfig(hosts=1, agents=2, incidents=(drift,), task_rate_per_agent_per_min=20)
    sim = Simulation(config)
    incident = sim.incidents[0]
    tasks = [
        t
        for t in finished_tasks(list(sim.events(3600)))
        if t["agent"] == "agent-01" and t["phase"] == "SUCCEEDED"
    ]
    started = {t["task_id"]: t["event_time"] - t["duration_ms"] for t in tasks}
    healthy: dict[str, list[float]] = defaultdict(list)
    for task in tasks:
        if started[task["task_id"]] < incident.start_ms:
            healthy[task["task_type"]].append(task["duration_ms"])
    baseline = {kind: float(np.median(values)) for kind, values in healthy.items()}
    late = [
        task["duration_ms"] / baseline[task["task_type"]]
        for task in tasks
        if incident.end_ms - 10 * MINUTE_MS <= started[task["task_id"]] < incident.end_ms
    ]
    assert np.median(late) > 2.0


def test_incidents_are_checked_against_the_fleet() -> None:
    with pytest.raises(ValueError, match=r"'host-09'.*host-01\.\.host-03"):
        Simulation(
            SimulationConfig(
                hosts=3, incidents=(Incident(IncidentType.DISK_FILL, "host-09", 0, 60),)
            )
        )
    with pytest.raises(ValueError, match=r"'host-01'.*agents"):
        Simulation(
            SimulationConfig(
                incidents=(Incident(IncidentType.AGENT_DEGRADATION, "host-01", 0, 60),)
            )
        )
    with pytest.raises(ValueError, match=r"'gremlins'.*memory_leak"):
        Incident("gremlins", "host-01", 0, 60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duration_s=0"):
        Incident(IncidentType.MEMORY_LEAK, "host-01", 0, 0)
    with pytest.raises(ValueError, match="scrape_interval_s=0"):
        SimulationConfig(scrape_interval_s=0)
    with pytest.raises(ValueError, match="duration_s=-1"):
        next(Simulation().events(duration_s=-1))


def test_csv_replay_reproduces_the_file(tmp_path: Path) -> None:
    iso = tmp_path / "iso.csv"
    iso.write_text("timestamp,value\n2014-04-01 00:00:00,12.5\n2014-04-01T00:05:00Z,13\n\n")
    epoch = tmp_path / "epoch.csv"
    epoch.write_text("value,timestamp\n1.5,1396310400\n2.5,1396310700000\n")
    for path in (iso, epoch):
        out = list(csv_series(path, "nab-1", "cpu_percent", labels={"source_file": path.name}))
        assert [(t, k) for t, k, _ in out] == [(METRICS.name, "nab-1")] * 2
        assert [r["event_time"] for _, _, r in out] == [1396310400000, 1396310700000]
        assert all(r["names"] == ["cpu_percent"] for _, _, r in out)
        assert all(r["labels"] == {"source_file": path.name} for _, _, r in out)
        codec = Codec()
        for _, _, record in out:
            assert codec.decode(codec.encode("metric_batch", record))[1] == record
    values = [r["values"][0] for _, _, r in csv_series(iso, "nab-1", "cpu_percent")]
    assert values == [12.5, 13.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,reading\n1,2\n", "no 'timestamp' and 'value' columns"),
        ("timestamp,value\nyesterday,2\n", r":2: timestamp 'yesterday'"),
        ("timestamp,value\n1396310400,\n", r":2: value '' is not a number"),
        ("timestamp,value\n1396310400,1\n1396310460,nan\n", r":3: value 'nan' is not finite"),
    ],
)
def test_csv_replay_names_the_bad_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        list(csv_series(path, "nab-1", "cpu_percent"))


def test_csv_replay_reads_a_spreadsheet_export_and_checks_every_line_first(
    tmp_path: Path,
) -> None:
    export = tmp_path / "export.csv"
    export.write_text("timestamp,value\n1396310400,1.5\n", encoding="utf-8-sig")
    assert [r["values"] for _, _, r in csv_series(export, "e", "cpu_percent")] == [[1.5]]
    late_error = tmp_path / "late.csv"
    late_error.write_text("timestamp,value\n1396310400,1\n1396310460,2\n1396310520,x\n")
    with pytest.raises(ValueError, match=":4: value 'x'"):
        csv_series(late_error, "e", "cpu_percent")  # before the first record, not on it
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("timestamp,value\n1396310400,1\n# d\u00e9bit\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{latin1}: not UTF-8 text"):
        csv_series(latin1, "e", "cpu_percent")


def test_simulate_refuses_a_bad_csv_in_one_line(tmp_path: Path) -> None:
    """Checked before anything is produced: no broker needed to be told the file is bad."""
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n1396310400,1\n1396310460,inf\n")
    foresight = Path(sys.executable).parent / "foresight"
    for path, message in ((bad, f"{bad}:3: value 'inf' is not finite"),
                          (tmp_path / "missing.csv", "No such file")):  # fmt: skip
        run = subprocess.run(
            [str(foresight), "simulate", "--csv", str(path), "--speed", "0"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert run.returncode == 2
        assert run.stderr.startswith("foresight simulate: ") and message in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_docstring_examples_run() -> None:
    result = doctest.testmod(simulation)
    assert result.attempted >= 3
    assert result.failed == 0


def test_load_curve_stays_in_range() -> None:
    week = MONDAY_MIDNIGHT_MS + np.arange(0, 7 * 24 * HOUR_MS, 5 * MINUTE_MS, dtype=np.float64)
    curve = simulation.load_curve(week)
    assert curve.min() >= 0.15
    assert curve.max() <= 1.0
    assert math.isclose(curve.min(), 0.15, abs_tol=0.01)


def _cpu_by_step(start_ms: int, local_end_hour: float | None) -> list[list[float]]:
    """Each scrape's host CPU values of a quarter-hour simulation run as the CLI makes it."""
    parser = argparse.ArgumentParser()
    add_simulation_arguments(parser, duration=900.0, local_end_hour=local_end_hour)
    args = parser.parse_args(["--start", str(start_ms), "--hosts", "3", "--no-incidents"])
    sim, duration = simulation_from_args(args)
    return [
        [v for n, v in zip(r["names"], r["values"], strict=True) if n == "cpu_percent"]
        for topic, _, r in sim.events(duration)
        if topic == METRICS.name and isinstance(r, dict)
    ]


def test_a_fleet_on_its_local_clock_runs_the_same_whatever_the_hour_it_starts() -> None:
    """The demo's fleet ends its replay at the same local hour whenever it runs, so its
    result does not depend on the time of day (a run in the business hours' ramp-up raised
    false alarms that a run at night did not)."""
    morning, night = MONDAY_MIDNIGHT_MS + 8 * HOUR_MS, MONDAY_MIDNIGHT_MS + 2 * HOUR_MS
    assert _cpu_by_step(morning, 4.0) == _cpu_by_step(night, 4.0)
    assert _cpu_by_step(morning, None) != _cpu_by_step(night, None)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["simulate", "--local-end-hour", "nan"],
            "local hour nan must be a finite number of hours",
        ),
        (["demo", "--quiet-s", "99999"], "--quiet-s 99999.0 leaves no time for incidents"),
    ],
)
def test_a_simulation_the_arguments_cannot_make_is_a_clear_error_before_anything_starts(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"foresight {argv[0]}: {says}"


# -- workflows ------------------------------------------------------------------------------


def test_workflows_are_reproducible_fit_the_schema_and_carry_their_truth() -> None:
    scenario = simulation.WorkflowScenario(workflows=600, seed=3)
    world = simulation.WorkflowWorld(scenario)
    events = list(world.events())
    assert events == list(simulation.WorkflowWorld(scenario).events())
    codec = Codec()
    by_workflow: dict[str, list[Record]] = defaultdict(list)
    for topic, key, record in events:
        assert topic == AGENT_EVENTS.name and key == record["agent"]
        assert codec.decode(codec.encode("agent_event", record))[1] == record
        by_workflow[record["workflow_id"]].append(record)
    times = [r["event_time"] for _, _, r in events]
    assert times == sorted(times)
    assert set(by_workflow) == set(world.truth)
    patterns: dict[simulation.WorkflowPattern | None, int] = defaultdict(int)
    for workflow, records in by_workflow.items():
        truth = world.truth[workflow]
        roots = [r for r in records if r["parent_task_id"] is None]
        assert [r["phase"] for r in roots] == ["STARTED", "FAILED" if truth.failed else "SUCCEEDED"]
        assert {r["task_type"] for r in roots} == {truth.kind}
        steps = {r["step"]: r["task_type"] for r in records if r["parent_task_id"] is not None}
        assert tuple(steps[s] for s in sorted(steps)) == truth.path
        errors = {r["error_class"] for r in records if r["parent_task_id"] is not None}
        assert (simulation.PRECURSOR_ERROR in errors) == (
            truth.pattern is simulation.WorkflowPattern.PRECURSOR
        )
        patterns[truth.pattern] += 1
        gaps = np.diff([r["event_time"] for r in records])
        stalled = truth.pattern is simulation.WorkflowPattern.STALL
        assert (gaps.max() >= 2_400_000) == stalled
    assert patterns[None] > 500
    assert all(patterns[p] > 0 for p in simulation.WorkflowPattern)


def test_a_release_without_lint_fails_more_often() -> None:
    world = simulation.WorkflowWorld(simulation.WorkflowScenario(workflows=3000, seed=1))
    plain = [t for t in world.truth.values() if t.kind == "release" and t.pattern is None]
    with_lint = [t.failed for t in plain if "lint" in t.path]
    without = [t.failed for t in plain if "lint" not in t.path]
    assert np.mean(with_lint) < 0.1 < 0.13 < np.mean(without)


def _played_workflows(rate: float, seed: int = 5) -> Simulation:
    """A small fleet without incidents that runs ``rate`` workflows a minute."""
    return Simulation(
        SimulationConfig(hosts=1, agents=2, seed=seed, incidents=(), workflows_per_min=rate)
    )


def test_the_simulation_plays_the_benchmarks_workflows_beside_the_fleets_own_tasks() -> None:
    duration_s = 3600.0
    sim = _played_workflows(10.0)
    events = list(sim.events(duration_s))
    end_ms = sim.config.start_ms + duration_s * 1000
    followed = [r for topic, _, r in events if topic == AGENT_EVENTS.name and r["workflow_id"]]
    scenario = simulation.WorkflowScenario(seed=5, per_min=10.0, start_ms=sim.config.start_ms,
                                           pool=simulation.WORKFLOW_POOL,
                                           one_agent=True)  # fmt: skip
    generated = [
        record
        for workflow in itertools.takewhile(
            lambda w: w.start_ms < end_ms, simulation.workflow_stream(scenario)
        )
        for t_ms, _, record in workflow.events
        if t_ms < end_ms
    ]
    assert sorted(followed, key=lambda r: (r["event_time"], r["task_id"], r["phase"])) == sorted(
        generated, key=lambda r: (r["event_time"], r["task_id"], r["phase"])
    )
    assert 500 < len({r["workflow_id"] for r in followed}) < 700  # 10 a minute for an hour
    times = [r["event_time"] for topic, _, r in events if topic != LABELS.name]
    assert times == sorted(times)
    assert times[-1] < end_ms
    workers: dict[str, set[str]] = defaultdict(set)  # each workflow on one agent of the pool
    for r in followed:
        workers[r["workflow_id"]].add(r["agent"])
    assert all(len(agents) == 1 for agents in workers.values())
    pool = {agent for agents in workers.values() for agent in agents}
    assert pool == {f"wf-agent-{i:02d}" for i in range(1, 9)}
    assert pool.isdisjoint(sim.agents)
    # The fleet's own tasks (and so its agent incidents) are as they were without workflows.
    alone = list(_played_workflows(0.0).events(duration_s))
    assert [e for e in events if not (e[0] == AGENT_EVENTS.name and e[2]["workflow_id"])] == alone


def test_played_workflows_are_reproducible_per_seed() -> None:
    first = list(_played_workflows(10.0).events(1800))
    assert first == list(_played_workflows(10.0).events(1800))
    other = list(_played_workflows(10.0, seed=6).events(1800))
    workflow_events = [e for e in first if e[0] == AGENT_EVENTS.name and e[2]["workflow_id"]]
    assert workflow_events != [
        e for e in other if e[0] == AGENT_EVENTS.name and e[2]["workflow_id"]
    ]
    assert list(_played_workflows(10.0).workflows(1800)) == list(
        _played_workflows(10.0).workflows(1800)
    )


def test_played_workflows_carry_every_injected_pattern_and_when_it_shows() -> None:
    workflows = list(_played_workflows(10.0).workflows(3 * 3600))
    shown: dict[simulation.WorkflowPattern | None, int] = defaultdict(int)
    kinds = {k.name: k for k in simulation.WORKFLOW_KINDS}
    for workflow in workflows:
        truth = workflow.truth
        shown[truth.pattern] += 1
        shown_ms = truth.pattern_ms
        if truth.pattern is None or shown_ms is None:
            assert truth.pattern is None and shown_ms is None
            continue
        assert workflow.start_ms < shown_ms <= workflow.end_ms
        at = [r for t, _, r in workflow.events if t == shown_ms]
        match truth.pattern:
            case simulation.WorkflowPattern.RARE_PATH:
                assert any(r["phase"] == "STARTED" and r["task_type"] not in
                           kinds[truth.kind].steps for r in at)  # fmt: skip
            case simulation.WorkflowPattern.LOOP:
                step = max(r["step"] for r in at if r["phase"] == "STARTED")
                path = truth.path
                assert step >= 6 and path[step - 6 : step - 4] == path[step - 4 : step - 2]
                assert path[step - 4 : step - 2] == path[step - 2 : step]  # three times
            case simulation.WorkflowPattern.STALL:
                started = shown_ms - 900_000
                hung = [r for t, _, r in workflow.events if t == started and r["step"]]
                assert hung and hung[0]["phase"] == "STARTED"
                ended = [r for _, _, r in workflow.events if r["task_id"] == hung[0]["task_id"]]
                assert ended[-1]["duration_ms"] >= 2_400_000
            case simulation.WorkflowPattern.PRECURSOR:
                assert [r["error_class"] for r in at] == [simulation.PRECURSOR_ERROR]
    assert shown[None] > 1500
    assert all(shown[p] >= 3 for p in simulation.WorkflowPattern)


def test_judged_workflows_start_after_the_lead_in_and_show_their_pattern_before_the_end() -> None:
    sim = _played_workflows(10.0)
    duration_s, learn_s = 3600.0, 1200.0
    start_ms, end_ms = sim.config.start_ms, sim.config.start_ms + duration_s * 1000
    judged = sim.judged_workflows(duration_s, learn_s)
    workflows = {w.workflow_id: w for w in sim.workflows(duration_s)}
    assert judged
    for workflow_id, workflow in workflows.items():
        after = workflow.start_ms >= start_ms + learn_s * 1000
        shown = workflow.truth.pattern_ms is None or workflow.truth.pattern_ms < end_ms
        assert (workflow_id in judged) == (after and shown)
        if workflow_id in judged:
            assert judged[workflow_id] == workflow.truth.pattern
    unfinished = [w for w in judged if workflows[w].end_ms >= end_ms]
    assert unfinished  # workflows still running at the end are judged on what they showed


def test_a_negative_workflow_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="workflows_per_min=-1"):
        SimulationConfig(workflows_per_min=-1)
    assert list(Simulation().workflows(3600)) == []
