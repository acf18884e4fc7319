"""Rolling-window features per entity x metric, in event time, as compact arrays.

One :class:`FeatureWindows` holds every metric of one entity, in rows of a
:class:`WindowArena` that a worker's entities share (adds queue there and land together
when the windows are read: one numpy pass for a poll batch, not one per record). Each
window (1 min, 5 min, 15 min, 1 h) is a ring of ``BUCKETS`` sub-buckets of
``window / BUCKETS`` seconds; a sample lands in the sub-bucket of its event time, so a late
sample (within the ring) amends the bucket it belongs to, and a window slides one
sub-bucket at a time. Per sub-bucket we keep count, sum, sum of squares, min, max and the
time-weighted sums for a least-squares slope (and its r², the share of the window's
variance the line explains);
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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.arena import Initialiser, IntArray, SeriesArena
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
_FIRST_SLOTS = np.arange(len(WINDOWS_S)) * BUCKETS  # each window's first, flat
_EMPTY = np.zeros(_COLUMNS)
_EMPTY[_MIN], _EMPTY[_MAX] = np.inf, -np.inf  # a bucket that has seen nothing


def _time_terms(t_ms: npt.NDArray[np.int64]) -> tuple[IntArray, IntArray, FloatArray]:
    """For times ``t_ms`` (n,): the sub-bucket id of each in each window ``(n, windows)``,
    its slot in a metric's flattened windows, and its time from its bucket's start (which
    keeps the slope sums well conditioned)."""
    t_s = t_ms[:, None] / 1000.0
    i = np.floor(t_s / _WIDTH)
    ids = i.astype(np.int64)
    return ids, _FIRST_SLOTS + ids % BUCKETS, t_s - i * _WIDTH


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


def window_parts() -> dict[str, Initialiser]:
    """The windows' parts of a series' row in a :class:`~models.arena.SeriesArena`, fresh:
    sub-buckets that have seen nothing (id -1), no last value, no mean."""
    w = len(WINDOWS_S)
    return {
        "window_buckets": lambda n: np.zeros((n, w, BUCKETS, _COLUMNS)),
        "window_ids": lambda n: np.full((n, w, BUCKETS), -1, dtype=np.int64),
        "window_last": lambda n: np.full((n, 2), np.nan),  # value, event time ms
        "window_ewma": lambda n: np.full((n, w), np.nan),
    }


_PARTS = tuple(window_parts())
_Add = tuple[IntArray, int, FloatArray]  # queued: a batch's rows, its time, its values


class WindowArena:
    """The windows of many entities, one arena row per series, and the samples added to
    them since they were last read.

    Adding a batch of samples costs a few dozen numpy calls whatever its size; one call
    per MetricBatch made that the largest cost of a worker. So adds queue here and land
    together, vectorised across entities, before anything reads the windows or takes
    rows (a released row must not receive samples queued for its previous owner). An
    entity's adds land in the order they came, its k-th queued add in round k; different
    entities' rows never meet, so the windows end as if each add had landed at once, bit
    for bit.

    Parameters
    ----------
    states
        The arena of rows, holding :func:`window_parts` (a worker's model states share its
        rows); a small one of its own by default.
    """

    def __init__(self, states: SeriesArena | None = None) -> None:
        self.states = states if states is not None else SeriesArena(window_parts(), rows=8)
        self.row_bytes: int = sum(int(self.states.parts[p][0].nbytes) for p in _PARTS)
        self._rounds: list[list[_Add]] = []
        self.landed = 0  # flushes that landed something: an entity's round count resets

    def take(self, n: int) -> IntArray:
        """``n`` fresh rows (the queue lands first)."""
        self.flush()
        return self.states.take(n)

    def part(self, name: str, rows: IntArray) -> npt.NDArray[Any]:
        """A window part of ``rows`` (a copy), with every queued sample in it."""
        self.flush()
        return self.states.parts[name][rows]

    def store(self, rows: IntArray, parts: Sequence[npt.NDArray[Any]]) -> None:
        """Write the window parts of ``rows`` (in :func:`window_parts`' order): rows just
        taken, which no queued sample names."""
        for name, values in zip(_PARTS, parts, strict=True):
            self.states.parts[name][rows] = values

    def statistics(self, rows: IntArray, now_ms: npt.NDArray[np.int64]) -> FloatArray:
        """:func:`window_statistics` of ``rows``, of one entity or many, each with its own
        ``now_ms``."""
        self.flush()
        p = self.states.parts
        return window_statistics(
            p["window_buckets"][rows],
            p["window_ids"][rows],
            p["window_last"][rows],
            p["window_ewma"][rows],
            now_ms,
        )

    def queue(self, round_: int, rows: IntArray, t_ms: int, x: FloatArray) -> None:
        """Queue samples for ``rows``: in ``round_``, the entity's count of adds queued since
        the last flush (see :meth:`FeatureWindows.add_rows`)."""
        if round_ == len(self._rounds):
            self._rounds.append([])
        self._rounds[round_].append((rows, t_ms, x))

    def flush(self) -> None:
        """Land every queued sample."""
        if not self._rounds:
            return
        rounds, self._rounds = self._rounds, []
        self.landed += 1
        for adds in rounds:
            _land(self.states.parts, adds)


def _land(parts: dict[str, npt.NDArray[Any]], adds: list[_Add]) -> None:
    """Add samples to their rows' windows: ``(rows, t_ms, values)`` per batch, no row in two
    batches."""
    rows = np.concatenate([a[0] for a in adds])
    x = np.concatenate([a[2] for a in adds])
    times = np.fromiter((a[1] for a in adds), np.int64, len(adds))
    batch = np.repeat(np.arange(len(adds)), [len(a[0]) for a in adds])  # each sample's
    ids, slots, in_bucket = (terms.take(batch, axis=0) for terms in _time_terms(times))
    t_ms = times.take(batch)
    # Each sample's sub-bucket in each window, as an index into the flattened buckets: one
    # cell per sample and window, flat (samples x windows), its columns side by side.
    cells = (rows[:, None] * (len(WINDOWS_S) * BUCKETS) + slots).reshape(-1)
    ids = ids.reshape(-1)
    flat = parts["window_buckets"].reshape(-1, _COLUMNS)
    flat_ids = parts["window_ids"].reshape(-1)
    stale = flat_ids.take(cells) != ids
    if stale.any():
        flat[cells[stale]] = _EMPTY
        flat_ids[cells[stale]] = ids[stale]
    b = flat.take(cells, axis=0)
    # One column at a time over every cell: long strided loops (a cell's few columns at a
    # time made numpy loop over short rows, three times the cost).
    xw = np.repeat(x, len(WINDOWS_S))
    t = in_bucket.reshape(-1)
    b[:, _N] += 1.0
    b[:, _SUM] += xw
    b[:, _SQ] += xw * xw
    b[:, _ST] += t
    b[:, _STX] += xw * t
    b[:, _STT] += t * t
    np.minimum(b[:, _MIN], xw, out=b[:, _MIN])
    np.maximum(b[:, _MAX], xw, out=b[:, _MAX])
    _put_rows(flat, cells, b)
    last = parts["window_last"].take(rows, axis=0)
    newer = ~(last[:, 1] > t_ms)  # "last" is by event time: a late sample leaves it
    if not newer.all():
        rows, last, x, t_ms = rows[newer], last[newer], x[newer], t_ms[newer]
    previous_t = last[:, 1]
    dt = np.where(np.isnan(previous_t), np.inf, (t_ms - previous_t) / 1000.0)
    alpha = 1.0 - np.exp(-dt[:, None] / _SECONDS)
    old = parts["window_ewma"].take(rows, axis=0)
    xv = x[:, None]
    _put_rows(parts["window_ewma"], rows, np.where(np.isnan(old), xv, old + alpha * (xv - old)))
    last[:, 0], last[:, 1] = x, t_ms
    _put_rows(parts["window_last"], rows, last)


def _put_rows(array: npt.NDArray[Any], rows: IntArray, values: npt.NDArray[Any]) -> None:
    """``array[rows] = values`` (``array`` of 2 dimensions or more), a row copied whole: in
    a contiguous array each row is one item of a void view, where numpy's row assignment
    copies element by element (twice the time for the windows' 8-value rows)."""
    if not array.flags.c_contiguous:
        array[rows] = values
        return
    item = np.dtype((np.void, array[0].nbytes))
    np.put(array.reshape(-1).view(item), rows, np.ascontiguousarray(values).reshape(-1).view(item))


class FeatureWindows:
    """Rolling windows for the metrics of one entity, in the rows of a :class:`WindowArena`.

    Parameters
    ----------
    max_metrics
        Distinct metric names this entity may have; more are refused (cardinality limit).
    arena
        Where its rows live (a worker's is shared by every entity); its own by default.

    Examples
    --------
    >>> w = FeatureWindows(max_metrics=4)
    >>> admitted = w.add(60_000, ["cpu"], np.array([10.0]))
    >>> _ = w.add(70_000, ["cpu"], np.array([20.0]))
    >>> names, values = w.features(70_000)
    >>> float(dict(zip(names, values))["cpu:1m:mean"])
    15.0
    """

    def __init__(self, max_metrics: int = 64, arena: WindowArena | None = None) -> None:
        self.max_metrics = max_metrics
        self.arena = arena if arena is not None else WindowArena()
        self.metrics: list[str] = []
        self.index: dict[str, int] = {}
        self.rows: IntArray = np.empty(0, dtype=np.int64)  # arena rows, in metrics' order
        self._queued = (-1, 0)  # (the arena's flush count, adds queued since)
        self._names: list[str] = []

    @property
    def buckets(self) -> FloatArray:
        """Sub-buckets of each metric ``(metrics, windows, BUCKETS, columns)`` (a copy)."""
        return self.arena.part("window_buckets", self.rows)

    @property
    def bucket_ids(self) -> npt.NDArray[np.int64]:
        """Each sub-bucket's id ``(metrics, windows, BUCKETS)``: -1 when it has seen nothing."""
        return self.arena.part("window_ids", self.rows)

    @property
    def last(self) -> FloatArray:
        """Each metric's newest sample by event time ``(metrics, 2)``: value, time in ms."""
        return self.arena.part("window_last", self.rows)

    @property
    def ewma(self) -> FloatArray:
        """Each metric's exponentially weighted mean per window ``(metrics, windows)``."""
        return self.arena.part("window_ewma", self.rows)

    def admit(self, names: list[str]) -> tuple[IntArray, list[str]]:
        """Arena rows for ``names``, adding new metrics up to the limit (-1 for those
        refused); also the refused names."""
        if names == self.metrics:  # the usual batch: every metric, in the order first seen
            return self.rows, []
        at = np.empty(len(names), dtype=np.int64)
        refused = []
        new = 0
        for i, name in enumerate(names):
            row = self.index.get(name)
            if row is None:
                if len(self.metrics) >= self.max_metrics:
                    at[i] = -1
                    refused.append(name)
                    continue
                row = self.index[name] = len(self.metrics)
                self.metrics.append(name)
                new += 1
            at[i] = row
        if new:
            self.rows = np.concatenate([self.rows, self.arena.take(new)])
        return np.where(at >= 0, self.rows[at], -1), refused

    def add(self, t_ms: int, names: list[str], values: FloatArray) -> list[str]:
        """Add one batch of samples taken at ``t_ms``; returns metric names refused."""
        rows, refused = self.admit(names)
        if refused:
            kept = rows >= 0
            rows, values = rows[kept], values[kept]
        self.add_rows(t_ms, rows, values)
        return refused

    def add_rows(self, t_ms: int, rows: IntArray, values: FloatArray) -> None:
        """Add samples taken at ``t_ms`` to metrics' rows as :meth:`admit` gave them (they
        land when the windows are next read)."""
        if rows.size == 0:
            return
        landed, queued = self._queued
        round_ = queued if landed == self.arena.landed else 0
        self.arena.queue(round_, rows, t_ms, np.array(values, dtype=np.float64))
        self._queued = (self.arena.landed, round_ + 1)

    def load(
        self,
        metrics: list[str],
        buckets: FloatArray,
        bucket_ids: npt.NDArray[np.int64],
        last: FloatArray,
        ewma: FloatArray,
    ) -> None:
        """Take back windows saved from the four parts (into a FeatureWindows yet empty)."""
        self.metrics = list(metrics)
        self.index = {m: i for i, m in enumerate(self.metrics)}
        self.rows = self.arena.take(len(self.metrics))
        self.arena.store(self.rows, (buckets, bucket_ids, last, ewma))

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
        return self.arena.statistics(self.rows, np.full(len(self.rows), now_ms, dtype=np.int64))


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
    # The live buckets' columns one after another: (columns, rows, windows, buckets).
    columns = np.where(live, np.moveaxis(buckets, -1, 0), 0.0)
    count = _over_buckets(columns[_N])
    total = _over_buckets(columns[_SUM])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.maximum(_over_buckets(columns[_SQ]) / count - mean * mean, 0.0)
        std = np.sqrt(var)
        lo = _over_buckets(np.where(live, buckets[..., _MIN], np.inf), np.minimum)
        hi = _over_buckets(np.where(live, buckets[..., _MAX], -np.inf), np.maximum)
        # Least-squares slope over time: shift the bucket-relative sums to one origin
        # (the start of the newest bucket), which keeps them well conditioned.
        offset = (ids - newest[..., None]) * width[None, :, None]
        n_offset = columns[_N] * offset
        st = columns[_ST] + n_offset
        stx = columns[_STX] + columns[_SUM] * offset
        stt = columns[_STT] + 2 * offset * columns[_ST] + n_offset * offset
        s_t, s_tx, s_tt = _over_buckets(st), _over_buckets(stx), _over_buckets(stt)
        denominator = count * s_tt - s_t * s_t
        slope = np.where(denominator > 1e-9, (count * s_tx - s_t * total) / denominator, 0.0)
        # Share of the window's variance the line explains: a trend, or noise?
        var_t = denominator / (count * count)
        r2 = np.where(var > 1e-12, np.minimum(slope * slope * var_t / var, 1.0), 0.0)
        oldest = np.argmin(np.where(live, ids, np.iinfo(np.int64).max), axis=2)[..., None]
        n_oldest = np.maximum(np.take_along_axis(columns[_N], oldest, 2)[..., 0], 1.0)
        first = np.take_along_axis(columns[_SUM], oldest, 2)[..., 0] / n_oldest
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


def _over_buckets(a: FloatArray, op: np.ufunc = np.add) -> FloatArray:
    """``op`` over the last axis (a window's sub-buckets), first to last: a handful of calls
    over whole arrays, where numpy's reduction over six values at a time loops per window
    (the sums come out the same, added in the same order)."""
    total: FloatArray = op(a[..., 0], a[..., 1])
    for k in range(2, a.shape[-1]):
        op(total, a[..., k], out=total)
    return total


def statistic(grid: FloatArray, name: str, window: str) -> FloatArray:
    """One statistic of one window for every metric, from :meth:`FeatureWindows.grid`."""
    return grid[:, WINDOW_NAMES.index(window), STATISTICS.index(name)]
