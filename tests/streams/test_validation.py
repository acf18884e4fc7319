"""Input rules: each kind of bad record gets its own reason."""

from __future__ import annotations

import pytest

from models.signals import MetricKind
from streams.validation import (
    CheckedBatch,
    Limits,
    Rejection,
    check_agent_event,
    check_metric_batch,
    check_routing_request,
)

NOW = 1_800_000_000_000
LIMITS = Limits()


def _batch(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "entity": "web-1",
        "event_time": NOW,
        "labels": {},
        "names": ["cpu", "mem"],
        "values": [1.0, 2.0],
    }
    record.update(changes)
    return record


def test_a_good_batch_gives_its_values() -> None:
    checked = check_metric_batch(_batch(), NOW, LIMITS)
    assert isinstance(checked, CheckedBatch)
    assert checked.names == ["cpu", "mem"]
    assert checked.values.tolist() == [1.0, 2.0]
    assert checked.kinds == [MetricKind.UNKNOWN] * 2  # the producer did not say
    assert checked.dropped is None


def test_finite_values_whose_sum_overflows_are_good() -> None:
    checked = check_metric_batch(_batch(values=[1.7e308, 1.7e308]), NOW, LIMITS)
    assert isinstance(checked, CheckedBatch)
    assert checked.values.tolist() == [1.7e308, 1.7e308]


def test_kinds_and_ended_series_come_through() -> None:
    batch = _batch(kinds=["COUNTER", "GAUGE"], ended=['up{job="gone"}'])
    checked = check_metric_batch(batch, NOW, LIMITS)
    assert isinstance(checked, CheckedBatch)
    assert checked.kinds == [MetricKind.COUNTER, MetricKind.GAUGE]
    assert checked.ended == ['up{job="gone"}']


@pytest.mark.parametrize(
    ("changes", "kind", "words"),
    [
        ({"values": [1.0, float("nan")]}, "invalid_value", "mem=nan"),
        ({"values": [float("inf"), 2.0]}, "invalid_value", "cpu=inf"),
        ({"values": [1.0]}, "invalid_value", "parallel"),
        ({"values": [float("inf"), float("-inf")]}, "invalid_value", "2 non-finite"),
        ({"kinds": ["GAUGE"]}, "invalid_value", "2 names but 1 kinds"),
        ({"ended": ["x"] * 10_000}, "oversized", "10000 ended series"),
        ({"entity": ""}, "invalid_value", "entity is empty"),
        ({"entity": "web-1\x00journal0"}, "invalid_value", "control character '\\x00' at 5"),
        ({"entity": "web-1\nFIRING db-1"}, "invalid_value", "control character '\\n' at 5"),
        ({"entity": "web-1\x1b[2J"}, "invalid_value", "control character '\\x1b'"),
        ({"event_time": NOW + 2 * 3_600_000}, "future_timestamp", "in the future"),
        ({"event_time": NOW - 8 * 24 * 3_600_000}, "too_old", "beyond retention"),
        ({"entity": "x" * 300}, "oversized", "entity is 300 characters"),
        ({"labels": {"k": "v" * 2000}}, "oversized", "label 'k'"),
        ({"labels": {f"k{i}": "v" for i in range(10_000)}}, "oversized", "10000 labels"),
        ({"names": ["m"] * 10_001, "values": [0.0] * 10_001}, "oversized", "10001 samples"),
    ],
)
def test_each_bad_batch_names_its_reason(changes: dict[str, object], kind: str, words: str) -> None:
    rejection = check_metric_batch(_batch(**changes), NOW, LIMITS)
    assert isinstance(rejection, Rejection)
    assert rejection.kind == kind
    assert words in rejection.reason


def test_an_overlong_series_name_drops_that_sample_and_keeps_the_rest() -> None:
    long = "m" * 100_000
    fine = 'container_cpu_usage_seconds_total{id="' + "x" * 500 + '"}'
    batch = _batch(names=["cpu", long, fine], values=[1.0, 2.0, 3.0], kinds=["GAUGE"] * 3)
    checked = check_metric_batch(batch, NOW, LIMITS)
    assert isinstance(checked, CheckedBatch)
    assert checked.names == ["cpu", fine]
    assert checked.values.tolist() == [1.0, 3.0]
    assert checked.kinds == [MetricKind.GAUGE] * 2
    assert checked.dropped is not None
    assert checked.dropped.kind == "oversized"
    assert "1 series names over 2048 characters" in checked.dropped.reason
    assert "100000 characters" in checked.dropped.reason
    assert len(checked.dropped.reason) < 500


def test_agent_events() -> None:
    good = {
        "agent": "a",
        "task_id": "t",
        "task_type": "x",
        "phase": "SUCCEEDED",
        "event_time": NOW,
        "duration_ms": 5.0,
        "cost": None,
    }
    assert check_agent_event(good, NOW, LIMITS) is None
    bad = check_agent_event(dict(good, duration_ms=-1.0), NOW, LIMITS)
    assert bad is not None and "duration_ms" in bad.reason
    late = check_agent_event(dict(good, event_time=NOW + 10 * 3_600_000), NOW, LIMITS)
    assert late is not None and late.kind == "future_timestamp"
    for oversized in (
        {"error_class": "e" * 300},
        {"agent": "a" * 300},
        {"labels": {f"k{i}": "v" for i in range(65)}},
        {"labels": {"k": "v" * 2000}},
    ):
        rejection = check_agent_event(dict(good, **oversized), NOW, LIMITS)
        assert rejection is not None and rejection.kind == "oversized", oversized
    for field in ("agent", "task_id", "task_type"):
        rejection = check_agent_event(dict(good, **{field: "x\ty"}), NOW, LIMITS)
        assert rejection is not None and rejection.kind == "invalid_value"
        assert f"{field} 'x\\ty' holds the control character" in rejection.reason
    unicode = dict(good, agent="agent-é-東京", task_type="résumé parse")  # printable: fine
    assert check_agent_event(unicode, NOW, LIMITS) is None


def test_agent_event_workflow_fields() -> None:
    good = {"agent": "a", "task_id": "t2", "task_type": "x", "phase": "STARTED",
            "event_time": NOW, "workflow_id": "wf", "parent_task_id": "t1", "step": 2}  # fmt: skip
    assert check_agent_event(good, NOW, LIMITS) is None
    for field, value, kind, words in (
        ("workflow_id", "", "invalid_value", "workflow_id is empty: leave it out (null)"),
        ("parent_task_id", "", "invalid_value", "parent_task_id is empty"),
        ("workflow_id", "w" * 300, "oversized", "workflow_id is 300 characters"),
        ("parent_task_id", "p" * 300, "oversized", "parent_task_id is 300 characters"),
        ("step", -1, "invalid_value", "step must be >= 0, got -1"),
        ("workflow_id", "wf\r\n", "invalid_value", "workflow_id 'wf\\r\\n' holds the control"),
    ):
        rejection = check_agent_event(dict(good, **{field: value}), NOW, LIMITS)
        assert rejection is not None and (rejection.kind, field) == (kind, field)
        assert words in rejection.reason


def test_routing_requests() -> None:
    good = {"task_id": "t1", "task_type": "deploy", "candidates": ["a", "b"], "event_time": NOW}
    assert check_routing_request(good, NOW, LIMITS) is None
    for changes, words in (
        ({"task_id": ""}, "task_id is empty"),
        ({"task_type": "deploy\n"}, "task_type 'deploy\\n' holds the control character"),
        ({"candidates": ["a", "b\x1b[1m"]}, "candidate 'b\\x1b[1m' must be 1 to"),
        ({"candidates": ["c"] * 1025}, "1025 candidates"),
    ):
        rejection = check_routing_request(dict(good, **changes), NOW, LIMITS)
        assert rejection is not None and words in rejection.reason, changes
