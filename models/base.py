"""The small shared verbs every online model speaks.

Models keep no per-series Python objects: the state of ``n`` series is one float64 array of
shape ``(n, state_size)``, so a worker can hold all the metrics of an entity in one array,
update them with one vectorised call, and write them to a Faust table as compact bytes. The
same object scores one series point by point (a backfill, NAB) or many series at once (the
stream); the conformance suite in ``tests/models`` checks that both give the same numbers.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class OnlineModel(Protocol):
    """What every online model has: a name, a version, and a fixed-size state per series."""

    name: str
    version: str

    @property
    def state_size(self) -> int:
        """Floats of state per series (bounded: the state never grows with the stream)."""
        ...

    def init_state(self, n_series: int) -> FloatArray:
        """Fresh state for ``n_series`` series, shape ``(n_series, state_size)``."""
        ...


@runtime_checkable
class AnomalyDetector(OnlineModel, Protocol):
    """Causal anomaly scoring: a point's score depends only on the points before it."""

    def score_learn(self, state: FloatArray, x: FloatArray, t_ms: int) -> FloatArray:
        """Score one new point per series in ``[0, 1]``, then learn it (``state`` in place).

        ``x`` has shape ``(n_series,)``; NaN means "no value this step" and scores 0 without
        changing the state. ``t_ms`` is the points' event time in epoch milliseconds.
        """
        ...


@runtime_checkable
class Forecaster(OnlineModel, Protocol):
    """Learns a series step by step and forecasts it with a prediction interval."""

    def learn(self, state: FloatArray, x: FloatArray, t_ms: int) -> None:
        """Learn one new point per series (``state`` in place); NaN is skipped."""
        ...

    def forecast(
        self, state: FloatArray, t_ms: int, horizons: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mean, lower and upper (each ``(n_series, len(horizons))``) ``horizons`` steps ahead
        of the last learned point at ``t_ms``."""
        ...


def score_series(
    detector: AnomalyDetector, values: npt.ArrayLike, timestamps_ms: npt.ArrayLike
) -> FloatArray:
    """Score one series point by point, as a stream would: the backfill and NAB path."""
    x = np.asarray(values, dtype=np.float64)
    t = np.asarray(timestamps_ms, dtype=np.int64)
    state = detector.init_state(1)
    scores = np.empty(len(x), dtype=np.float64)
    for i in range(len(x)):
        scores[i] = detector.score_learn(state, x[i : i + 1], int(t[i]))[0]
    return scores
