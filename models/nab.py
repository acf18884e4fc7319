"""The Numenta Anomaly Benchmark (NAB): its scoring rules, and a runner for its corpus.

NAB (Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta Anomaly
Benchmark", 2015; https://github.com/numenta/NAB) scores a streaming detector on 58 labelled
files. This module is the project's own implementation of the rules of NAB 1.x (its
"sweeper"), written from the published description and checked against the hand-computed
cases in ``tests/models/test_nab.py``:

* Each file has labelled anomaly windows (``labels/combined_windows.json``). The first
  ``min(floor(0.15 * rows), 750)`` rows are probationary: not scored at all.
* A threshold turns anomaly scores into detections (``score >= threshold``).
* Inside a window only the earliest detection counts; it earns
  ``A_TP * σ(p) / σ(-1)`` where ``σ(p) = 2 / (1 + exp(5 p)) - 1`` is the scaled sigmoid and
  ``p = -(right - i + 1) / width`` runs from -1 at the window's first row to just below 0 at
  its last, so an earlier detection earns more and the first row earns exactly ``A_TP``.
* A window without any detection costs ``A_FN``.
* A detection outside every window costs ``A_FP * σ(p)`` (negative) where ``p`` is its
  distance past the end of the preceding window in units of that window's width minus one;
  ``σ(p) = -1`` for ``p >= 3`` and before the first window. A detection just after a window
  is thus nearly free, while one far from any window costs the full ``A_FP``.
* One threshold per profile is chosen to maximise the total over the whole corpus, and the
  total is normalised: ``100 * (S - S_null) / (S_perfect - S_null)``, where the null
  detector never fires (every window missed) and the perfect one fires on the first row of
  every window.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.anomaly import StreamingAnomalyDetector
from models.base import FloatArray

PROBATION_FRACTION = 0.15
PROBATION_CAP_ROWS = 750


@dataclass(frozen=True)
class CostProfile:
    """The weights NAB gives each outcome in one application profile."""

    a_tp: float
    a_fp: float
    a_tn: float
    a_fn: float


PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile(a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=1.0),
    "reward_low_FP": CostProfile(a_tp=1.0, a_fp=0.22, a_tn=1.0, a_fn=1.0),
    "reward_low_FN": CostProfile(a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=2.0),
}


@dataclass(frozen=True)
class LabelledScores:
    """One file's anomaly scores and its windows as inclusive row ranges ``(first, last)``."""

    name: str
    scores: FloatArray
    windows: Sequence[tuple[int, int]] = field(default_factory=tuple)


def probation_rows(n_rows: int) -> int:
    """Rows at the start of a file that NAB does not score: 15%, at most 750."""
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_CAP_ROWS)


def scaled_sigmoid(position: npt.ArrayLike) -> FloatArray:
    """NAB's reward curve: about 1 at -1 (a window's start), 0 at 0, -1 from 3 on."""
    p = np.asarray(position, dtype=np.float64)
    curve = 2.0 / (1.0 + np.exp(np.clip(5.0 * p, -700.0, 700.0))) - 1.0
    return np.where(p >= 3.0, -1.0, curve)


def window_rows(
    timestamps: npt.NDArray[np.datetime64], windows: Sequence[Sequence[str]]
) -> list[tuple[int, int]]:
    """Each ``[start, end]`` label window as the inclusive row range it covers.

    Windows that cover no row are dropped, as they can be neither hit nor missed.
    """
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        first = int(np.searchsorted(timestamps, np.datetime64(start), side="left"))
        last = int(np.searchsorted(timestamps, np.datetime64(end), side="right")) - 1
        if first <= last:
            rows.append((first, last))
    return rows


def row_rewards(
    n_rows: int, windows: Sequence[tuple[int, int]], profile: CostProfile
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """What a detection on each row would earn, and the window each row is in (-1: none).

    Rows in the probationary period get window id -2: they are never scored.
    """
    reward = np.empty(n_rows, dtype=np.float64)
    window_id = np.full(n_rows, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    rows = np.arange(n_rows, dtype=np.float64)
    previous_end: int | None = None
    previous_width = 0.0
    cursor = 0
    for k, (first, last) in enumerate(sorted(windows)):
        _fill_false_positive(reward, rows, cursor, first, previous_end, previous_width, profile)
        width = float(last - first + 1)
        position = -(last - rows[first : last + 1] + 1.0) / width
        reward[first : last + 1] = scaled_sigmoid(position) * profile.a_tp / max_tp
        window_id[first : last + 1] = k
        previous_end, previous_width, cursor = last, width, last + 1
    _fill_false_positive(reward, rows, cursor, n_rows, previous_end, previous_width, profile)
    window_id[: probation_rows(n_rows)] = -2
    return reward, window_id


def _fill_false_positive(
    reward: FloatArray,
    rows: FloatArray,
    start: int,
    stop: int,
    previous_end: int | None,
    previous_width: float,
    profile: CostProfile,
) -> None:
    if start >= stop:
        return
    if previous_end is None:
        reward[start:stop] = -profile.a_fp
        return
    # A one-row window has width - 1 == 0: every later row is then "far" past it.
    span = max(previous_width - 1.0, 1e-12)
    position = np.abs(rows[start:stop] - previous_end) / span
    reward[start:stop] = scaled_sigmoid(position) * profile.a_fp


@dataclass(frozen=True)
class _Steps:
    """Every scored row's anomaly score and the change it makes to the total when detected."""

    scores: FloatArray
    deltas: FloatArray
    base: float
    file_index: npt.NDArray[np.int64]


def _threshold_steps(files: Sequence[LabelledScores], profile: CostProfile) -> _Steps:
    """Turn the corpus into independent per-row score changes as the threshold falls.

    Lowering the threshold past a row's score detects that row. Outside windows that adds the
    row's (negative) reward. Inside a window it raises the window's value to the best reward
    detected so far (the earliest detection, since rewards fall along a window), starting from
    ``-A_FN``; sorting a window's rows by score and taking the running maximum turns this into
    one additive change per row, so the corpus total at every threshold is one cumulative sum.
    """
    all_scores: list[FloatArray] = []
    all_deltas: list[FloatArray] = []
    all_files: list[npt.NDArray[np.int64]] = []
    base = 0.0
    for index, item in enumerate(files):
        scores = np.nan_to_num(np.asarray(item.scores, dtype=np.float64), nan=0.0)
        reward, window_id = row_rewards(len(scores), item.windows, profile)
        outside = window_id == -1
        file_scores = [scores[outside]]
        file_deltas = [reward[outside]]
        for k in np.unique(window_id[window_id >= 0]):
            in_window = np.flatnonzero(window_id == k)
            order = in_window[np.argsort(-scores[in_window], kind="stable")]
            best = np.maximum.accumulate(np.concatenate(([-profile.a_fn], reward[order])))
            file_scores.append(scores[order])
            file_deltas.append(np.diff(best))
            base -= profile.a_fn
        all_scores.extend(file_scores)
        all_deltas.extend(file_deltas)
        all_files.append(np.full(sum(len(s) for s in file_scores), index, dtype=np.int64))
    return _Steps(
        scores=np.concatenate(all_scores) if all_scores else np.empty(0),
        deltas=np.concatenate(all_deltas) if all_deltas else np.empty(0),
        base=base,
        file_index=np.concatenate(all_files) if all_files else np.empty(0, dtype=np.int64),
    )


def optimise_threshold(
    files: Sequence[LabelledScores], profile: CostProfile
) -> tuple[float, float]:
    """The threshold that maximises the corpus total for ``profile``, and that total.

    Every distinct score is a candidate (NAB's sweep); a threshold above every score (never
    fire) is the first candidate, reported as ``1.1`` like NAB does.
    """
    steps = _threshold_steps(files, profile)
    if len(steps.scores) == 0:
        return 1.1, steps.base
    order = np.argsort(-steps.scores, kind="stable")
    scores = steps.scores[order]
    totals = steps.base + np.cumsum(steps.deltas[order])
    # A threshold detects every row scoring at least it: only the last row of a run of equal
    # scores gives a reachable total.
    last_of_run = np.append(scores[1:] != scores[:-1], True)
    candidates = np.flatnonzero(last_of_run)
    best = candidates[int(np.argmax(totals[candidates]))]
    if totals[best] <= steps.base:
        return 1.1, steps.base
    return float(scores[best]), float(totals[best])


def score_files(
    files: Sequence[LabelledScores], profile: CostProfile, threshold: float
) -> FloatArray:
    """Each file's NAB total at a fixed ``threshold`` (detections are ``score >= threshold``)."""
    steps = _threshold_steps(files, profile)
    detected = steps.scores >= threshold
    per_file = np.zeros(len(files), dtype=np.float64)
    np.add.at(per_file, steps.file_index[detected], steps.deltas[detected])
    for index, item in enumerate(files):
        _, window_id = row_rewards(len(item.scores), item.windows, profile)
        scored_windows = np.unique(window_id[window_id >= 0])
        per_file[index] -= profile.a_fn * len(scored_windows)
    return per_file


def benchmark(files: Sequence[LabelledScores]) -> dict[str, Any]:
    """NAB's normalised score for every profile, with thresholds and raw totals."""
    result: dict[str, Any] = {"thresholds": {}, "raw": {}, "per_file": {}}
    n_windows = sum(len(item.windows) for item in files)
    null_files = [
        LabelledScores(item.name, np.zeros(len(item.scores)), item.windows) for item in files
    ]
    for name, profile in PROFILES.items():
        threshold, total = optimise_threshold(files, profile)
        _, null_total = optimise_threshold(null_files, profile)
        perfect = n_windows * profile.a_tp
        span = perfect - null_total
        result[name] = 100.0 * (total - null_total) / span if span > 0 else 0.0
        result["thresholds"][name] = threshold
        result["raw"][name] = {"score": total, "null": null_total, "perfect": perfect}
        per_file = score_files(files, profile, threshold)
        result["per_file"][name] = {
            item.name: float(value) for item, value in zip(files, per_file, strict=True)
        }
    return result


def read_series(path: Path) -> tuple[npt.NDArray[np.datetime64], FloatArray]:
    """A NAB data file's ``timestamp`` and ``value`` columns; raises ``ValueError`` naming
    the file (and the line) when it is not one."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"timestamp", "value"} <= set(reader.fieldnames):
                raise ValueError(
                    f"expected a CSV with columns timestamp,value, got {reader.fieldnames}"
                )
            times, values = [], []
            for line, row in enumerate(reader, start=2):
                stamp, value = row["timestamp"], row["value"]
                if not stamp or value is None:  # a short row has None for its missing cells
                    raise ValueError(f"line {line}: no timestamp or no value column: {row}")
                times.append(np.datetime64(stamp, "ms"))
                values.append(float(value) if value.strip() else math.nan)
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    return np.array(times, dtype="datetime64[ms]"), np.array(values, dtype=np.float64)


def score_together(
    series: Sequence[tuple[FloatArray, npt.NDArray[np.int64]]],
) -> list[FloatArray]:
    """Each ``(values, t_ms)`` series streamed row by row through the default detector.

    All series share one state array and one step scores the next row of every one (a
    series that has ended gets NaN, which is neither scored nor learned), so each scores
    exactly as it would alone through :func:`models.base.score_series`, in one vectorised
    call per row instead of one per row and series.
    """
    detector = StreamingAnomalyDetector()
    longest = max((len(values) for values, _ in series), default=0)
    values = np.full((longest, len(series)), np.nan)
    times = np.zeros((longest, len(series)), dtype=np.int64)
    for k, (column, t_ms) in enumerate(series):
        values[: len(column), k] = column
        times[: len(column), k] = t_ms
    state = detector.init_state(len(series))
    scores = np.empty_like(values)
    for row in range(longest):
        scores[row] = detector.score_learn(state, values[row], times[row])
    return [scores[: len(column), k].copy() for k, (column, _) in enumerate(series)]


def _write_results(
    path: Path,
    timestamps: npt.NDArray[np.datetime64],
    values: FloatArray,
    scores: FloatArray,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for t, v, s in zip(timestamps, values, scores, strict=True):
            stamp = str(t.astype("datetime64[s]")).replace("T", " ")
            writer.writerow([stamp, repr(float(v)), f"{float(s):.10g}"])


def evaluate_corpus(
    data_dir: Path, out_dir: Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the default detector over a NAB corpus folder and score it by NAB's rules.

    ``data_dir`` holds ``data/<group>/<name>.csv`` and ``labels/combined_windows.json``.
    Every file is streamed row by row through the same default configuration, all files in
    one batch (:func:`score_together`); NAB-format results go to
    ``out_dir/<group>/<name>.csv``. Returns the normalised score per profile (keys
    ``standard``, ``reward_low_FP``, ``reward_low_FN``), the chosen thresholds, raw totals,
    per-file totals, and ``files``, ``rows`` and ``elapsed_s``.
    """
    started = time.perf_counter()
    labels_path = data_dir / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        raise FileNotFoundError(
            f"{labels_path} not found: --data must be a NAB corpus folder "
            "(with data/<group>/<name>.csv and labels/combined_windows.json)"
        )
    try:
        labels: dict[str, list[list[str]]] = json.loads(labels_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{labels_path}: not NAB's labels JSON ({error})") from None
    paths = sorted((data_dir / "data").glob("**/*.csv"))
    if not paths:
        raise FileNotFoundError(f"no CSV files under {data_dir / 'data'}: is --data right?")
    report = progress or (lambda _message: None)
    report(f"reading {len(paths)} files")
    corpus = [read_series(path) for path in paths]
    report(f"scoring {len(paths)} files together")
    all_scores = score_together(
        [(values, timestamps.astype(np.int64)) for timestamps, values in corpus]
    )
    files: list[LabelledScores] = []
    rows = 0
    for done, (path, (timestamps, values), scores) in enumerate(
        zip(paths, corpus, all_scores, strict=True), start=1
    ):
        relative = path.relative_to(data_dir / "data").as_posix()
        _write_results(out_dir / relative, timestamps, values, scores)
        windows = window_rows(timestamps, labels.get(relative, []))
        files.append(LabelledScores(relative, scores, windows))
        rows += len(scores)
        report(f"[{done}/{len(paths)}] {relative}: {len(scores)} rows")
    result = benchmark(files)
    result["files"] = len(files)
    result["rows"] = rows
    result["elapsed_s"] = time.perf_counter() - started
    return result
