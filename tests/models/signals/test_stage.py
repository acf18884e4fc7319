"""When a scrape is complete: a later batch, or the step; pieces of a scrape that arrive
apart; and an entity's checkpoint carrying the stage."""

from __future__ import annotations

import numpy as np

from models.entity import EntityPipeline, ModelSet, PipelineConfig
from models.signals import MetricKind, SignalRules, SignalStage

T0 = 1_700_000_000_000
G = MetricKind.GAUGE


def _observe(
    stage: SignalStage, t_ms: int, samples: dict[str, float]
) -> list[tuple[int, dict[str, float]]]:
    out = stage.observe(t_ms, list(samples), np.array(list(samples.values())), [G] * len(samples))
    return [(s.t_ms, dict(zip(s.names, s.values.tolist(), strict=True))) for s in out.signals]


def _closed(stage: SignalStage) -> list[tuple[int, dict[str, float]]]:
    return [
        (s.t_ms, dict(zip(s.names, s.values.tolist(), strict=True))) for s in stage.close().signals
    ]


def test_a_scrape_is_evaluated_once_complete() -> None:
    stage = SignalStage(SignalRules.shipped())
    assert _observe(stage, T0, {"memory_percent": 40.0}) == []
    assert _observe(stage, T0, {"disk_used_percent": 70.0}) == []  # same scrape, another piece
    assert _observe(stage, T0 + 10_000, {"memory_percent": 41.0}) == [
        (T0, {"memory_percent": 40.0, "disk_used_percent": 70.0})
    ]
    assert _closed(stage) == [(T0 + 10_000, {"memory_percent": 41.0})]
    assert _closed(stage) == []  # nothing open


def test_a_piece_of_a_closed_scrape_joins_the_next_and_no_time_repeats() -> None:
    stage = SignalStage(SignalRules.shipped())
    _observe(stage, T0, {"memory_percent": 40.0})
    assert _closed(stage) == [(T0, {"memory_percent": 40.0})]
    # The rest of scrape T0 comes after it was closed (another shard's request).
    assert _observe(stage, T0, {"disk_used_percent": 70.0}) == []
    assert _closed(stage) == []  # T0 is not evaluated twice
    _observe(stage, T0 + 10_000, {"memory_percent": 41.0})
    assert _closed(stage) == [(T0 + 10_000, {"memory_percent": 41.0, "disk_used_percent": 70.0})]


def test_an_entity_checkpoint_carries_its_open_scrape_and_previous_samples() -> None:
    models = ModelSet(PipelineConfig())
    original = EntityPipeline("web-1", models)
    names = ["requests_total", "memory_percent"]
    original.observe(T0, names, np.array([100.0, 40.0]), [MetricKind.COUNTER, G])
    original.close_scrape()
    original.observe(T0 + 10_000, names, np.array([150.0, 41.0]), [MetricKind.COUNTER, G])
    restored = EntityPipeline.restore(models, original.windows_bytes())
    closed = [p.close_scrape().signals[0] for p in (original, restored)]
    assert [(s.t_ms, s.names, s.values.tolist()) for s in closed] == [
        (T0 + 10_000, ["memory_percent", "requests_total"], [41.0, 5.0])
    ] * 2
