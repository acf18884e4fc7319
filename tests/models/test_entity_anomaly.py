"""The entity anomaly score: it sees a break in how metrics move together that no metric
shows alone, stays calm when they move together as they always have, leaves out a metric
that never moved, and its state round-trips with the entity's."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.alerts import anomaly_rule
from models.entity import EntityPipeline, ModelSet, PipelineConfig, _pack, _unpack
from models.entity_anomaly import EntityAnomalyDetector
from models.explain import ENTITY_METRIC
from schemas.predictions import PredictionColumns

T0 = 1_700_000_000_000
NAMES = ["cpu_percent", "network_mbps", "request_latency_ms", "queue_depth"]
WARMUP = 120


def _host(steps: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Four metrics driven by one load (a slow cycle and a wander), each with its own noise."""
    rng = np.random.default_rng(seed)
    k = np.arange(steps)
    wander = np.cumsum(rng.normal(0, 0.02, steps))
    load = 0.5 + 0.3 * np.sin(2 * np.pi * k / 720) + 0.1 * np.tanh(wander)
    gains = np.array([60.0, 300.0, 40.0, 12.0])
    noise = rng.normal(0, 1, (steps, 4)) * np.array([2.0, 10.0, 2.0, 1.0])
    values: npt.NDArray[np.float64] = 10 + load[:, None] * gains + noise
    return values


def _scores(detector: EntityAnomalyDetector, values: npt.NDArray[np.float64]) -> list[float]:
    state, entity = detector.init_state(values.shape[1]), detector.init_entity_state(1)
    starts = np.array([0, values.shape[1]])
    return [float(detector.score_learn(state, entity, v, starts).scores[0]) for v in values]


def test_a_correlation_break_no_single_metric_shows_is_caught() -> None:
    values = _host(3000)
    before = values[:2400]
    broken = values.copy()
    # From step 2400, CPU keeps following the load while traffic falls as CPU rises: each
    # metric stays inside the range it has already shown.
    network = broken[2400:2600, 1]
    broken[2400:2600, 1] = network.mean() - (network - network.mean())
    assert (broken[2400:2600] >= before.min(axis=0)).all()
    assert (broken[2400:2600] <= before.max(axis=0)).all()
    scores = _scores(EntityAnomalyDetector(warmup=WARMUP), broken)
    threshold = anomaly_rule().threshold
    assert max(scores[2400:2600]) >= threshold
    assert max(scores[WARMUP:2400]) < threshold


def test_correlated_normal_movement_stays_calm() -> None:
    values = _host(3000, seed=1)
    # A day twice as busy as any seen: every metric rises far past its range, together.
    values[2000:2400] = 10 + (values[2000:2400] - 10) * np.linspace(1, 2, 400)[:, None]
    scores = _scores(EntityAnomalyDetector(warmup=WARMUP), values)
    assert max(scores[WARMUP:]) < anomaly_rule().threshold


def test_a_metric_that_never_moved_takes_no_part() -> None:
    """A constant metric (an idle device, a counter at zero) says nothing about how the
    metrics move together: the entity's scores are those of the host without it, until it
    moves."""
    values = _host(1500, seed=4)
    idle = np.column_stack([values, np.zeros(len(values)), np.full(len(values), 16.0)])
    plain = _scores(EntityAnomalyDetector(warmup=WARMUP), values)
    assert _scores(EntityAnomalyDetector(warmup=WARMUP), idle) == plain


def test_a_host_of_two_metrics_shrugs_off_a_count_that_steps_once() -> None:
    """With as many metrics as principal directions, the directions would take every
    metric's movement and leave no residual to measure a newcomer against: a process count
    stepping by one for good read as a break for over an hour. The directions stop one short
    of the metrics present."""
    cpu = _host(3000, seed=5)[:, 0]
    processes = np.where(np.arange(3000) < 1500, 200.0, 201.0)
    scores = _scores(EntityAnomalyDetector(warmup=WARMUP), np.column_stack([cpu, processes]))
    assert max(scores[WARMUP:]) < anomaly_rule().threshold


def test_a_host_of_two_metrics_still_shows_them_breaking_apart() -> None:
    values = _host(3000, seed=6)[:, :2]
    network = values[2400:2600, 1]
    values[2400:2600, 1] = network.mean() - (network - network.mean())
    scores = _scores(EntityAnomalyDetector(warmup=WARMUP), values)
    threshold = anomaly_rule().threshold
    assert max(scores[2400:2600]) >= threshold
    assert max(scores[WARMUP:2400]) < threshold


def test_z_scores_past_soft_z_grow_logarithmically() -> None:
    detector = EntityAnomalyDetector(soft_z=3.0)
    z = np.array([-1000.0, -4.0, -3.0, 0.5, 3.0, 4.0, 1000.0])
    softened = detector._soften(z)
    np.testing.assert_allclose(softened[2:5], z[2:5])  # within soft_z: as they are
    np.testing.assert_allclose(softened[[0, 1, 5, 6]], [-3 - np.log(998), -3 - np.log(2),
                               3 + np.log(2), 3 + np.log(998)])  # fmt: skip


def test_contributions_name_the_metric_that_broke_away() -> None:
    values = _host(2600, seed=2)
    values[2400:, 2] -= 25.0  # latency falls while load says it should not
    detector = EntityAnomalyDetector(warmup=WARMUP)
    state, entity = detector.init_state(4), detector.init_entity_state(1)
    for v in values:
        step = detector.score_learn(state, entity, v, np.array([0, 4]))
    assert step.scores[0] >= anomaly_rule().threshold
    np.testing.assert_allclose(step.contributions.sum(), step.scores[0])
    assert step.top(0, 4)[0][0] == 2


def _feed(pipeline: EntityPipeline, values: npt.NDArray[np.float64], first: int) -> None:
    for k, v in enumerate(values, start=first):
        pipeline.add(T0 + k * 10_000, NAMES, v)


def _entity_score(record: dict[str, object]) -> float:
    columns = PredictionColumns.of(record)
    return columns.worst("ANOMALY", metric=ENTITY_METRIC)[0]


def _stepped(models: ModelSet, values: npt.NDArray[np.float64]) -> EntityPipeline:
    """An entity stepped through ``values``, one step per row."""
    pipeline = EntityPipeline("web-1", models)
    for k, v in enumerate(values):
        pipeline.add(T0 + k * 10_000, NAMES, v)
        pipeline.step(T0 + k * 10_000)
    return pipeline


def test_state_round_trips_with_the_entity() -> None:
    models = ModelSet(PipelineConfig())
    values = _host(400, seed=3)
    original = _stepped(models, values[:300])
    restored = EntityPipeline.restore(models, original.windows_bytes(), original.models_bytes())
    for k, v in enumerate(values[300:], start=300):
        now = T0 + k * 10_000
        for p in (original, restored):
            p.add(now, NAMES, v)
        _, mine, _ = original.step(now)
        _, theirs, _ = restored.step(now)
        assert _entity_score(theirs) == _entity_score(mine)
    assert _entity_score(mine) > 0.0, "a restored entity scores, it does not start afresh"


def test_a_state_saved_in_an_older_layout_starts_the_score_afresh() -> None:
    """Model states saved before the entity score kept its metrics' last values and
    resolution (two columns fewer) restore: the per-metric models resume, the entity score
    learns again."""
    models = ModelSet(PipelineConfig())
    original = _stepped(models, _host(300, seed=3))
    header, arrays = _unpack(original.models_bytes())
    older = _pack(header, [*arrays[:3], arrays[3][:, :-2], arrays[4]])
    restored = EntityPipeline.restore(models, original.windows_bytes(), older)
    rows = models.states.parts["entity_anomaly"][restored.rows]
    assert not rows.any(), "the entity score starts afresh"
    np.testing.assert_array_equal(
        models.states.parts["anomaly"][restored.rows], models.states.parts["anomaly"][original.rows]
    )


def test_the_anomaly_rule_reads_the_entity_score_alone() -> None:
    columns = PredictionColumns()
    columns.add("ANOMALY", ("per_metric", "1"), ["cpu", "mem"], [0, 0], [1.0, 2.0], [1.0, 1.0])
    columns.add("ANOMALY", ("entity", "1"), [ENTITY_METRIC], [0], [0.2], [0.2])
    rule = anomaly_rule(0.5)
    assert columns.worst(rule.kind, rule.min_metrics, rule.metric) == (0.2, ENTITY_METRIC)
