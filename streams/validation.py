"""What makes an input record acceptable, with a reason for a person when it is not.

Every rejected record goes to ``telemetry.deadletter`` with the reason returned here and its
``error_kind``; nothing is dropped silently and no worker crashes on input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.base import FloatArray
from models.signals import MetricKind
from schemas import limits
from schemas.field_rules import age_problem, control_problem

Record = dict[str, Any]
_KINDS = {kind.value: kind for kind in MetricKind}


@dataclass(frozen=True)
class Rejection:
    """Why a record was refused: a machine-readable kind and words for a person."""

    kind: str
    reason: str


@dataclass(frozen=True)
class Limits:
    """Bounds on input records: time from the settings, sizes from :mod:`schemas.limits`."""

    max_future_ms: int = 3_600_000
    max_age_ms: int = 7 * 24 * 3_600_000
    max_samples: int = limits.MAX_SAMPLES
    max_name_chars: int = limits.MAX_NAME_CHARS
    max_series_chars: int = limits.MAX_SERIES_CHARS
    max_label_chars: int = limits.MAX_LABEL_VALUE_CHARS
    max_labels: int = limits.MAX_LABELS


@dataclass(slots=True)
class CheckedBatch:
    """A MetricBatch's acceptable samples with their kinds (UNKNOWN where the producer did
    not say), the series that ended, and why any samples were dropped."""

    names: list[str]
    values: FloatArray
    kinds: list[MetricKind]
    ended: list[str]
    dropped: Rejection | None = None


def _oversized(record: Record, limits: Limits, key: str) -> Rejection | None:
    value = record.get(key)
    if value is not None and len(value) > limits.max_name_chars:
        return Rejection(
            "oversized", f"{key} is {len(value)} characters (limit {limits.max_name_chars})"
        )
    return None


def _control_characters(record: Record, *keys: str) -> Rejection | None:
    for key in keys:
        value: str = record.get(key) or ""
        problem = control_problem(value)
        if problem:
            return Rejection("invalid_value", f"{key} {value[:60]!r} {problem}")
    return None


def _oversized_labels(labels: Mapping[str, str], limits: Limits) -> Rejection | None:
    if len(labels) > limits.max_labels:
        return Rejection("oversized", f"{len(labels)} labels (limit {limits.max_labels})")
    for name, value in labels.items():
        if len(name) > limits.max_name_chars or len(value) > limits.max_label_chars:
            return Rejection(
                "oversized",
                f"label {name[:40]!r} is too long: {len(name)} characters in its name (limit "
                f"{limits.max_name_chars}), {len(value)} in its value (limit "
                f"{limits.max_label_chars})",
            )
    return None


def _timestamp(t_ms: int, now_ms: int, limits: Limits) -> Rejection | None:
    if t_ms > now_ms + limits.max_future_ms:
        ahead = (t_ms - now_ms) / 60_000
        return Rejection(
            "future_timestamp",
            f"event_time {t_ms} is {ahead:.0f} min in the future (limit "
            f"{limits.max_future_ms / 60_000:.0f} min): check the producer's clock",
        )
    too_old = age_problem(t_ms, now_ms, limits.max_age_ms)
    return Rejection("too_old", f"event_time {too_old}") if too_old else None


def check_metric_batch(record: Record, now_ms: int, limits: Limits) -> Rejection | CheckedBatch:
    """The batch's samples, or why the whole batch is refused.

    A sample whose series name is over the length limit is dropped on its own (the rest of
    the batch is still good telemetry), and :attr:`CheckedBatch.dropped` says so.
    """
    names, values = record["names"], record["values"]
    kinds, ended = record.get("kinds") or [], record.get("ended") or []
    if not record["entity"]:
        return Rejection("invalid_value", "entity is empty")
    rejection = _control_characters(record, "entity")  # NUL: the worker's table keys use it
    if rejection:
        return rejection
    if len(names) != len(values):
        return Rejection(
            "invalid_value", f"{len(names)} names but {len(values)} values: they must be parallel"
        )
    if kinds and len(kinds) != len(names):
        return Rejection(
            "invalid_value",
            f"{len(names)} names but {len(kinds)} kinds: kinds must be parallel, or empty",
        )
    if len(names) + len(ended) > limits.max_samples:
        return Rejection(
            "oversized",
            f"{len(names)} samples and {len(ended)} ended series in one batch (limit "
            f"{limits.max_samples})",
        )
    rejection = (
        _oversized(record, limits, "entity")
        or _oversized_labels(record["labels"], limits)
        or _timestamp(record["event_time"], now_ms, limits)
    )
    if rejection:
        return rejection
    array = np.asarray(values, dtype=np.float64)
    # A finite sum has no NaN or infinity in it: a tenth of the cost of asking numpy each
    # value (an infinite sum may also be finite values that overflow, so it asks then).
    if not math.isfinite(sum(values)):
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            shown = ", ".join(f"{names[i][:60]}={values[i]}" for i in bad[:5])
            return Rejection("invalid_value", f"{len(bad)} non-finite values: {shown}")
    # Kinds by a dict, not the enum's constructor (ten times the cost); a name that is no
    # kind still raises the constructor's ValueError.
    kinds = [_KINDS.get(k) or MetricKind(k) for k in kinds] or [MetricKind.UNKNOWN] * len(names)
    ended = [name for name in ended if len(name) <= limits.max_series_chars]
    if max(map(len, names), default=0) <= limits.max_series_chars:
        return CheckedBatch(names, array, kinds, ended)
    long = [i for i, name in enumerate(names) if len(name) > limits.max_series_chars]
    keep = np.ones(len(names), dtype=bool)
    keep[long] = False
    shown = ", ".join(f"{names[i][:40]!r}… ({len(names[i])} characters)" for i in long[:3])
    dropped = Rejection(
        "oversized",
        f"{len(long)} series names over {limits.max_series_chars} characters were dropped (the "
        f"rest of the batch was processed): {shown}",
    )
    return CheckedBatch(
        [n for n, k in zip(names, keep, strict=True) if k],
        array[keep],
        [kind for kind, k in zip(kinds, keep, strict=True) if k],
        ended,
        dropped,
    )


def check_agent_event(record: Record, now_ms: int, limits: Limits) -> Rejection | None:
    """Why an AgentEvent is refused, or None."""
    for key in ("agent", "task_id", "task_type"):
        if not record[key]:
            return Rejection("invalid_value", f"{key} is empty")
    for key in ("workflow_id", "parent_task_id"):
        if record.get(key) == "":
            return Rejection("invalid_value", f"{key} is empty: leave it out (null) instead")
    rejection = (
        _control_characters(
            record, "agent", "task_id", "task_type", "workflow_id", "parent_task_id"
        )
        or _oversized(record, limits, "agent")
        or _oversized(record, limits, "task_id")
        or _oversized(record, limits, "task_type")
        or _oversized(record, limits, "error_class")
        or _oversized(record, limits, "workflow_id")
        or _oversized(record, limits, "parent_task_id")
        or _oversized_labels(record.get("labels") or {}, limits)
    )
    if rejection:
        return rejection
    for key in ("duration_ms", "cost"):
        value = record.get(key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            return Rejection("invalid_value", f"{key} must be finite and >= 0, got {value}")
    step = record.get("step")
    if step is not None and step < 0:
        return Rejection("invalid_value", f"step must be >= 0, got {step}")
    return _timestamp(record["event_time"], now_ms, limits)


#: The most candidates a RoutingRequest may name.
MAX_CANDIDATES = 1024


def check_routing_request(record: Record, now_ms: int, limits: Limits) -> Rejection | None:
    """Why a RoutingRequest is refused, or None."""
    for key in ("task_id", "task_type"):
        if not record[key]:
            return Rejection("invalid_value", f"{key} is empty")
        rejection = _oversized(record, limits, key) or _control_characters(record, key)
        if rejection:
            return rejection
    candidates = record["candidates"]
    if len(candidates) > MAX_CANDIDATES:
        return Rejection("oversized", f"{len(candidates)} candidates (limit {MAX_CANDIDATES})")
    for candidate in candidates:
        if not candidate or len(candidate) > limits.max_name_chars or control_problem(candidate):
            return Rejection(
                "invalid_value",
                f"candidate {candidate[:40]!r} must be 1 to {limits.max_name_chars} printable "
                "characters on one line",
            )
    return _timestamp(record["event_time"], now_ms, limits)
