"""The model registry: round trip, stages, integrity, and no pickle anywhere."""

from __future__ import annotations

import doctest
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

from models import registry as registry_module
from models.drift import FeatureReference
from models.promotion import promotion_test
from models.registry import (
    Decision,
    IntegrityError,
    ModelRegistry,
    RegistryError,
    npy_bytes,
    read_npy,
)
from models.training import SCORING_THREADS, FailureRiskModel, TrainingConfig
from schemas.codec import Codec

FEATURES = ["memory_percent:5m:slope", "memory_percent:1m:last"]


def _trained(seed: int = 0) -> tuple[FailureRiskModel, FeatureReference, dict[str, object]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, 2))
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int8)
    model = FailureRiskModel.fit(x, y, FEATURES, 1800.0, TrainingConfig(rounds=10))
    report = {"params": {"rounds": 10}, "rows": 500, "prevalence": float(y.mean()),
              "cv": {"mean": {"model": {"auc_pr": 0.9, "roc_auc": None}}}}  # fmt: skip
    return model, FeatureReference.fit(x), report


def _register(registry: ModelRegistry, seed: int = 0, parent: str | None = None) -> str:
    model, reference, report = _trained(seed)
    update = registry.register_model(
        model, reference, report, since_ms=0, until_ms=86_400_000, parent=parent
    )
    return str(update["version"])


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(f"file://{tmp_path}/models")


def test_round_trip_scores_the_same_and_records_metadata(registry: ModelRegistry) -> None:
    model, reference, report = _trained()
    update = registry.register_model(
        model, reference, report, since_ms=0, until_ms=3_600_000, parent=None, now_ms=1000
    )
    assert update["action"] == "REGISTERED" and update["stage"] == "candidate"
    Codec().encode("model_update", update)  # a valid ModelUpdate record
    loaded = registry.load("failure_risk", update["version"])
    vectors = [{"names": FEATURES, "values": [0.5, 1.5]}, {"names": FEATURES[:1], "values": [2.0]}]
    np.testing.assert_array_equal(loaded.score(vectors), model.score(vectors))
    meta = loaded.version
    assert (meta.version, meta.stage, meta.parent) == ("1", "candidate", None)
    assert meta.features == FEATURES and meta.since == "1970-01-01T00:00:00Z"
    assert set(meta.artifacts) == {"booster.ubj", "feature_reference.npy", "report.json"}
    assert all(len(digest) == 64 for digest in meta.artifacts.values())
    assert meta.metrics == {"rows": 500.0, "prevalence": pytest.approx(report["prevalence"]),
                            "cv_auc_pr": 0.9}  # fmt: skip
    assert update["content_hash"] == meta.content_hash == meta.computed_hash()
    assert update["feature_hash"] == meta.feature_hash
    assert loaded.reference is not None
    np.testing.assert_array_equal(loaded.reference.edges, reference.edges)
    assert json.loads(loaded.extra["report.json"]) == report
    assert update["uri"].startswith("file://") and update["uri"].endswith("/failure_risk/1")


def test_a_loaded_model_scores_on_one_thread(registry: ModelRegistry) -> None:
    """The booster file keeps no thread count: read back, a model would score on every core."""
    version = _register(registry)
    booster = registry.load("failure_risk", version).model.booster
    threads = json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]
    assert int(threads) == SCORING_THREADS == 1


def test_promote_keeps_one_production_version_and_rollback_goes_back(
    registry: ModelRegistry,
) -> None:
    for seed in range(3):
        _register(registry, seed)
    assert registry.load_production("failure_risk") is None
    assert [u["action"] for u in registry.promote("failure_risk", "1")] == ["PROMOTED"]
    updates = registry.promote("failure_risk", "2")
    assert [(u["action"], u["version"], u["stage"]) for u in updates] == [
        ("ARCHIVED", "1", "archived"),
        ("PROMOTED", "2", "production"),
    ]
    registry.promote("failure_risk", "3")
    stages = {v.version: v.stage for v in registry.versions("failure_risk")}
    assert stages == {"1": "archived", "2": "archived", "3": "production"}
    loaded = registry.load_production("failure_risk")
    assert loaded is not None and loaded.version.version == "3"

    updates = registry.rollback("failure_risk")
    assert [(u["action"], u["version"], u["stage"]) for u in updates] == [
        ("ARCHIVED", "3", "archived"),
        ("ROLLED_BACK", "2", "production"),
    ]
    registry.rollback("failure_risk")
    stages = {v.version: v.stage for v in registry.versions("failure_risk")}
    assert stages == {"1": "production", "2": "archived", "3": "archived"}
    with pytest.raises(RegistryError, match="no earlier production version"):
        registry.rollback("failure_risk")
    with pytest.raises(RegistryError, match="already in production"):
        registry.promote("failure_risk", "1")
    with pytest.raises(RegistryError, match=r"no version '9' \(versions: 1, 2, 3\)"):
        registry.promote("failure_risk", "9")
    with pytest.raises(RegistryError, match="no model 'nope'"):
        registry.show("nope")
    for update in updates:
        Codec().encode("model_update", update)


def test_a_corrupted_artifact_refuses_to_load_or_be_promoted(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    version = _register(registry)
    booster = tmp_path / "models" / "failure_risk" / version / "booster.ubj"
    data = bytearray(booster.read_bytes())
    data[len(data) // 2] ^= 0xFF
    booster.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"booster\.ubj .* corrupted or was tampered with"):
        registry.load("failure_risk", version)
    with pytest.raises(IntegrityError):
        registry.promote("failure_risk", version)
    booster.unlink()
    with pytest.raises(IntegrityError, match="missing or unreadable"):
        registry.load("failure_risk", version)


def test_tampered_metadata_refuses_to_load(registry: ModelRegistry, tmp_path: Path) -> None:
    version = _register(registry)
    folder = tmp_path / "models" / "failure_risk" / version
    metadata_file = folder / "metadata.json"
    original = metadata_file.read_text()

    metadata = json.loads(original)
    metadata["features"] = list(reversed(metadata["features"]))
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(IntegrityError, match="changed after registration"):
        registry.load("failure_risk", version)

    # A swapped booster with its hash "fixed" in the metadata (and the metadata's own hash
    # recomputed) still differs from the hash the index recorded at registration.
    other, _, _ = _trained(seed=7)
    (folder / "booster.ubj").write_bytes(other.booster_bytes())
    metadata = json.loads(original)
    metadata["artifacts"]["booster.ubj"] = registry_module._sha256(other.booster_bytes())
    forged = registry_module.ModelVersion(**metadata)
    metadata["content_hash"] = forged.computed_hash()
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(IntegrityError, match="changed after registration"):
        registry.load("failure_risk", version)

    metadata_file.write_text("{not json")
    with pytest.raises(IntegrityError, match="unreadable"):
        registry.show("failure_risk", version)


def test_nothing_is_pickled(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="pickle"):
        registry.register("x", {"model.pkl": b"\x80\x04."}, kind="k", features=[], since_ms=0,
                          until_ms=1)  # fmt: skip
    with pytest.raises(ValueError, match="pickle"):
        npy_bytes(np.array([{"a": 1}], dtype=object))
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        read_npy(pickled.getvalue())
    source = Path(registry_module.__file__).read_text()
    assert "import pickle" not in source and "allow_pickle=True" not in source


def test_relative_file_urls_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry("file://.stack/models")
    version = _register(registry)
    assert (tmp_path / ".stack/models/failure_risk" / version / "metadata.json").is_file()
    assert ModelRegistry(str(tmp_path / ".stack/models")).models() == ["failure_risk"]


def test_parent_is_recorded(registry: ModelRegistry) -> None:
    first = _register(registry)
    second = _register(registry, seed=1, parent=first)
    assert registry.show("failure_risk", second).parent == "1"
    assert registry.show("failure_risk").version == "2"  # no production: the newest


@pytest.mark.skipif(importlib.util.find_spec("fsspec") is not None, reason="fsspec installed")
def test_other_urls_need_fsspec_and_say_so() -> None:
    with pytest.raises(RegistryError, match="pip install fsspec"):
        ModelRegistry("s3://bucket/models")


def test_module_examples_run() -> None:
    assert doctest.testmod(registry_module).failed == 0


def _decision(promote: bool) -> Decision:
    test = promotion_test(
        [1, 0] * 40, [0.5] * 80, [0.9, 0.1] * 40 if promote else [0.5] * 80, entities=["a"] * 80
    )
    assert test.promote == promote
    return Decision(test.as_dict(), test.metrics())


def test_a_tested_promotion_keeps_its_test_and_announces_its_numbers(
    registry: ModelRegistry,
) -> None:
    registry.promote("failure_risk", _register(registry, 0))
    candidate = _register(registry, 1, parent="1")
    updates = registry.promote("failure_risk", candidate, decision=_decision(True))
    assert [u["action"] for u in updates] == ["ARCHIVED", "PROMOTED"]
    promoted = updates[-1]
    Codec().encode("model_update", promoted)
    assert promoted["metrics"]["promotion_promoted"] == 1.0
    assert promoted["metrics"]["promotion_p_value"] < 0.05
    assert promoted["metrics"]["promotion_steps"] == 80.0
    assert "cv_auc_pr" in promoted["metrics"]  # the registration metrics stay
    version = registry.show("failure_risk", candidate)
    assert version.stage == "production"
    assert version.decision["test"] == "paired_bootstrap_brier" and version.decision["promote"]
    assert version.decision["at"]
    assert registry.show("failure_risk", "1").decision == {}  # promoted by hand, untested


def test_a_refused_candidate_is_archived_with_its_test(registry: ModelRegistry) -> None:
    registry.promote("failure_risk", _register(registry, 0))
    candidate = _register(registry, 1, parent="1")
    (update,) = registry.refuse("failure_risk", candidate, _decision(False))
    Codec().encode("model_update", update)
    assert (update["action"], update["stage"]) == ("ARCHIVED", "archived")
    assert update["metrics"]["promotion_promoted"] == 0.0
    assert update["metrics"]["promotion_p_value"] == 1.0
    refused = registry.show("failure_risk", candidate)
    assert refused.stage == "archived" and refused.decision["promote"] is False
    assert registry.production("failure_risk").version == "1"  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="only a candidate can be refused"):
        registry.refuse("failure_risk", "1", _decision(False))
