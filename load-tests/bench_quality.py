"""Code-quality forecasts on real histories: walk-forward error against the last value.

Each repository's first-parent history is measured into snapshots (``foresight quality
backfill``'s code), then every metric is forecast 1, 5 and 20 commits ahead from each commit
after a warm-up of 20, knowing only the commits up to it, and scored against the commits that
came (:func:`models.quality.walk_forward`). Three forecasts, side by side:

* ``last``: the last value carried forward (the naive baseline every error is divided by);
* ``commit``: :class:`models.quality.CommitForecaster`, what ``foresight quality run`` uses;
* ``seasonal``: the project's :class:`models.forecast.SeasonalForecaster` on a clock of one
  week per commit (its profiles stay flat), the forecaster reused first.

Reported per repository and horizon: the relative error (forecast MAE over the last value's,
geometric mean over the metrics; below 1 beats the last value), the share of the 90%
intervals that held the truth, and per metric for the debt alerts' two (mean complexity and
the test-to-code ratio). Also the backfill's commits per second and the processor's
snapshots per second in memory (this machine's, for orders of magnitude).

    python load-tests/bench_quality.py --repo /path/to/repo[=name] ... [--max-commits 800]
        [--snapshots FILE.jsonl ...] [--json]

``--repo`` defaults to the checkout this file is in. ``--snapshots`` reads snapshots written by
``foresight quality backfill --output`` instead of measuring again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.git_quality import backfill  # noqa: E402
from models.forecast import SeasonalForecaster  # noqa: E402
from models.quality import CommitForecaster, HorizonError, walk_forward  # noqa: E402
from schemas.codec import Codec, Message  # noqa: E402
from streams import topics  # noqa: E402
from streams.engine import Input  # noqa: E402
from streams.quality import QualityProcessor  # noqa: E402
from streams.settings import Settings  # noqa: E402

Record = dict[str, Any]
HORIZONS = (1, 5, 20)
SHOWN = ("mean_complexity", "test_to_code_ratio")


def _forecasters() -> dict[str, Any]:
    return {
        "commit": CommitForecaster(),
        "seasonal": SeasonalForecaster(step_s=7 * 86_400.0),
    }


def _finite(value: float) -> float | None:
    """JSON has no NaN: a figure that could not be measured is null."""
    return value if math.isfinite(value) else None


def _summary(errors: Sequence[HorizonError], horizon: int) -> Record:
    """The figures of one horizon: geometric mean of the relative errors over the metrics that
    moved, mean interval coverage, and the relative error of the alerts' two metrics."""
    at = [e for e in errors if e.horizon == horizon]
    scored = [e.relative for e in at if math.isfinite(e.relative) and e.relative > 0]
    return {
        "relative": _finite(float(np.exp(np.mean(np.log(scored))))) if scored else None,
        "coverage": float(np.mean([e.coverage for e in at])) if at else None,
        "metrics": len(at),
        **{f"{e.metric}_relative": _finite(e.relative) for e in at if e.metric in SHOWN},
    }


def _processor_rate(snapshots: Sequence[Record]) -> float:
    """Snapshots per second through the processor's rules (decode, check, learn, forecast,
    alerts, encode), in memory."""
    codec = Codec()
    inputs = [
        Input(Message(topics.QUALITY.name, 0, k, b"", codec.encode("code_quality_snapshot", s)))
        for k, s in enumerate(snapshots)
    ]
    processor = QualityProcessor(Settings(), codec)
    started = time.perf_counter()
    processor.process(inputs, time.time())
    return len(inputs) / (time.perf_counter() - started)


def measure(name: str, snapshots: list[Record], backfill_s: float | None) -> Record:
    """Every forecaster's walk-forward on one repository's snapshots."""
    result: Record = {
        "repository": name,
        "commits": len(snapshots),
        "first": snapshots[0]["event_time"] if snapshots else None,
        "last": snapshots[-1]["event_time"] if snapshots else None,
        "backfill_commits_per_s": len(snapshots) / backfill_s if backfill_s else None,
        "processor_snapshots_per_s": _processor_rate(snapshots),
        "forecasters": {},
    }
    for label, forecaster in _forecasters().items():
        errors = walk_forward(snapshots, HORIZONS, forecaster=forecaster)
        result["forecasters"][label] = {str(h): _summary(errors, h) for h in HORIZONS}
    return result


def _load(path: str) -> list[Record]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _table(results: Sequence[Record]) -> str:
    rows = [
        "| repository | commits | forecaster | horizon | relative MAE | 90% interval held | "
        "mean complexity | test-to-code ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for label, by_horizon in r["forecasters"].items():
            for h, s in by_horizon.items():
                figures = [s["relative"], s["coverage"], *(s.get(f"{m}_relative") for m in SHOWN)]
                shown = ["-" if f is None else f"{f:.3f}" for f in figures]
                rows.append(
                    f"| {r['repository']} | {r['commits']} | {label} | {h} | "
                    + " | ".join(shown)
                    + " |"
                )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", action="append", default=[], help="PATH or PATH=NAME")
    parser.add_argument("--snapshots", action="append", default=[], help="JSON lines files")
    parser.add_argument("--max-commits", type=int, default=800)
    parser.add_argument("--no-lint", action="store_true", help="leave lint unmeasured")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.repo and not args.snapshots:
        args.repo = [str(ROOT)]
    results = []
    for spec in args.repo:
        path, _, name = spec.partition("=")
        started = time.perf_counter()
        snapshots = list(
            backfill(Path(path), name or None, max_commits=args.max_commits, lint=not args.no_lint)
        )
        elapsed = time.perf_counter() - started
        if not snapshots:
            print(f"bench quality: {path} has no commits", file=sys.stderr)
            return 2
        print(f"  {snapshots[0]['repository']}: {len(snapshots)} commits measured in "
              f"{elapsed:.0f} s", file=sys.stderr)  # fmt: skip
        results.append(measure(snapshots[0]["repository"], snapshots, elapsed))
    for path in args.snapshots:
        snapshots = _load(path)
        results.append(measure(snapshots[0]["repository"], snapshots, None))
    if args.json:
        print(json.dumps({"horizons": HORIZONS, "repositories": results}, indent=2))
    else:
        print(_table(results))
        for r in results:
            rate = r["backfill_commits_per_s"]
            print(
                f"{r['repository']}: backfill "
                + (f"{rate:.1f} commits/s" if rate else "not measured (snapshots file)")
                + f", processor {r['processor_snapshots_per_s']:,.0f} snapshots/s in memory"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
