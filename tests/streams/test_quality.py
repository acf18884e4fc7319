"""The quality processor's rules in memory: snapshots in, forecasts, alerts and dead letters
out, and a restart that rebuilds a repository from the topic without producing twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.codec import Codec, Message
from schemas.predictions import prediction_rows
from streams import topics
from streams.engine import Input, Outputs
from streams.quality import QualityProcessor
from streams.settings import Settings

CODEC = Codec()
DAY_MS = 86_400_000
T0 = 1_790_000_000_000
NOW_S = (T0 + 400 * DAY_MS) / 1000
SETTINGS = Settings(quality_max_complexity=6.0, quality_falling_commits=4)


def _snapshot(i: int, repository: str = "shop", **fields: Any) -> dict[str, Any]:
    base = {"repository": repository, "commit": f"c{i}", "event_time": T0 + i * DAY_MS,
            "files": 10, "lines": 1000 + 5 * i, "functions": 50, "mean_complexity": 3 + 0.1 * i,
            "max_complexity": 20.0, "test_files": 4, "test_lines": 900, "test_count": 60,
            "coverage": None, "lint_warnings": 3, "duplication": 0.01, "churn_added": 20,
            "churn_deleted": 5, "churn_files": 2, "source": "test"}  # fmt: skip
    return {**base, **fields}


def _inputs(records: Sequence[dict[str, Any] | bytes], start: int = 0) -> list[Input]:
    return [
        Input(
            Message(
                topics.QUALITY.name, 0, start + k, b"shop",
                r if isinstance(r, bytes) else CODEC.encode("code_quality_snapshot", r),
            )
        )
        for k, r in enumerate(records)
    ]  # fmt: skip


def _decoded(out: Outputs, topic: str) -> list[dict[str, Any]]:
    return [CODEC.decode(r.value)[1] for r in out.records if r.topic == topic]


def test_snapshots_give_forecasts_on_predictions_and_debt_alerts_on_alerts() -> None:
    processor = QualityProcessor(SETTINGS, CODEC)
    out = processor.process(_inputs([_snapshot(i) for i in range(30)]), NOW_S)
    batches = _decoded(out, topics.PREDICTIONS.name)
    assert len(batches) == 30 - 10 + 1  # from the tenth commit on
    rows = prediction_rows(batches[-1])
    assert {r["metric"] for r in rows} >= {"quality.mean_complexity", "quality.lines"}
    assert {r["kind"] for r in rows} == {"FORECAST"} and batches[-1]["entity"] == "repo:shop"
    cached = [r for r in out.records if r.topic == topics.PREDICTIONS.name]
    assert all(r.cache == ("predictions", "forecasts") and r.key == b"repo:shop" for r in cached)
    alerts = _decoded(out, topics.ALERTS.name)
    assert [(a["rule"], a["status"]) for a in alerts] == [
        ("test_ratio_falling", "FIRING"), ("complexity_trend", "FIRING")
    ]  # fmt: skip
    assert "crosses 6 in about" in alerts[1]["summary"]
    assert not _decoded(out, topics.DEADLETTER.name)


def test_bad_snapshots_are_dead_lettered_with_the_field_and_the_rest_goes_on() -> None:
    processor = QualityProcessor(SETTINGS, CODEC)
    future = _snapshot(1, event_time=int(NOW_S * 1000) + 2 * 3_600_000)
    out = processor.process(
        _inputs([_snapshot(0, mean_complexity=-1.0), b"\xffjunk", future, _snapshot(2)]), NOW_S
    )
    letters = _decoded(out, topics.DEADLETTER.name)
    assert [(d["offset"], d["error_kind"]) for d in letters] == [
        (0, "invalid_value"), (1, "undecodable"), (2, "future_timestamp")
    ]  # fmt: skip
    assert letters[0]["reason"] == "mean_complexity: must not be negative, got -1.0"
    assert processor.repositories["shop"].count == 1


def test_a_replay_rebuilds_the_state_and_produces_nothing() -> None:
    snapshots = [_snapshot(i) for i in range(25)]
    straight = QualityProcessor(SETTINGS, CODEC)
    expected = straight.process(_inputs(snapshots), NOW_S)
    restarted = QualityProcessor(SETTINGS, CODEC)
    restarted.replay(_inputs(snapshots[:20]), NOW_S)
    after = restarted.process(_inputs(snapshots[20:], start=20), NOW_S)
    tail = [r.value for r in expected.records if r.cause and r.cause.offset >= 20]
    assert [r.value for r in after.records] == tail


def test_past_the_repository_limit_new_ones_are_dead_lettered_and_revoked_ones_forgotten() -> None:
    processor = QualityProcessor(SETTINGS.replace(quality_max_repositories=1), CODEC)
    out = processor.process(_inputs([_snapshot(0), _snapshot(0, repository="other")]), NOW_S)
    (letter,) = _decoded(out, topics.DEADLETTER.name)
    assert letter["error_kind"] == "entity_limit" and "FORESIGHT_QUALITY_MAX" in letter["reason"]
    processor.revoked([0])
    assert processor.repositories == {}
