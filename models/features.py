"""Rolling-window features per entity x metric, in event time, as compact arrays.

One :class:`FeatureWindows` holds every metric of one entity. Each window (1 min, 5 min,
15 min, 1 h) is a ring of ``BUCKETS`` sub-buckets of ``window / BUCKETS`` seconds; a sample
lands in the sub-bucket of its event time, so a late sample (within the ring) amends the
bucket it belongs to, and a window slides one sub-bucket at a time. Per sub-bucket we keep
count, sum, sum of squares, min, max and the time-weighted sums for a least-squares slope
(and its r², the share of the window's variance the line explains);
per metric, the last value and an exponentially weighted mean per window.

The same definition computes features in the stream, in a backfill and for training
(:data:`FEATURE_NAMES`, :func:`feature_set_hash`), so serving features equal training ones.

The p95 is approximate: the normal approximation ``mean + 1.645 std`` clipped to the window's
maximum. It is cheap and exact enough to rank and alert on; an exact quantile would need the
samples themselves.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.base import FloatArray

WINDOWS_S: tuple[int, ...] = (60, 300, 900, 3600)
WINDOW_NAMES: tuple[str, ...] = ("1m", "5m", "15m", "1h")
BUCKETS = 6
STATISTICS: tuple[str, ...] = (
    "count", "mean", "std", "min", "max", "last", "ewma", "slope", "r2", "roc", "p95",
)  # fmt: skip
# Sub-bucket columns.
_N, _SUM, _SQ, _MIN, _MAX, _ST, _STX, _STT = range(8)
_COLUMNS = 8
_Z95 = 1.6448536269514722
_SECONDS = np.asarray(WINDOWS_S, dtype=np.float64)
_WIDTH = _SECONDS / BUCKETS  # seconds per sub-bucket, per window
_FIRST_SLOTS = [w * BUCKETS for w in range(len(WINDOWS_S))]  # each window's first, flat
_EMPTY = np.zeros(_COLUMNS)
_EMPTY[_MIN], _EMPTY[_MAX] = np.inf, -np.inf  # a bucket that has seen nothing
_WIDTHS = _WIDTH.tolist()


def _time_terms(t_ms: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], FloatArray]:
    """The sub-bucket id of ``t_ms`` in each window, its slot in a metric's flattened
    windows, and its time in each bucket ``(t, t, t²)`` for the slope sums (time from the
    bucket's start keeps them well conditioned). Python floats: for four windows they cost
    less than arrays, with the same IEEE arithmetic."""
    t_s = t_ms / 1000.0
    ids: list[int] = []
    slots: list[int] = []
    times: list[float] = []
    for first, width in zip(_FIRST_SLOTS, _WIDTHS, strict=True):
        i = math.floor(t_s / width)
        t = t_s - i * width
        ids.append(i)
        slots.append(first + i % BUCKETS)
        times += (t, t, t * t)
    return np.array(ids), np.array(slots), np.array(times).reshape(len(WINDOWS_S), 3)


def _sample_terms(x: FloatArray) -> FloatArray:
    """``(1, x, 1, x, x²)`` per sample: ``[:, 2:]`` is what a sample adds to count, sum and
    sum of squares, ``[:, :3]`` what multiplies its time terms (see :func:`_time_terms`)."""
    terms = np.empty((x.size, 5))
    terms[:, 0:3:2] = 1.0
    terms[:, 1::2] = x[:, None]
    np.multiply(x, x, out=terms[:, 4])
    return terms


def feature_names(metrics: list[str]) -> list[str]:
    """``metric:window:statistic`` for every feature of ``metrics``, in emission order."""
    return [
        f"{metric}:{window}:{stat}"
        for metric in metrics
        for window in WINDOW_NAMES
        for stat in STATISTICS
    ]


def vector_names(record: Mapping[str, Any]) -> list[str]:
    """The feature names of a FeatureVector record of either version: its ``names``, or
    those of the standard layout over its ``metrics`` (shared lists: do not change them)."""
    names: list[str] = record.get("names") or _layout_names(tuple(record.get("metrics") or ()))
    return names


def vector_positions(record: Mapping[str, Any]) -> Mapping[str, int]:
    """Each feature name of a FeatureVector record to its index in ``values`` (shared for the
    standard layout: do not change it)."""
    names = record.get("names")
    if names:
        return {name: at for at, name in enumerate(names)}
    return _layout_positions(tuple(record.get("metrics") or ()))


@functools.lru_cache(maxsize=4096)
def _layout_names(metrics: tuple[str, ...]) -> list[str]:
    # An entity's metrics repeat step after step: expand each list once.
    return feature_names(list(metrics))


@functools.lru_cache(maxsize=4096)
def _layout_positions(metrics: tuple[str, ...]) -> dict[str, int]:
    return {name: at for at, name in enumerate(_layout_names(metrics))}


def feature_set_hash() -> str:
    """A short hash of the feature definition, recorded with features and models."""
    definition = repr((WINDOWS_S, BUCKETS, STATISTICS))
    return hashlib.sha256(definition.encode()).hexdigest()[:12]


@dataclass
class FeatureWindows:
    """Rolling windows for the metrics of one entity.

    Parameters
    ----------
    max_metrics
        Distinct metric names this entity may have; more are refused (cardinality limit).

    Examples
    --------
    >>> w = FeatureWindows(max_metrics=4)
    >>> admitted = w.add(60_000, ["cpu"], np.array([10.0]))
    >>> _ = w.add(70_000, ["cpu"], np.array([20.0]))
    >>> names, values = w.features(70_000)
    >>> float(dict(zip(names, values))["cpu:1m:mean"])
    15.0
    """

    max_metrics: int = 64
    metrics: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    buckets: FloatArray = field(init=False)  # (metrics, windows, BUCKETS, columns)
    bucket_ids: npt.NDArray[np.int64] = field(init=False)  # (metrics, windows, BUCKETS)
    last: FloatArray = field(init=False)  # (metrics, 2): value, event time ms
    ewma: FloatArray = field(init=False)  # (metrics, windows)
    _names: list[str] = field(init=False, default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.reserve(min(8, self.max_metrics))

    def reserve(self, rows: int) -> None:
        """Grow the arrays to ``rows`` metrics (state is sized to the metrics seen)."""
        w = len(WINDOWS_S)
        old = len(self.metrics)
        buckets = np.zeros((rows, w, BUCKETS, _COLUMNS))
        bucket_ids = np.full((rows, w, BUCKETS), -1, dtype=np.int64)
        last = np.full((rows, 2), np.nan)
        ewma = np.full((rows, w), np.nan)
        if old:
            buckets[:old], bucket_ids[:old] = self.buckets[:old], self.bucket_ids[:old]
            last[:old], ewma[:old] = self.last[:old], self.ewma[:old]
        self.buckets, self.bucket_ids, self.last, self.ewma = buckets, bucket_ids, last, ewma

    @property
    def capacity(self) -> int:
        return int(self.buckets.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays, every reserved metric row included."""
        return sum(a.nbytes for a in (self.buckets, self.bucket_ids, self.last, self.ewma))

    def admit(self, names: list[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
        """Row indices for ``names``, adding new metrics up to the limit; also the refused."""
        if names == self.metrics:  # the usual batch: every metric, in the order first seen
            return np.arange(len(names)), []
        rows = np.empty(len(names), dtype=np.int64)
        refused = []
        for i, name in enumerate(names):
            row = self.index.get(name)
            if row is None:
                if len(self.metrics) >= self.max_metrics:
                    rows[i] = -1
                    refused.append(name)
                    continue
                row = len(self.metrics)
                if row >= self.capacity:  # room for the rest of the batch, or twice as much
                    rest = row + len(names) - i
                    self.reserve(min(self.max_metrics, max(2 * self.capacity, rest)))
                self.index[name] = row
                self.metrics.append(name)
            rows[i] = row
        return rows, refused

    def add(self, t_ms: int, names: list[str], values: FloatArray) -> list[str]:
        """Add one batch of samples taken at ``t_ms``; returns metric names refused."""
        rows, refused = self.admit(names)
        x = values
        if refused:
            keep = rows >= 0
            rows, x = rows[keep], values[keep]
        if rows.size == 0:
            return refused
        ids, slots, moments = _time_terms(t_ms)
        # Each sample's sub-bucket in each window, as an index into the flattened buckets.
        cells = rows[:, None] * (len(WINDOWS_S) * BUCKETS) + slots
        flat = self.buckets.reshape(-1, _COLUMNS)
        flat_ids = self.bucket_ids.reshape(-1)
        stale = flat_ids[cells] != ids
        if stale.any():
            flat[cells[stale]] = _EMPTY
            flat_ids[cells[stale]] = np.broadcast_to(ids, cells.shape)[stale]
        b = flat[cells]  # (k, windows, columns)
        terms = _sample_terms(x)[:, None, :]
        b[..., _N : _SQ + 1] += terms[..., 2:]
        b[..., _ST : _STT + 1] += terms[..., :3] * moments
        xv = x[:, None]
        np.minimum(b[..., _MIN], xv, out=b[..., _MIN])
        np.maximum(b[..., _MAX], xv, out=b[..., _MAX])
        flat[cells] = b
        # The usual batch (every metric, in order) reads and writes the rows in place.
        at: slice | npt.NDArray[np.int64] = slice(0, rows.size) if names == self.metrics else rows
        last = self.last[at]
        newer = ~(last[:, 1] > t_ms)
        if not newer.all():
            at, last, x = rows[newer], last[newer], x[newer]
            if x.size == 0:
                return refused
        previous_t = last[:, 1]
        dt = np.where(np.isnan(previous_t), np.inf, (t_ms - previous_t) / 1000.0)
        alpha = 1.0 - np.exp(-dt[:, None] / _SECONDS)
        old = self.ewma[at]
        xv = x[:, None]
        self.ewma[at] = np.where(np.isnan(old), xv, old + alpha * (xv - old))
        last[:, 0], last[:, 1] = x, t_ms
        self.last[at] = last
        return refused

    def names(self) -> list[str]:
        """Feature names in the order of ``grid(...).reshape(-1)`` (cached)."""
        if len(self._names) != len(self.metrics) * len(WINDOWS_S) * len(STATISTICS):
            self._names = feature_names(self.metrics)
        return self._names

    def features(self, now_ms: int) -> tuple[list[str], FloatArray]:
        """Every feature of every metric for the windows ending at ``now_ms``, flat."""
        return self.names(), self.grid(now_ms).reshape(-1)

    def grid(self, now_ms: int) -> FloatArray:
        """Statistics of the windows ending at ``now_ms``: ``(metrics, windows, statistics)``."""
        n = len(self.metrics)
        return window_statistics(
            self.buckets[:n],
            self.bucket_ids[:n],
            self.last[:n],
            self.ewma[:n],
            np.full(n, now_ms, dtype=np.int64),
        )


def window_statistics(
    buckets: FloatArray,
    bucket_ids: npt.NDArray[np.int64],
    last: FloatArray,
    ewma: FloatArray,
    now_ms: npt.NDArray[np.int64],
) -> FloatArray:
    """Statistics of every window of every series row, ``(rows, windows, statistics)``.

    The rows may come from many entities stacked together, each with its own ``now_ms``
    (one per row): the worker computes every due entity's features in one call. Buckets
    older than a window are left out, so an idle entity's windows empty out as the
    watermark advances.
    """
    width = np.asarray(WINDOWS_S, dtype=np.float64) / BUCKETS  # (windows,)
    newest = np.floor(now_ms[:, None] / 1000.0 / width[None, :]).astype(np.int64)  # (rows, w)
    ids = bucket_ids
    live = (ids > newest[..., None] - BUCKETS) & (ids <= newest[..., None])
    b = np.where(live[..., None], buckets, 0.0)
    count = b[..., _N].sum(axis=2)
    total = b[..., _SUM].sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.maximum(b[..., _SQ].sum(axis=2) / count - mean * mean, 0.0)
        std = np.sqrt(var)
        lo = np.minimum.reduce(buckets[..., _MIN], axis=2, where=live, initial=np.inf)
        hi = np.maximum.reduce(buckets[..., _MAX], axis=2, where=live, initial=-np.inf)
        # Least-squares slope over time: shift the bucket-relative sums to one origin
        # (the start of the newest bucket), which keeps them well conditioned.
        offset = (ids - newest[..., None]) * width[None, :, None]
        n_offset = b[..., _N] * offset
        st = b[..., _ST] + n_offset
        stx = b[..., _STX] + b[..., _SUM] * offset
        stt = b[..., _STT] + 2 * offset * b[..., _ST] + n_offset * offset
        s_t, s_tx, s_tt = st.sum(axis=2), stx.sum(axis=2), stt.sum(axis=2)
        denominator = count * s_tt - s_t * s_t
        slope = np.where(denominator > 1e-9, (count * s_tx - s_t * total) / denominator, 0.0)
        # Share of the window's variance the line explains: a trend, or noise?
        var_t = denominator / (count * count)
        r2 = np.where(var > 1e-12, np.minimum(slope * slope * var_t / var, 1.0), 0.0)
        oldest = np.argmin(np.where(live, ids, np.iinfo(np.int64).max), axis=2)[..., None]
        n_oldest = np.maximum(np.take_along_axis(b[..., _N], oldest, 2)[..., 0], 1.0)
        first = np.take_along_axis(b[..., _SUM], oldest, 2)[..., 0] / n_oldest
        first_t = np.take_along_axis(st, oldest, 2)[..., 0] / n_oldest
        last_value = last[:, 0]
        last_t = last[:, 1, None] / 1000.0 - newest * width[None, :]
        span = last_t - first_t
        roc = np.where(span > 0, (last_value[:, None] - first) / span, 0.0)
        p95 = np.minimum(mean + _Z95 * std, hi)
    empty = count == 0
    stats = np.empty((*count.shape, len(STATISTICS)))
    for k, column in enumerate(
        (count, mean, std, lo, hi, last_value[:, None], ewma, slope, r2, roc, p95)
    ):  # in STATISTICS' order
        stats[..., k] = column
    stats[empty, 1:] = np.nan
    stats[empty, 0] = 0.0
    return stats


def statistic(grid: FloatArray, name: str, window: str) -> FloatArray:
    """One statistic of one window for every metric, from :meth:`FeatureWindows.grid`."""
    return grid[:, WINDOW_NAMES.index(window), STATISTICS.index(name)]
