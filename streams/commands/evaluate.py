"""``foresight eval``: benchmark the models on public corpora.

``eval nab`` runs the streaming anomaly detector over the Numenta Anomaly Benchmark and scores
it by NAB's rules; ``eval forecast`` runs the forecasters against naive baselines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings

_NAB_PROFILES = ("standard", "reward_low_FP", "reward_low_FN")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` group and its ``nab`` and ``forecast`` sub-commands."""
    group = subparsers.add_parser("eval", help="benchmark the models on public corpora")
    commands = group.add_subparsers(dest="eval_command", required=True, metavar="BENCHMARK")

    nab = commands.add_parser(
        "nab", help="score the anomaly detector on the Numenta Anomaly Benchmark"
    )
    nab.add_argument(
        "--data",
        type=Path,
        required=True,
        help="NAB corpus folder (data/<group>/<name>.csv and labels/combined_windows.json)",
    )
    nab.add_argument(
        "--out", type=Path, required=True, help="folder for the per-file NAB results CSVs"
    )
    nab.add_argument("--json", action="store_true", help="print the result as JSON")
    nab.set_defaults(func=run_nab)

    forecast = commands.add_parser(
        "forecast", help="compare the forecasters with naive and seasonal-naive baselines"
    )
    forecast.add_argument("--data", type=Path, required=True, help="forecast corpus folder")
    forecast.add_argument("--json", action="store_true", help="print the result as JSON")
    forecast.set_defaults(func=run_forecast)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_nab(args: argparse.Namespace, settings: Settings) -> int:
    """Run the NAB evaluation and print the three normalised scores."""
    from models.nab import evaluate_corpus

    try:
        result = evaluate_corpus(args.data, args.out, progress=_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"foresight eval nab: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"NAB: {result['files']} files, {result['rows']} rows, {result['elapsed_s']:.1f} s")
    print(f"{'profile':<16}{'score':>8}{'threshold':>12}")
    for profile in _NAB_PROFILES:
        threshold = result["thresholds"][profile]
        print(f"{profile:<16}{result[profile]:>8.2f}{threshold:>12.4f}")
    print(f"results written to {args.out}")
    return 0


def run_forecast(args: argparse.Namespace, settings: Settings) -> int:
    """Run the forecast evaluation and print model against baselines."""
    # Imported here so that the other commands work without the forecasting module.
    from models.forecast_eval import evaluate_forecasts

    try:
        result = evaluate_forecasts(args.data, progress=_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"foresight eval forecast: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return 0
    print(_table(result))
    return 0


def _table(result: dict[str, Any]) -> str:
    """The headline: each method's median and mean MASE and sMAPE at each horizon."""
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = result["summary"]
    horizons = list(next(iter(summary.values())))
    header = f"{'method':<16}" + "".join(
        f"{h + ' ' + m + ' med/mean':>24}" for h in horizons for m in ("MASE", "sMAPE")
    )
    lines = [header]
    for method, by_horizon in summary.items():
        cells = "".join(
            f"{by_horizon[h][m]['median']:>13.3f} / {by_horizon[h][m]['mean']:<8.3f}"
            for h in horizons
            for m in ("mase", "smape")
        )
        lines.append(f"{method:<16}{cells}")
    nominal = result["protocol"]["interval_coverage_nominal"]
    covered = ", ".join(
        f"{h} {summary['model'][h]['coverage']['median']:.3f} "
        f"(first day {summary['model'][h]['first_day_coverage']['median']:.3f})"
        for h in horizons
    )
    lines.append(f"model interval coverage, median (nominal {nominal:g}): {covered}")
    lines.append(
        f"({len(result['series'])} series, {result['seconds']:.0f} s; "
        "--json for every number and the per-series table)"
    )
    return "\n".join(lines)
