"""Forecast evaluation on NAB's eleven five-minute CPU series: the model against two baselines.

The protocol, fixed so numbers from different runs and models compare:

- Series: ``data/realAWSCloudwatch/*cpu*.csv`` and
  ``data/realKnownCause/cpu_utilization_asg_misconfiguration.csv`` (columns ``timestamp,value``,
  five-minute steps).
- The model learns every point online, in order, through :class:`models.forecast.SeasonalForecaster`
  (the same class the stream runs); at a forecast origin it has seen only the points before it.
- Origins: every hour (12 steps) from the 70% point of the series to its end. At each origin the
  model forecasts 288 steps (24 h) ahead; steps past the end of the series are dropped.
- Horizons scored: steps 1-12 (``1h``) and steps 1-288 (``24h``).
- Metrics: MASE, the mean absolute error over every scored (origin, step) pair divided by the
  in-sample mean absolute error of the seasonal-naive forecast (m = 288) over the part of the
  series *before the 70% point* (one fixed scale per series, so it never sees the test part);
  and sMAPE in percent, ``200 |f - y| / (|f| + |y|)`` (0 when both are 0), averaged the same way.
- Every forecast (model and baselines) is clipped to [0, 100], the range of a CPU percentage.
- Baselines: naive (the last value, flat) and seasonal naive (the value one day, 288 steps,
  before the target).

The result holds the median and the mean over the series per method, horizon and metric, the
interval coverage of the model, and the per-series numbers. It also holds the coverage of a
new series' intervals (``first_day_coverage``): the model's forecasts from origins every hour
through the series' first day, when its interval trackers have seen few errors and the longer
horizons have none yet, scored the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.base import FloatArray, Forecaster
from models.forecast import SeasonalForecaster
from models.nab import read_series

SEASON = 288
"""Steps in a day at five minutes: the seasonal-naive period and the forecast reach."""
ORIGIN_EVERY = 12
"""Steps between forecast origins: one hour."""
TRAIN_FRACTION = 0.7
"""Share of each series before the first origin; also the part that sets the MASE scale."""
HORIZONS = {"1h": 12, "24h": 288}
"""Scored horizon names and the number of steps each covers, counted from step 1."""
METHODS = ("model", "naive", "seasonal_naive")
METRICS = ("mase", "smape")
CLIP_LOW, CLIP_HIGH = 0.0, 100.0


def nab_cpu_series(data_dir: Path) -> list[Path]:
    """The eleven five-minute CPU files of the protocol, in a fixed order.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` does not hold NAB's ``data/`` folder with those files.
    """
    aws = sorted((data_dir / "data" / "realAWSCloudwatch").glob("*cpu*.csv"))
    asg = data_dir / "data" / "realKnownCause" / "cpu_utilization_asg_misconfiguration.csv"
    if not aws or not asg.is_file():
        raise FileNotFoundError(
            f"no NAB CPU series under {data_dir}: expected data/realAWSCloudwatch/*cpu*.csv and "
            f"{asg.relative_to(data_dir)}; pass the NAB corpus folder (the one holding data/)"
        )
    return [*aws, asg]


def _smape(forecast: FloatArray, truth: FloatArray) -> FloatArray:
    denom = np.abs(forecast) + np.abs(truth)
    safe = np.where(denom > 0, denom, 1.0)
    return np.where(denom > 0, 200.0 * np.abs(forecast - truth) / safe, 0.0)


def evaluate_series(
    times_ms: np.ndarray[Any, np.dtype[np.int64]], values: FloatArray, model: Forecaster
) -> dict[str, Any]:
    """Run the protocol on one series: the model learns online and forecasts at each origin.

    Returns the per-method, per-horizon MASE and sMAPE, the model's interval coverage (share
    of scored truths inside the interval, per horizon) at the test origins and over the first
    day, the MASE scale and the origin count.
    """
    n = len(values)
    first_origin = int(TRAIN_FRACTION * n)
    if first_origin <= SEASON:
        raise ValueError(
            f"series of {n} points is too short: the protocol needs more than "
            f"{SEASON / TRAIN_FRACTION:.0f} so the part before the 70% point spans a season"
        )
    train = values[:first_origin]
    scale = float(np.nanmean(np.abs(train[SEASON:] - train[:-SEASON])))
    if not scale > 0:
        raise ValueError(f"seasonal-naive scale is {scale} (a constant series): MASE undefined")

    state = model.init_state(1)
    steps = np.arange(1, SEASON + 1, dtype=np.int64)
    abs_err: dict[str, list[FloatArray]] = {m: [] for m in METHODS}
    smape: dict[str, list[FloatArray]] = {m: [] for m in METHODS}
    inside: list[FloatArray] = []
    first_day: list[FloatArray] = []
    learned = 0
    early = range(ORIGIN_EVERY, SEASON + 1, ORIGIN_EVERY)
    for origin in [*early, *range(first_origin, n, ORIGIN_EVERY)]:
        for i in range(learned, origin):
            model.learn(state, values[i : i + 1], int(times_ms[i]))
        learned = origin
        reach = min(SEASON, n - origin)
        truth = values[origin : origin + reach]
        mean, lower, upper = model.forecast(state, int(times_ms[origin - 1]), steps[:reach])
        # An unknown interval (NaN bounds) is left out of the coverage, not counted a miss.
        covered = np.where(
            np.isnan(lower[0]) | np.isnan(upper[0]),
            np.nan,
            (lower[0] <= truth) & (truth <= upper[0]),
        )
        if origin < first_origin:
            first_day.append(covered)
            continue
        forecasts = {
            "model": mean[0],
            "naive": np.full(reach, values[origin - 1]),
            "seasonal_naive": values[origin - SEASON : origin - SEASON + reach],
        }
        for method, forecast in forecasts.items():
            clipped = np.clip(forecast, CLIP_LOW, CLIP_HIGH)
            abs_err[method].append(np.abs(clipped - truth))
            smape[method].append(_smape(clipped, truth))
        inside.append(covered)

    def pooled(chunks: list[FloatArray], steps_scored: int) -> float:
        return float(np.nanmean(np.concatenate([c[:steps_scored] for c in chunks])))

    result: dict[str, Any] = {"scale": scale, "origins": len(inside), "points": n}
    for horizon, steps_scored in HORIZONS.items():
        for method in METHODS:
            result[f"{method}.{horizon}.mase"] = pooled(abs_err[method], steps_scored) / scale
            result[f"{method}.{horizon}.smape"] = pooled(smape[method], steps_scored)
        result[f"model.{horizon}.coverage"] = pooled(inside, steps_scored)
        result[f"model.{horizon}.first_day_coverage"] = pooled(first_day, steps_scored)
    return result


def evaluate_forecasts(
    data_dir: Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Score the forecaster and the naive baselines on NAB's CPU series (protocol above).

    Parameters
    ----------
    data_dir
        The NAB corpus folder, the one holding ``data/``.
    progress
        Called with one line of text per series as it finishes, for a command line to print.

    Returns
    -------
    dict
        ``summary``: for each ``method`` (``model``, ``naive``, ``seasonal_naive``), horizon
        (``1h``, ``24h``) and metric (``mase``, ``smape``) the ``median`` and ``mean`` over the
        series, as ``summary[method][horizon][metric] = {"median": ..., "mean": ...}``, plus
        ``summary["model"][horizon]["coverage"]`` and ``["first_day_coverage"]`` for the
        interval (protocol above); ``series``: the per-series numbers keyed by file name;
        ``protocol``: the settings; ``seconds``: wall time.
    """
    started = time.perf_counter()
    per_series: dict[str, dict[str, Any]] = {}
    for path in nab_cpu_series(data_dir):
        timestamps, values = read_series(path)
        times_ms = timestamps.astype(np.int64)
        numbers = evaluate_series(times_ms, values, SeasonalForecaster())
        per_series[path.name] = numbers
        if progress is not None:
            progress(
                f"{path.name}: MASE 1h model {numbers['model.1h.mase']:.3f} "
                f"(seasonal naive {numbers['seasonal_naive.1h.mase']:.3f}), "
                f"24h model {numbers['model.24h.mase']:.3f} "
                f"(seasonal naive {numbers['seasonal_naive.24h.mase']:.3f})"
            )

    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for method in METHODS:
        summary[method] = {}
        for horizon in HORIZONS:
            metrics = list(METRICS)
            if method == "model":
                metrics += ["coverage", "first_day_coverage"]
            summary[method][horizon] = {}
            for metric in metrics:
                column = np.array([s[f"{method}.{horizon}.{metric}"] for s in per_series.values()])
                summary[method][horizon][metric] = {
                    "median": float(np.median(column)),
                    "mean": float(np.mean(column)),
                }
    model = SeasonalForecaster()
    return {
        "summary": summary,
        "series": per_series,
        "protocol": {
            "model": f"{model.name} {model.version}",
            "season_steps": SEASON,
            "origin_every_steps": ORIGIN_EVERY,
            "train_fraction": TRAIN_FRACTION,
            "horizons_steps": HORIZONS,
            "mase_scale": "in-sample seasonal-naive (m=288) MAE before the 70% point",
            "clip": [CLIP_LOW, CLIP_HIGH],
            "interval_coverage_nominal": model.coverage,
        },
        "seconds": time.perf_counter() - started,
    }
