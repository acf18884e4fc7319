"""The rules of a CodeQualitySnapshot, one set for both doors that take it.

``POST /api/v1/quality`` (JSON, :mod:`connectors.ingest_http`) answers 400 with every
problem found; the quality processor (:mod:`streams.quality`) dead-letters a record from
``telemetry.code-quality`` with the first one. Both ask :func:`snapshot_problems`.

Rules: the fields are the schema's, no others; ``repository`` and ``commit`` are non-empty
text of at most 256 characters (``source`` may be empty); ``event_time`` is integer epoch
milliseconds, not negative and at most ``max_future_ms`` ahead (there is no age limit: a
backfill sends years of history); counts are whole numbers, not negative; complexities are
finite and not negative, the maximum not below the mean; ``coverage`` and ``duplication`` are
shares in [0, 1]. A field with a default may be left out (or null).

Examples
--------
>>> snapshot = {"repository": "shop", "commit": "ab12", "event_time": 1_700_000_000_000,
...     "files": 3, "lines": 250, "functions": 20, "mean_complexity": 2.5,
...     "max_complexity": 1.0}
>>> [(p.field, p.reason) for p in snapshot_problems(snapshot, 1_700_000_000_000, 3_600_000)]
[('max_complexity', 'is 1.0, below mean_complexity (2.5)')]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas import limits
from schemas.codec import current_schema
from schemas.field_rules import count_problem, epoch_ms_problem, measure_problem, text_problem

Record = dict[str, Any]
SCHEMA = "code_quality_snapshot"


@dataclass(frozen=True)
class SnapshotProblem:
    """Why a snapshot is refused: the field (None: the whole snapshot), words for a person,
    and the dead-letter kind."""

    field: str | None
    reason: str
    kind: str = "invalid_value"


Check = Callable[[Any, int, int], str | None]  # (value, now_ms, max_future_ms) -> reason


def _text(value: Any, now_ms: int, max_future_ms: int) -> str | None:
    return text_problem(value, limits.MAX_NAME_CHARS)


def _optional_text(value: Any, now_ms: int, max_future_ms: int) -> str | None:
    return text_problem(value, limits.MAX_NAME_CHARS, empty=True)


def _time(value: Any, now_ms: int, max_future_ms: int) -> str | None:
    return epoch_ms_problem(value, now_ms, max_future_ms)


def _count(value: Any, now_ms: int, max_future_ms: int) -> str | None:
    return count_problem(value)


def _measure(value: Any, now_ms: int, max_future_ms: int) -> str | None:
    return measure_problem(value)


def _share(value: Any, now_ms: int, max_future_ms: int) -> str | None:
    return measure_problem(value, most=1.0)


_CHECKS: dict[str, Check] = {
    "repository": _text,
    "commit": _text,
    "event_time": _time,
    "source": _optional_text,
    "mean_complexity": _measure,
    "max_complexity": _measure,
    "coverage": _share,
    "duplication": _share,
}


def _rules() -> dict[str, tuple[Check, bool, Any]]:
    """Per schema field: its check, whether it is required, and its default. Every long is
    a count; a field of another type must have its check named above."""
    rules = {}
    for field in current_schema(SCHEMA).raw["fields"]:
        avro_type = field["type"]
        long = avro_type == "long" or avro_type == ["null", "long"]
        check = _CHECKS.get(field["name"]) or (_count if long else None)
        if check is None:
            raise TypeError(f"{SCHEMA} field {field['name']!r} has no rule in schemas.quality")
        rules[field["name"]] = (check, "default" not in field, field.get("default"))
    return rules


_RULES = _rules()
FIELDS: tuple[str, ...] = tuple(_RULES)


def _kind(field: str, reason: str) -> str:
    if "characters long" in reason:
        return "oversized"
    if field == "event_time" and "ahead" in reason:
        return "future_timestamp"
    return "invalid_value"


def snapshot_problems(snapshot: Any, now_ms: int, max_future_ms: int) -> list[SnapshotProblem]:
    """Everything wrong with one snapshot (a JSON object or a decoded record); empty if none."""
    if not isinstance(snapshot, Mapping):
        return [SnapshotProblem(None, f"must be a JSON object, got {type(snapshot).__name__}")]
    problems = [
        SnapshotProblem(str(name), f"unknown field; {SCHEMA} fields are {list(FIELDS)}")
        for name in sorted(set(snapshot) - set(_RULES), key=str)
    ]
    for name, (check, required, _) in _RULES.items():
        value = snapshot.get(name)
        if value is None:
            if required:
                problems.append(SnapshotProblem(name, "is required"))
            continue
        reason = check(value, now_ms, max_future_ms)
        if reason:
            problems.append(SnapshotProblem(name, reason, _kind(name, reason)))
    if not problems and snapshot["max_complexity"] < snapshot["mean_complexity"]:
        problems.append(
            SnapshotProblem(
                "max_complexity",
                f"is {snapshot['max_complexity']}, below mean_complexity "
                f"({snapshot['mean_complexity']})",
            )
        )
    return problems


def snapshot_record(snapshot: Mapping[str, Any]) -> Record:
    """An accepted snapshot as the Avro record: absent optional fields get their defaults,
    whole-number doubles sent as JSON integers become floats."""
    record: Record = {}
    for name, (check, _, default) in _RULES.items():
        value = snapshot.get(name, default)
        if check in (_measure, _share) and value is not None:
            value = float(value)
        record[name] = default if value is None else value
    return record
