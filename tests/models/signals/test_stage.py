"""When a scrape is complete: a later batch, or the step; pieces of a scrape that arrive
apart; and an entity's checkpoint carrying the stage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.entity import EntityPipeline, ModelSet, PipelineConfig
from models.signals import MetricKind, SignalRules, SignalStage, StageOutput
from models.signals.rules import SHIPPED, parse_profile, shipped_profile

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


PLAIN = [
    ("memory_percent", G), ("disk_used_percent", G), ("cpu_percent", G),
    ("queue_depth", MetricKind.UNKNOWN), ('http_inflight{path="/a"}', G),
    ("requests_total", MetricKind.COUNTER), ('errors_total{code="500"}', MetricKind.UNKNOWN),
]  # fmt: skip
EXTRA = {
    "derived": [("process_open_fds", G), ("process_max_fds", G)],
    "histogram": [
        ('latency_seconds_bucket{le="0.1"}', MetricKind.HISTOGRAM),
        ('latency_seconds_bucket{le="+Inf"}', MetricKind.HISTOGRAM),
        ("latency_seconds_count", MetricKind.HISTOGRAM),
    ],
    "one_name": [('a{x="1"}', G), ('a{x="2"}', G)],  # one signal under the test's own rules
}


def _fuzzed_batches(
    seed: int, extra: list[tuple[str, MetricKind]]
) -> list[tuple[int, list[str], list[float], list[MetricKind]]]:
    """Scrapes of a changing set of series, gaps past the lookback and pieces older than it
    included: first gauges and counters only, then ``extra`` series too."""
    rng = np.random.default_rng(seed)
    t, batches = T0, []
    for k in range(300):
        t += int(rng.choice([0, 1000, 10_000, 400_000], p=[0.1, 0.6, 0.28, 0.02]))
        pool = PLAIN if k < 150 else PLAIN + extra
        chosen = [pool[i] for i in rng.choice(len(pool), int(rng.integers(1, 7)), replace=False)]
        if rng.random() < 0.5:  # mostly the same few series, as real scrapes are
            chosen = pool[:5]
        values = rng.uniform(0, 100, len(chosen)).round(1).tolist()
        late = 400_000 if rng.random() < 0.05 else 0  # a piece of a scrape long past
        batches.append((t - late, [n for n, _ in chosen], values, [k for _, k in chosen]))
    return batches


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("extra", sorted(EXTRA))
def test_the_passthrough_plan_gives_what_the_full_evaluation_gives(
    seed: int, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One's own profile makes two series one signal name: then the plan stands aside.
    mine = parse_profile(
        {
            "name": "mine",
            "match": '{__name__="a"}',
            "relabel": [{"action": "labeldrop", "regex": "x"}],
        },
        "test",
    )
    rules = SignalRules([mine, *(shipped_profile(name) for name in SHIPPED)])
    fast, full = SignalStage(rules), SignalStage(rules)
    monkeypatch.setattr(full, "_passthrough", lambda: None)

    def signals(out: StageOutput) -> list[tuple[int, list[str], list[float], str, list[Any]]]:
        return [
            (s.t_ms, s.names, s.values.tolist(), repr(s.capacities.tolist()), s.origins + s.errors)
            for s in out.signals
        ]

    planned = 0
    for t, names, values, kinds in _fuzzed_batches(seed, EXTRA[extra]):
        outs = [stage.observe(t, names, np.array(values), kinds) for stage in (fast, full)]
        assert signals(outs[0]) == signals(outs[1])
        if fast._plan is not None and fast._plan[1] is not None:
            planned += 1
        if t % 3 == 0:
            assert signals(fast.close()) == signals(full.close())
    assert planned > 100, "the plan was hardly ever used"
