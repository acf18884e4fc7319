"""The A/B split by entity hash: deterministic, in proportion, and stable when a share moves;
the registry keeps it, and the stream scores each entity with its arm's version only."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.base import FloatArray
from models.entity import BatchModel, EntityPipeline, ModelSet, PipelineConfig, step_many
from models.explain import Driver
from models.registry import ModelRegistry, RegistryError
from models.traffic import TrafficSplit, entity_slot, serving
from schemas.codec import Codec
from schemas.predictions import prediction_rows
from tests.models.test_registry import _register

ENTITIES = [f"host-{i:05d}" for i in range(20_000)]


def _assigned(split: TrafficSplit, production: str = "1") -> list[str]:
    arms = split.arms(production)
    return [serving(arms, entity) for entity in ENTITIES]


def test_an_entity_s_arm_is_the_same_in_every_process() -> None:
    here = [entity_slot(e) for e in ENTITIES[:5]]
    script = (
        "from models.traffic import entity_slot; "
        "print([entity_slot(f'host-{i:05d}') for i in range(5)])"
    )
    there = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2], env={"PYTHONHASHSEED": "123"},
    ).stdout  # fmt: skip
    assert there.strip() == str(here)
    assert _assigned(TrafficSplit({"2": 20.0})) == _assigned(TrafficSplit({"2": 20.0}))


def test_arms_get_their_shares_of_many_entities() -> None:
    counts = Counter(_assigned(TrafficSplit({"2": 20.0, "3": 5.0})))
    n = len(ENTITIES)
    # Binomial standard deviations at 20,000 entities: 0.28 points at 20%, 0.15 at 5%.
    assert counts["2"] / n == pytest.approx(0.20, abs=0.012)
    assert counts["3"] / n == pytest.approx(0.05, abs=0.007)
    assert counts["1"] / n == pytest.approx(0.75, abs=0.012)
    assert set(counts) == {"1", "2", "3"}


def test_moving_the_newest_share_moves_only_the_entities_between_its_edges() -> None:
    before = _assigned(TrafficSplit({"2": 10.0, "3": 10.0}))
    after = _assigned(TrafficSplit({"2": 10.0, "3": 25.0}))
    moved = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
    assert set(moved) == {("1", "3")}  # from production to version 3, nothing else
    assert moved["1", "3"] / len(ENTITIES) == pytest.approx(0.15, abs=0.012)
    back = _assigned(TrafficSplit({"2": 10.0, "3": 5.0}))
    returned = {(b, a) for b, a in zip(before, back, strict=True) if b != a}
    assert returned == {("3", "1")}


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        (["2=120"], "at most 100"),
        (["2=0"], "above 0"),
        (["2=60", "3=50"], "110% of the entities in all"),
        (["two=5"], "not a version number"),
        (["2:20"], "not VERSION=PERCENT"),
        (["2=lots"], "not VERSION=PERCENT"),
    ],
)
def test_a_bad_split_is_refused_with_its_reason(items: list[str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        TrafficSplit.parse(items)


def test_the_registry_keeps_the_split_and_says_what_changed(tmp_path: Path) -> None:
    registry = ModelRegistry(str(tmp_path))
    first, second, third = (_register(registry, seed) for seed in range(3))
    registry.promote("failure_risk", first)
    updates = registry.set_split("failure_risk", TrafficSplit({second: 20.0, third: 5.0}))
    assert [(u["action"], u["version"], u["metrics"]) for u in updates] == [
        ("SPLIT", second, {"traffic_percent": 20.0}),
        ("SPLIT", third, {"traffic_percent": 5.0}),
    ]
    for update in updates:
        Codec().encode("model_update", update)  # valid ModelUpdate records
    assert registry.split("failure_risk").shares == {second: 20.0, third: 5.0}
    changed = registry.set_split("failure_risk", TrafficSplit({second: 30.0, third: 5.0}))
    assert [(u["version"], u["metrics"]["traffic_percent"]) for u in changed] == [(second, 30.0)]
    registry.promote("failure_risk", second)  # production serves the rest
    assert registry.split("failure_risk").shares == {third: 5.0}
    ended = registry.set_split("failure_risk", TrafficSplit({}))
    assert [(u["version"], u["metrics"]["traffic_percent"]) for u in ended] == [(third, 0.0)]
    with pytest.raises(RegistryError, match="only candidates take a share"):
        registry.set_split("failure_risk", TrafficSplit({second: 10.0}))


def _constant(version: str, risk: float, **fields: Any) -> BatchModel:
    def explain(vectors: Sequence[dict[str, Any]]) -> tuple[FloatArray, list[list[Driver]]]:
        return np.full(len(vectors), risk), [[] for _ in vectors]

    return replace(BatchModel("failure_risk", version, 1800, explain), **fields)


def test_each_entity_is_scored_by_its_arm_s_version_alone() -> None:
    models = ModelSet(PipelineConfig())
    pipelines = [EntityPipeline(f"web-{i}", models) for i in range(200)]
    for p in pipelines:
        p.add(600_000, ["cpu_percent"], np.array([10.0]))
    arms = TrafficSplit({"2": 30.0}).arms("1")
    served = [_constant(v, risk, arm=arms[v]) for v, risk in (("1", 0.1), ("2", 0.9))]
    shadow = _constant("3", 0.5, shadow=True)
    results = step_many(pipelines, [600_000] * len(pipelines), [*served, shadow])
    for p, (_, batch, _) in zip(pipelines, results, strict=True):
        risks = {
            r["model_version"]: r["score"]
            for r in prediction_rows(batch)
            if r["kind"] == "FAILURE_RISK" and r["model"] == "failure_risk"
        }
        expected = serving(arms, p.entity)
        assert risks == {expected: 0.1 if expected == "1" else 0.9, "3": 0.5}
    assert 30 < sum(serving(arms, p.entity) == "2" for p in pipelines) < 90
