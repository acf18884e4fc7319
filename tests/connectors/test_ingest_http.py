"""Agent event validation of the HTTP ingestion, without any service."""

from __future__ import annotations

import math
from typing import Any

import pytest

from connectors.ingest_http import MAX_FUTURE_MS, validate_agent_events

NOW = 1_767_225_600_000
EVENT: dict[str, Any] = {
    "agent": "agent-01",
    "task_id": "t-1",
    "task_type": "triage",
    "phase": "SUCCEEDED",
    "event_time": NOW,
    "duration_ms": 1200,
}


def _problems(payload: Any) -> list[tuple[int | None, str | None]]:
    return [(e.index, e.field) for e in validate_agent_events(payload, NOW)[1]]


def test_a_valid_event_gets_the_schema_defaults() -> None:
    records, errors = validate_agent_events(EVENT, NOW)
    assert errors == []
    assert records == [{**EVENT, "cost": None, "error_class": None, "labels": {}}]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phase", "DONE"),
        ("phase", None),
        ("agent", ""),
        ("agent", "a" * 257),
        ("task_id", 7),
        ("event_time", NOW + MAX_FUTURE_MS + 1),
        ("event_time", 1.7e12),
        ("event_time", "2026-01-01"),
        ("event_time", -1),
        ("duration_ms", -1.0),
        ("duration_ms", math.nan),
        ("cost", math.inf),
        ("cost", True),
        ("error_class", ""),
        ("labels", {"region": ""}),
        ("labels", ["eu"]),
        ("labels", {f"k{i}": "v" for i in range(65)}),
        ("retries", 3),
    ],
)
def test_each_rule_names_its_field(field: str, value: Any) -> None:
    assert _problems([EVENT, {**EVENT, field: value}]) == [(1, field)]


def test_every_problem_of_every_event_is_reported() -> None:
    missing = {k: v for k, v in EVENT.items() if k != "task_type"}
    assert _problems([missing, "not an object", {**EVENT, "phase": "x", "cost": -1}]) == [
        (0, "task_type"),
        (1, None),
        (2, "phase"),
        (2, "cost"),
    ]


def test_an_empty_list_is_refused() -> None:
    assert _problems([]) == [(None, None)]


def test_reasons_say_what_to_send() -> None:
    (error,) = validate_agent_events({**EVENT, "phase": "DONE"}, NOW)[1]
    assert error.reason == "must be one of STARTED, SUCCEEDED, FAILED; got 'DONE'"
