"""The small shared verbs every online model speaks.

Models keep no per-series Python objects: the state of ``n`` series is one array of ``n``
rows, so a worker can hold all the metrics of an entity in one array, update them with one
vectorised call, and write them to a Faust table as compact bytes. A row is ``state_size``
float64 values, or, for the models whose state is mostly profiles, rings and tables, a
:func:`split_state` row: a float64 head and a float32 bulk, read as float64 and written back
rounded. The same object scores one series point by point (a backfill, NAB) or many series
at once (the stream); the conformance suite in ``tests/models`` checks that both give the
same numbers.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
StateArray = npt.NDArray[Any]
"""The state of ``n`` series: a float64 array ``(n, state_size)`` or ``n`` split rows."""
FLOAT32_MAX = float(np.finfo(np.float32).max)


@runtime_checkable
class OnlineModel(Protocol):
    """What every online model has: a name, a version, and a fixed-size state per series."""

    name: str
    version: str

    @property
    def state_size(self) -> int:
        """Floats of state per series (bounded: the state never grows with the stream)."""
        ...

    def init_state(self, n_series: int) -> StateArray:
        """Fresh state for ``n_series`` series, one row each."""
        ...


@runtime_checkable
class AnomalyDetector(OnlineModel, Protocol):
    """Causal anomaly scoring: a point's score depends only on the points before it."""

    def score_learn(self, state: StateArray, x: FloatArray, t_ms: int) -> FloatArray:
        """Score one new point per series in ``[0, 1]``, then learn it (``state`` in place).

        ``x`` has shape ``(n_series,)``; NaN means "no value this step" and scores 0 without
        changing the state. ``t_ms`` is the points' event time in epoch milliseconds.
        """
        ...


@runtime_checkable
class Forecaster(OnlineModel, Protocol):
    """Learns a series step by step and forecasts it with a prediction interval."""

    def learn(self, state: StateArray, x: FloatArray, t_ms: int) -> None:
        """Learn one new point per series (``state`` in place); NaN is skipped."""
        ...

    def forecast(
        self, state: StateArray, t_ms: int, horizons: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mean, lower and upper (each ``(n_series, len(horizons))``) ``horizons`` steps ahead
        of the last learned point at ``t_ms``."""
        ...


def split_state(n_series: int, head: int, bulk: int) -> StateArray:
    """``n_series`` zeroed rows of ``head`` float64 and ``bulk`` float32 values.

    The head holds what float32 would spoil (counters, running means that move by small
    steps, values beyond float32's range); the bulk (profiles, rings, tables) halves its bytes
    at float32's seven significant digits. :func:`as_float64` reads rows, :func:`store_rows`
    writes them.

    Examples
    --------
    >>> state = split_state(2, head=1, bulk=2)
    >>> store_rows(state, np.array([1]), np.array([[1e300, 0.1, -1e300]]))
    >>> as_float64(state).tolist()[1]
    [1e+300, 0.10000000149011612, -3.4028234663852886e+38]
    """
    dtype = np.dtype([("head", np.float64, (head,)), ("bulk", np.float32, (bulk,))])
    return np.zeros(n_series, dtype=dtype)


def as_float64(state: StateArray) -> FloatArray:
    """Rows of a state as one float64 array ``(n, state_size)``: a split row's head, then its
    bulk (the layout a model computes in, and the one saved)."""
    if state.dtype.names is None:
        return np.asarray(state, dtype=np.float64)
    return np.concatenate([state["head"], state["bulk"].astype(np.float64)], axis=1)


def as_float32(values: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``values`` rounded to float32, clipped to its range (NaN stays NaN, infinities become
    the largest finite float32), as a split state's bulk stores them."""
    return np.clip(values, -FLOAT32_MAX, FLOAT32_MAX).astype(np.float32)


def store_rows(state: StateArray, rows: npt.NDArray[np.int64], values: FloatArray) -> None:
    """Write float64 rows in :func:`as_float64`'s layout to the split rows ``state[rows]``,
    the bulk rounded by :func:`as_float32`."""
    head = state.dtype["head"].shape[0]
    state["head"][rows] = values[:, :head]
    state["bulk"][rows] = as_float32(values[:, head:])


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
