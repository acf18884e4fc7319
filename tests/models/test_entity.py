"""The per-entity step: one vectorised pass equals entity by entity; state round-trips;
incidents are warned of before they fail and healthy hosts stay quiet."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from models import entity
from models.base import as_float64
from models.entity import EntityPipeline, ModelSet, PipelineConfig, _pack, _unpack, step_many
from models.incident_report import Incident, match_alerts
from models.signals import MetricKind
from schemas.codec import Codec
from streams.simulation import Simulation, SimulationConfig

T0 = 1_700_000_000_000
NAMES = ["cpu_percent", "memory_percent", "disk_used_percent", "request_latency_ms"]
CAPACITIES = np.array([np.nan, 100.0, 100.0, np.nan])  # as the simulator profile marks them


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet(PipelineConfig())


def _feed(pipelines: list[EntityPipeline], steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k in range(steps):
        for i, p in enumerate(pipelines):
            p.add(T0 + k * 10_000 + i, NAMES, 40 + rng.normal(size=len(NAMES)), CAPACITIES)


def _encoded(steps: list[tuple[Any, Any, list[Any]]]) -> list[bytes]:
    """Steps as the bytes they go out as (NaN, an interval's absence, compares equal)."""
    codec = Codec()
    return [
        b
        for features, predictions, alerts in steps
        for b in (
            codec.encode("feature_vector", features),
            codec.encode("prediction_batch", predictions),
            *(codec.encode("alert", a) for a in alerts),
        )
    ]


def test_a_vectorised_step_equals_entity_by_entity(models: ModelSet) -> None:
    together = [EntityPipeline(f"h{i}", models) for i in range(4)]
    alone = [EntityPipeline(f"h{i}", models) for i in range(4)]
    for k in range(80):
        rng = np.random.default_rng(k)
        values = 40 + rng.normal(size=(4, len(NAMES)))
        now = [T0 + k * 10_000 + i for i in range(4)]
        for i in range(4):
            together[i].add(now[i], NAMES, values[i], CAPACITIES)
            alone[i].add(now[i], NAMES, values[i], CAPACITIES)
        batch = step_many(together, now)
        single = [p.step(now[i]) for i, p in enumerate(alone)]
        assert _encoded(batch) == _encoded(single)


def test_a_step_too_large_for_one_pass_goes_in_parts_with_the_same_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More series than ``STEP_SERIES`` step a few entities at a time (7 entities of 4
    series in parts of at most 10: 2, 2, 2 and 1 entities), as one call would."""
    whole, parts = ModelSet(PipelineConfig()), ModelSet(PipelineConfig())
    at_once = [EntityPipeline(f"h{i}", whole) for i in range(7)]
    in_parts = [EntityPipeline(f"h{i}", parts) for i in range(7)]
    for k in range(40):
        values = 40 + np.random.default_rng(k).normal(size=(7, len(NAMES)))
        now = [T0 + k * 10_000] * 7
        for i in range(7):
            at_once[i].add(now[i], NAMES, values[i], CAPACITIES)
            in_parts[i].add(now[i], NAMES, values[i], CAPACITIES)
        one = step_many(at_once, now)
        monkeypatch.setattr(entity, "STEP_SERIES", 2 * len(NAMES) + 2)
        split = step_many(in_parts, now)
        monkeypatch.undo()
        assert _encoded(split) == _encoded(one)


def test_state_round_trips_through_bytes(models: ModelSet) -> None:
    original = EntityPipeline("web-1", models)
    _feed([original], 100)
    original.last_offset = 99
    restored = EntityPipeline.restore(models, original.windows_bytes(), original.models_bytes())
    assert restored.last_offset == 99
    now = T0 + 100 * 10_000
    for p in (original, restored):
        p.add(now, NAMES, np.full(len(NAMES), 41.0))
    assert _encoded([restored.step(now)]) == _encoded([original.step(now)])


def test_model_states_saved_as_float64_restore_rounded_into_the_float32_bulks(
    models: ModelSet,
) -> None:
    """A checkpoint from before the split rows holds every value in float64: it restores,
    the heads exactly and the bulks as float32 holds them."""
    original = EntityPipeline("web-1", models)
    _feed([original], 400)
    header, arrays = _unpack(original.models_bytes())
    older = [np.nextafter(a, np.inf) for a in arrays]  # values float32 cannot hold
    restored = EntityPipeline.restore(models, original.windows_bytes(), _pack(header, older))
    for part, saved in zip(("anomaly", "forecast"), older[:2], strict=True):
        state = models.states.parts[part]
        head = state.dtype["head"].shape[0]
        got = as_float64(state[restored.rows])
        np.testing.assert_array_equal(got[:, :head], saved[:, :head])
        np.testing.assert_array_equal(got[:, head:], as_float64(state[original.rows])[:, head:])
        assert (np.nan_to_num(got[:, head:]) != np.nan_to_num(saved[:, head:])).any()


def test_a_step_state_and_saved_alerts_of_other_rules_come_back_for_todays_rules(
    models: ModelSet,
) -> None:
    """A step taken again from its state puts back its time and alert states; a state saved
    with a rule since removed, and without one since added, restores the rules there are."""
    original = EntityPipeline("web-1", models)
    _feed([original], 30)
    original.step(T0 + 300_000)
    (rule, *_) = original.alerts
    original.alerts[rule].run, original.alerts[rule].peak = 3, 0.75
    again = EntityPipeline("web-1", models)
    again.take_step(original.step_state())
    assert again.last_step_ms == T0 + 300_000
    assert {k: v.as_array() for k, v in again.alerts.items()} == {
        k: v.as_array() for k, v in original.alerts.items()
    }
    header, arrays = _unpack(original.windows_bytes())
    saved = dict(header["alerts"])
    header["alerts"] = {"retired_rule": [1.0, 2.0, 3.0, 4.0]} | {
        k: v for k, v in saved.items() if k != rule
    }
    restored = EntityPipeline.restore(models, _pack(header, arrays))
    assert set(restored.alerts) == set(original.alerts)
    assert restored.alerts[rule].as_array() == [0.0, 0.0, 0.0, 0.0]
    restored.add(T0 + 310_000, NAMES, np.full(len(NAMES), 41.0), CAPACITIES)
    restored.step(T0 + 310_000)  # every rule has its state to step


def test_foreign_bytes_are_refused(models: ModelSet) -> None:
    with pytest.raises(ValueError, match="bad magic"):
        EntityPipeline.restore(models, b"nope" + b"\x00" * 20)
    with pytest.raises(ValueError, match="corrupt"):
        EntityPipeline.restore(models, b"FSE2" + b"\x00" * 20)


def test_state_stays_bounded(models: ModelSet) -> None:
    pipeline = EntityPipeline("web-1", models)
    _feed([pipeline], 50)
    sizes = (pipeline.windows.buckets.nbytes, len(pipeline.rows))  # rows of model state
    _feed([pipeline], 2000, seed=1)
    assert (pipeline.windows.buckets.nbytes, len(pipeline.rows)) == sizes
    assert len(pipeline.windows_bytes()) < 20_000  # 4 metrics, compressed


def _replay(hosts: int, models: ModelSet) -> tuple[list[dict[str, Any]], Simulation]:
    """Run the simulator's hour through the pipeline as the worker does, scrape by scrape:
    through the signal stage and its simulator profile, into the windows."""
    simulation = Simulation(SimulationConfig(hosts=hosts, agents=0, seed=7))
    codec = Codec()
    pipelines: dict[str, EntityPipeline] = {}
    alerts: list[dict[str, Any]] = []
    by_time: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for topic, _, record in simulation.events(3600):
        if topic == "telemetry.metrics":
            by_time[record["event_time"]].append(
                codec.decode(codec.encode("metric_batch", record))[1]
            )
    for t, batches in sorted(by_time.items()):
        due = []
        for record in batches:
            p = pipelines.setdefault(record["entity"], EntityPipeline(record["entity"], models))
            kinds = [MetricKind(k) for k in record["kinds"]]
            p.observe(t, record["names"], np.asarray(record["values"]), kinds)
            if p.due(t):
                assert p.close_scrape().signals[0].names == record["names"]
                due.append(p)
        for _, _, step_alerts in step_many(due, [t] * len(due)):
            alerts += step_alerts
    return alerts, simulation


def test_failures_are_warned_of_early_and_healthy_hosts_stay_quiet(models: ModelSet) -> None:
    alerts, simulation = _replay(6, models)
    incidents = [
        Incident(i.entity, str(i.incident_type), i.start_ms, i.end_ms, i.failure_ms)
        for i in simulation.incidents
    ]
    report = match_alerts(incidents, alerts)
    failures = [o for o in report.outcomes if o.incident_type in ("memory_leak", "disk_fill")]
    assert len(failures) == 2
    for outcome in failures:
        assert outcome.caught, outcome
        assert outcome.lead_time_s is not None and outcome.lead_time_s >= 600, outcome
    unaffected = {f"host-0{i}" for i in range(1, 7)} - {i.entity for i in incidents}
    assert unaffected, "the default schedule leaves some hosts healthy"
    assert [a for a in alerts if a["entity"] in unaffected] == []


def test_the_risk_features_are_shares_of_capacity_within_the_failure_horizon(
    models: ModelSet,
) -> None:
    """A memory leak of 1 % a minute uses half the capacity in a 30-minute horizon; a slow
    drift of 0.5 % an hour, almost none, however well its line fits."""
    assert models.config.failure_horizon_s == 1800
    rng = np.random.default_rng(3)
    leak, drift = EntityPipeline("leak", models), EntityPipeline("drift", models)
    for k in range(121):  # 20 minutes of 10-second scrapes
        t = T0 + k * 10_000
        minutes = k / 6
        for p, memory in ((leak, 40 + minutes), (drift, 40 + minutes / 120)):
            values = np.array([30.0, memory + rng.normal(0, 0.01), 50.0, 20.0])
            p.add(t, NAMES, values, CAPACITIES)
    step_many([leak, drift], [T0 + 120 * 10_000] * 2)
    assert leak.risk_features is not None and drift.risk_features is not None
    used, in_5m, in_15m, fit = leak.risk_features
    assert used == pytest.approx(0.6, abs=0.01)
    assert in_5m == pytest.approx(0.3, abs=0.02)  # 1 % a minute, 30 minutes, of 100 %
    assert in_15m == pytest.approx(0.3, abs=0.02)
    assert fit > 0.99
    used, in_5m, in_15m, fit = drift.risk_features
    assert abs(in_15m) < 0.005 and used == pytest.approx(0.4, abs=0.01)
