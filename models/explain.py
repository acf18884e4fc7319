"""What drove a prediction: the features each model reads, and a trained model's SHAP values.

The stream's PredictionBatch carries the top drivers of every FAILURE_RISK and entity ANOMALY
prediction (:meth:`schemas.predictions.PredictionColumns.explain`), and an alert's summary
names them for a person (:func:`summary`): "memory_percent slope over 15 m +0.31".

Every online model of the stream (:mod:`models.entity`) predicts one metric from that metric's
own window statistics; :data:`READS` names, per prediction kind, the statistics it reads, and
:func:`read_features` gives them with their values from the step's FeatureVector. They are
what the prediction was made from, not an attribution. A trained XGBoost model reads many
features at once, and its drivers are their SHAP values (:func:`top_contributions`): each
feature's additive share of the log-odds, largest first, so the bias and the shares add up to
the model's output.

Examples
--------
>>> vector = {"cpu:1m:last": 97.0, "cpu:5m:mean": 91.5}
>>> [(d.feature, d.value) for d in read_features("ANOMALY", "cpu", vector)]
[('cpu:1m:last', 97.0)]
>>> import numpy as np
>>> (drivers,) = top_contributions(["a", "b", "c"], np.array([[1.0, np.nan, 3.0]]),
...                                np.array([[0.5, -2.0, 0.1, -1.0]]), top=2)
>>> [(d.feature, d.value, d.contribution) for d in drivers]
[('b', None, -2.0), ('a', 1.0, 0.5)]
>>> summary([("memory_percent:15m:slope", 0.31), ("cpu_percent", -0.042)])
'memory_percent slope over 15 m +0.31, cpu_percent -0.04'
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.base import FloatArray
from models.features import STATISTICS, WINDOW_NAMES

TOP = 3
"""Drivers a stream prediction carries."""
ENTITY_METRIC = "*"
"""The metric of an entity's own predictions (its multivariate anomaly score): it reads every
metric's standardised value, no window feature of a metric of its own."""

READS: dict[str, tuple[str, ...]] = {
    "ANOMALY": ("1m:last",),  # the newest sample, scored against what the detector learnt
    "FORECAST": ("5m:mean",),  # the level the seasonal forecaster learns each forecast step
    "BOTTLENECK": ("1m:last",),  # the usage the exhaustion model follows
    "FAILURE_RISK": ("1m:last", "5m:slope", "15m:slope", "5m:r2", "15m:r2", "15m:count"),
}
"""Per prediction kind, the ``window:statistic`` features of its metric the stream's online
model reads."""


@dataclass(frozen=True)
class Driver:
    """A feature behind a prediction: its value (``None`` when the entity lacks it) and, for
    a trained model, its SHAP contribution to the log-odds."""

    feature: str
    value: float | None
    contribution: float | None = None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@functools.lru_cache(maxsize=65_536)
def features_read(kind: str, metric: str) -> tuple[str, ...]:
    """The names of the features of ``metric`` that the online model of ``kind`` reads; none
    for a kind no online model predicts from windows, nor for the entity's own metric.
    (Cached: an API batch asks for the same few thousand pairs again and again.)"""
    if metric == ENTITY_METRIC:
        return ()
    return tuple(f"{metric}:{read}" for read in READS.get(kind, ()))


def read_features(kind: str, metric: str, features: Mapping[str, float]) -> list[Driver]:
    """The features of ``metric`` that the online model of ``kind`` reads, with their values
    in ``features`` (a FeatureVector as name to value)."""
    return [Driver(name, _finite(features.get(name))) for name in features_read(kind, metric)]


def top_contributions(
    features: Sequence[str], values: FloatArray, contributions: FloatArray, top: int
) -> list[list[Driver]]:
    """Each row's ``top`` features with the largest SHAP contributions, by absolute value.

    ``values`` holds the rows the model scored (NaN where missing), ``contributions`` their
    :meth:`~models.training.FailureRiskModel.contributions` (one per feature, then the bias):
    the rows of a batch are ranked in one call.
    """
    shares = np.asarray(contributions, dtype=np.float64)[:, : len(features)]
    order = np.argsort(-np.abs(shares), axis=1, kind="stable")[:, : max(top, 0)]
    picked = np.take_along_axis(shares, order, axis=1).tolist()
    read = np.take_along_axis(np.asarray(values, dtype=np.float64), order, axis=1).tolist()
    return [
        [
            Driver(features[j], _finite(value), share)
            for j, value, share in zip(at, row_values, row_shares, strict=True)
            if share != 0.0
        ]
        for at, row_values, row_shares in zip(order.tolist(), read, picked, strict=True)
    ]


def describe(feature: str) -> str:
    """A feature's name for a person: ``memory_percent:15m:slope`` is "memory_percent slope
    over 15 m"; a metric's name (an entity anomaly driver) stays as it is."""
    metric, _, rest = feature.rpartition(":")
    head, _, window = metric.rpartition(":")
    if head and window in WINDOW_NAMES and rest in STATISTICS:
        return f"{head} {rest} over {window[:-1]} {window[-1]}"
    return feature


def summary(drivers: Sequence[tuple[str, float]]) -> str:
    """Drivers as an alert's summary names them: "cpu_percent last over 1 m +0.41, ..."."""
    return ", ".join(
        f"{describe(feature)} {contribution:+.2f}" for feature, contribution in drivers
    )
