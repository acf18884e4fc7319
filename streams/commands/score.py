"""``foresight score``: replay CSV files through the anomaly detectors.

Each file is one entity: a timestamp column (the first column, or one named ``timestamp``,
``time`` or ``ts``) and one or more numeric columns, scored row by row in time order as the
stream workers would. The scores go to ``<out>/<file name>``: the entity's own score over all
its columns (the stream's ANOMALY prediction of metric ``*``) as ``anomaly_score``, and one
``<column>_score`` per input column from the per-metric detector.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.anomaly import StreamingAnomalyDetector
from models.base import FloatArray
from models.entity_anomaly import EntityAnomalyDetector
from streams.csv_files import iter_rows
from streams.settings import Settings

_TIME_COLUMNS = ("timestamp", "time", "ts")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``score`` command."""
    parser = subparsers.add_parser(
        "score",
        help="replay CSV files through the anomaly detectors and write per-row scores",
    )
    parser.add_argument(
        "--input",
        type=Path,
        nargs="+",
        required=True,
        metavar="CSV",
        help="CSV files: a timestamp column and numeric columns, one entity per file",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the scored CSVs")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run_score)


def run_score(args: argparse.Namespace, settings: Settings) -> int:
    """Score every input file; print one summary line (or JSON record) per file."""
    summaries: list[dict[str, Any]] = []
    for path in args.input:
        try:
            summaries.append(score_file(path, args.out))
        except (OSError, ValueError) as error:
            print(f"foresight score: {error}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        for summary in summaries:
            peaks = ", ".join(f"{c}={s:.3f}" for c, s in summary["max_score"].items())
            print(
                f"{summary['input']}: {summary['rows']} rows -> {summary['output']} "
                f"(anomaly_score max {summary['max_anomaly_score']:.3f}; {peaks})"
            )
    return 0


def score_file(path: Path, out_dir: Path) -> dict[str, Any]:
    """Score one CSV file and write ``out_dir/<name>``; returns a summary."""
    times, columns, values = _read_table(path)
    detector = StreamingAnomalyDetector()
    state = detector.init_state(len(columns))
    entity_detector = EntityAnomalyDetector()
    entity_state = entity_detector.init_state(len(columns))
    entity = entity_detector.init_entity_state(1)
    starts = np.array([0, len(columns)])
    scores = np.zeros_like(values)
    entity_scores = np.zeros(len(values))
    t_ms = _as_epoch_ms(times, path)
    order = np.argsort(t_ms, kind="stable")
    for row in order:
        scores[row] = detector.score_learn(state, values[row], int(t_ms[row]))
        step = entity_detector.score_learn(entity_state, entity, values[row], starts)
        entity_scores[row] = step.scores[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "anomaly_score", *(f"{c}_score" for c in columns)])
        for stamp, entity_score, row_scores in zip(times, entity_scores, scores, strict=True):
            writer.writerow([stamp, f"{entity_score:.6f}", *(f"{s:.6f}" for s in row_scores)])
    return {
        "input": str(path),
        "output": str(output),
        "rows": len(times),
        "max_anomaly_score": float(entity_scores.max(initial=0.0)),
        "max_score": {c: float(scores[:, k].max(initial=0.0)) for k, c in enumerate(columns)},
    }


def _read_table(path: Path) -> tuple[list[str], list[str], FloatArray]:
    rows = list(iter_rows(path))
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    time_index = next((i for i, n in enumerate(header) if n.lower() in _TIME_COLUMNS), 0)
    value_indices = [i for i in range(len(header)) if i != time_index]
    if not value_indices:
        raise ValueError(f"{path}: no value columns besides the timestamp column {header}")
    values = np.full((len(rows) - 1, len(value_indices)), math.nan)
    for r, row in enumerate(rows[1:]):
        for k, i in enumerate(value_indices):
            cell = row[i].strip() if i < len(row) else ""
            try:
                values[r, k] = float(cell) if cell else math.nan
            except ValueError:
                values[r, k] = math.nan
    numeric = [k for k in range(len(value_indices)) if np.isfinite(values[:, k]).any()]
    if not numeric:
        raise ValueError(f"{path}: no numeric column among {header}; nothing to score")
    columns = [header[value_indices[k]] for k in numeric]
    times = [row[time_index] if time_index < len(row) else "" for row in rows[1:]]
    return times, columns, values[:, numeric]


def _as_epoch_ms(times: list[str], path: Path) -> np.ndarray:
    """Timestamps as epoch milliseconds: numbers (seconds or ms) or ISO 8601 text."""
    try:
        numbers = np.array([float(t) for t in times])
        # Below 1e11 a number is epoch seconds (until the year 5138), above it milliseconds.
        return np.where(numbers < 1e11, numbers * 1000.0, numbers).astype(np.int64)
    except ValueError:
        pass
    try:
        parsed = np.array([np.datetime64(t.strip().replace("Z", ""), "ms") for t in times])
    except ValueError as error:
        raise ValueError(
            f"{path}: timestamp column is neither epoch numbers nor ISO 8601 text ({error})"
        ) from error
    return parsed.astype(np.int64)
