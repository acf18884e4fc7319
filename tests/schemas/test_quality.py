"""The rules of a CodeQualitySnapshot, shared by the HTTP door and the quality processor."""

from __future__ import annotations

import math
from typing import Any

import pytest

from schemas.codec import Codec
from schemas.quality import FIELDS, snapshot_problems, snapshot_record
from tests.schemas.samples import SAMPLES

NOW = SAMPLES["code_quality_snapshot"]["event_time"]
HOUR = 3_600_000
GOOD: dict[str, Any] = SAMPLES["code_quality_snapshot"]
LEAST = {k: GOOD[k] for k in ("repository", "commit", "event_time", "files", "lines",
         "functions", "mean_complexity", "max_complexity")}  # fmt: skip


def _problems(snapshot: Any) -> list[tuple[str | None, str]]:
    return [(p.field, p.kind) for p in snapshot_problems(snapshot, NOW, HOUR)]


def test_a_full_snapshot_and_the_least_one_are_accepted() -> None:
    assert _problems(GOOD) == []
    assert _problems(LEAST) == []


def test_absent_fields_get_the_schema_defaults_and_the_record_encodes() -> None:
    record = snapshot_record({**LEAST, "mean_complexity": 3, "max_complexity": 9})
    assert record["coverage"] is None and record["test_count"] == 0 and record["source"] == ""
    assert isinstance(record["mean_complexity"], float)
    assert list(record) == list(FIELDS)
    Codec().encode("code_quality_snapshot", record)


def test_history_is_welcome_but_the_future_is_not() -> None:
    assert _problems({**GOOD, "event_time": 0}) == []
    assert _problems({**GOOD, "event_time": NOW + 2 * HOUR}) == [("event_time", "future_timestamp")]


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("repository", "", "invalid_value"),
        ("repository", "r" * 257, "oversized"),
        ("repository", "shop\ud800", "invalid_value"),
        ("commit", 12, "invalid_value"),
        ("event_time", 1.7e12, "invalid_value"),
        ("event_time", -1, "invalid_value"),
        ("lines", -1, "invalid_value"),
        ("lines", 2.5, "invalid_value"),
        ("lines", 2**63, "invalid_value"),
        ("files", True, "invalid_value"),
        ("mean_complexity", math.nan, "invalid_value"),
        ("mean_complexity", "3", "invalid_value"),
        ("coverage", 1.5, "invalid_value"),
        ("duplication", -0.1, "invalid_value"),
        ("lint_warnings", 3.5, "invalid_value"),
        ("source", "s" * 300, "oversized"),
        ("complexity", 3, "invalid_value"),
    ],
)
def test_each_rule_names_its_field(field: str, value: Any, kind: str) -> None:
    assert _problems({**GOOD, field: value}) == [(field, kind)]


def test_a_maximum_below_the_mean_is_refused() -> None:
    assert _problems({**GOOD, "max_complexity": 1.0}) == [("max_complexity", "invalid_value")]


def test_missing_required_fields_and_non_objects_are_named() -> None:
    assert _problems({"repository": "shop"}) == [
        (field, "invalid_value")
        for field in (
            "commit",
            "event_time",
            "files",
            "lines",
            "functions",
            "mean_complexity",
            "max_complexity",
        )
    ]
    assert _problems([GOOD]) == [(None, "invalid_value")]
