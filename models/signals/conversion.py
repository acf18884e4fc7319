"""The first stage of an entity's pipeline: raw series in, the values worth modelling out.

One :class:`SeriesTable` per entity remembers each series' previous sample, which is what
the conversions need and why they run in the worker (the entity's owner sees its series in
order; Prometheus shards a target's series across requests, so no receiver does):

* a **gauge** is its value;
* a **counter** (a ``COUNTER``, a histogram's ``_bucket``, ``_sum`` and ``_count``, a
  summary's ``_sum`` and ``_count``) is its per-second rate since its previous sample, with
  Prometheus' reset handling: a decrease is a reset, and the increase is the new value. Its
  first sample, and one after a gap longer than the lookback, give no rate yet;
* a **classic histogram** also gives, per scrape, ``family{quantile="0.5"|"0.95"|"0.99"}``
  from its bucket rates (:func:`~models.signals.expressions.bucket_quantile`, which is
  ``histogram_quantile``), and ``family_mean`` = rate of ``_sum`` / rate of ``_count``; a
  summary gives ``family_mean`` the same way (its quantiles are gauges already);
* a series **ends** with Prometheus' staleness marker, or when it has not been seen for the
  lookback (5 minutes, Prometheus' own): it is then left out, never held at its last value.

The state is a float table, one row per series, so a checkpoint is one array and the names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.base import FloatArray
from models.signals.expressions import Sample, bucket_quantile
from models.signals.kinds import MetricKind, infer_kind
from models.signals.series import NAME, parse_series, series_name

QUANTILES = (0.5, 0.95, 0.99)
_KINDS = list(MetricKind)
_KIND, _RATE, _RAW, _RAW_T, _VALUE, _VALUE_T, _FRESH = range(7)
_COLUMNS = 7


def _bound(le: str) -> float:
    try:
        return float(le)
    except ValueError:
        return math.nan  # not a bucket bound: the series is not one of the histogram's buckets


def _is_rate(kind: MetricKind, name: str, labels: dict[str, str]) -> bool:
    """Whether a series of ``kind`` accumulates (its rate is what means something)."""
    if kind is MetricKind.COUNTER:
        return True
    if kind is MetricKind.HISTOGRAM:
        return (name.endswith("_bucket") and "le" in labels) or name.endswith(("_sum", "_count"))
    return kind is MetricKind.SUMMARY and name.endswith(("_sum", "_count"))


@dataclass(frozen=True)
class Scrape:
    """An entity's converted series at one evaluation: parallel samples, names and kinds."""

    samples: list[Sample]
    keys: list[str]
    kinds: list[MetricKind]


@dataclass
class Observed:
    """What :meth:`SeriesTable.observe` could not take: series past the limit, and samples
    not newer than their series' previous one."""

    over_limit: list[str]
    out_of_order: list[str]


class SeriesTable:
    """The conversion state of one entity's series.

    Parameters
    ----------
    max_series
        Series tracked at once (the ``FORESIGHT_MAX_SERIES`` setting); samples of new
        series past it are refused.
    lookback_ms
        A series not seen for this long is gone (Prometheus' lookback delta, 5 minutes).

    Examples
    --------
    >>> table = SeriesTable()
    >>> _ = table.observe(0, ["requests_total"], np.array([100.0]), [MetricKind.UNKNOWN])
    >>> _ = table.observe(10_000, ["requests_total"], np.array([150.0]), [MetricKind.UNKNOWN])
    >>> [(s.labels["__name__"], s.value) for s in table.scrape(10_000).samples]
    [('requests_total', 5.0)]
    """

    def __init__(self, max_series: int = 10_000, lookback_ms: int = 300_000) -> None:
        self.max_series = max_series
        self.lookback_ms = lookback_ms
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.labels: list[dict[str, str]] = []
        self.table: FloatArray = np.full((0, _COLUMNS), np.nan)
        self._groups: tuple[dict[str, list[int]], dict[str, tuple[int, int]]] | None = None
        # Changes whenever rows or kinds do: what is derived from the rows is kept with it.
        self.version = 0
        # The last batch's names and kinds, its rows, and those rows as a slice when they
        # are consecutive gauges (a scrape's usual shape: see observe).
        self._recent: (
            tuple[int, list[str], list[MetricKind], npt.NDArray[np.int64], slice | None] | None
        ) = None
        self._newest_ms = -math.inf  # no sample in the table is newer than this
        # (version, t_ms) when the last batch was the usual one and held every series: the
        # scrape at t_ms is then its values, all fresh (see fresh_values).
        self._whole: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.names)

    # -- input -------------------------------------------------------------------------
    def _row(self, name: str, kind: MetricKind) -> int:
        row = self.index.get(name)
        if row is None:
            if len(self.names) >= self.max_series:
                return -1
            row = len(self.names)
            if row >= self.table.shape[0]:
                grown = np.full((max(8, 2 * row), _COLUMNS), np.nan)
                grown[:row] = self.table[:row]
                self.table = grown
            self.index[name] = row
            self.names.append(name)
            labels = parse_series(name)
            self.labels.append(labels)
            self.table[row] = np.nan
            self.table[row, _FRESH] = 0.0
            self.version += 1
            named = infer_kind(labels[NAME], labels)
            self._set_kind(row, named if kind is MetricKind.UNKNOWN else kind)
        elif kind is not MetricKind.UNKNOWN and _KINDS[int(self.table[row, _KIND])] is not kind:
            self._set_kind(row, kind)
        return row

    def _set_kind(self, row: int, kind: MetricKind) -> None:
        labels = self.labels[row]
        self.table[row, _KIND] = _KINDS.index(kind)
        self.table[row, _RATE] = float(_is_rate(kind, labels[NAME], labels))
        self._groups = None
        self.version += 1

    def observe(
        self, t_ms: int, names: Sequence[str], values: FloatArray, kinds: Sequence[MetricKind]
    ) -> Observed:
        """Take one batch of samples stamped ``t_ms`` (``kinds`` parallel, UNKNOWN where
        the sender did not say)."""
        if len(self.names) >= self.max_series:
            self._compact(t_ms - self.lookback_ms)
        rows, over, gauges = self._rows(names, kinds)
        x = np.asarray(values, dtype=np.float64)
        if gauges is not None and t_ms > self._newest_ms and np.isfinite(x).all():
            # The usual batch: the series of the last one, all gauges, all newer, all values:
            # each takes its sample as its value, in place.
            block = self.table[gauges]
            block[:, _RAW], block[:, _VALUE] = x, x
            block[:, _RAW_T], block[:, _VALUE_T], block[:, _FRESH] = t_ms, t_ms, 1.0
            self._newest_ms = t_ms
            whole = gauges.start == 0 and gauges.stop == len(self.names)
            self._whole = (self.version, t_ms) if whole else None
            return Observed([], [])
        self._newest_ms = max(self._newest_ms, t_ms)
        self._whole = None
        if over:
            rows, x = rows[rows >= 0], x[rows >= 0]
        sub = self.table[rows]  # one gather and one scatter: batches are small, calls cost
        newer = ~(sub[:, _RAW_T] >= t_ms)  # NaN (no previous sample) counts as newer
        late: list[str] = []
        if not newer.all():
            late = [self.names[r] for r in rows[~newer]]
            rows, x, sub = rows[newer], x[newer], sub[newer]
        value = self._rates(t_ms, x, sub) if sub[:, _RATE].any() else x
        has = np.isfinite(value)
        sub[:, _RAW], sub[:, _RAW_T] = x, t_ms
        at = slice(None) if has.all() else has  # the usual batch: every sample has a value
        sub[at, _VALUE], sub[at, _VALUE_T], sub[at, _FRESH] = value[at], t_ms, 1.0
        self.table[rows] = sub
        return Observed(over, late)

    def _rates(self, t_ms: int, x: FloatArray, sub: FloatArray) -> FloatArray:
        """The samples' values: a counter's rate since its previous sample in ``sub`` (its
        rows of the table), a gauge's sample as it is; NaN for a counter with no rate yet."""
        previous, previous_t = sub[:, _RAW], sub[:, _RAW_T]
        with np.errstate(invalid="ignore", divide="ignore"):
            increase = np.where(x >= previous, x - previous, x)
            span_ms = t_ms - previous_t
            rate = np.where(span_ms <= self.lookback_ms, increase * 1000.0 / span_ms, np.nan)
        return np.where(sub[:, _RATE] == 1.0, rate, x)

    def _rows(
        self, names: Sequence[str], kinds: Sequence[MetricKind]
    ) -> tuple[npt.NDArray[np.int64], list[str], slice | None]:
        """The rows of ``names`` (-1 past the limit), the names past it, and the rows as a
        slice when they are consecutive and none is a rate. A batch naming the same series
        with the same kinds as the one before (a scrape's usual shape) reuses its rows."""
        recent = self._recent
        if recent and recent[0] == self.version and recent[1] == names and recent[2] == kinds:
            return recent[3], [], recent[4]
        rows = np.array([self._row(n, k) for n, k in zip(names, kinds, strict=True)], np.int64)
        over = [names[int(i)] for i in np.flatnonzero(rows < 0)]
        if over:
            return rows, over, None
        gauges = None
        consecutive = len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
        if consecutive and not self.table[rows, _RATE].any():
            gauges = slice(int(rows[0]), int(rows[0]) + len(rows))
        self._recent = (self.version, list(names), list(kinds), rows, gauges)
        return rows, over, gauges

    def end(self, names: Sequence[str]) -> None:
        """Staleness markers: these series are gone; a series that comes back starts anew."""
        if not names:
            return
        self._whole = None
        rows = [self.index[n] for n in names if n in self.index]
        self.table[rows, _RAW:_FRESH] = np.nan
        self.table[rows, _FRESH] = 0.0

    # -- output ------------------------------------------------------------------------
    def _evaluate(self, t_ms: int) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Every series' value at ``t_ms`` (NaN once it is gone) and whether it is fresh."""
        table = self.table[: len(self.names)]
        gone = table[:, _VALUE_T] < t_ms - self.lookback_ms
        if gone.any():
            table[gone, _VALUE] = np.nan
        return table[:, _VALUE].copy(), table[:, _FRESH] == 1.0

    def _end_scrape(self, t_ms: int) -> None:
        """No series is fresh any more; series long unseen are forgotten."""
        n = len(self.names)
        table = self.table[:n]
        table[:, _FRESH] = 0.0
        oldest = t_ms - self.lookback_ms
        # More than 64, and more than half, long unseen: an entity of 64 series or fewer
        # (most) need not count them.
        if n > 64 and np.count_nonzero(~(table[:, _RAW_T] >= oldest)) > max(64, n // 2):
            self._compact(oldest)

    def fresh_values(self, t_ms: int) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """What :meth:`scrape` sees of the series themselves, as arrays in row order (the
        rows before this call): each value at ``t_ms`` and whether it is fresh and live.
        The scrape ends as with :meth:`scrape`; the derived series are not computed."""
        if self._whole == (self.version, t_ms):
            # The scrape is the last batch, every series in it: nothing is gone or stale.
            self._whole = None
            values = self.table[: len(self.names), _VALUE].copy()
            self._end_scrape(t_ms)
            return values, np.ones(len(values), dtype=bool)
        values, fresh = self._evaluate(t_ms)
        self._end_scrape(t_ms)
        return values, fresh & np.isfinite(values)

    def scrape(self, t_ms: int) -> Scrape:
        """The converted series at ``t_ms``: every live series' value, and the histogram
        quantiles and means; the series are no longer fresh afterwards."""
        value_array, fresh_array = self._evaluate(t_ms)
        table = self.table[: len(self.names)]
        live = np.flatnonzero(np.isfinite(value_array))
        values = value_array.tolist()
        fresh = fresh_array.tolist()
        kinds = table[:, _KIND].astype(np.int64).tolist()
        samples = [Sample(self.labels[r], values[r], fresh[r]) for r in live]
        keys = [self.names[r] for r in live]
        kind_of = [_KINDS[kinds[r]] for r in live]
        buckets, means = self._derived_groups()
        for members in buckets.values():
            alive = [r for r in members if math.isfinite(values[r])]
            if not alive or not any(fresh[r] for r in alive):
                continue
            bounds = [float(self.labels[r]["le"]) for r in alive]
            rates = [values[r] for r in alive]
            base = {k: v for k, v in self.labels[alive[0]].items() if k != "le"}
            base[NAME] = base[NAME].removesuffix("_bucket")
            for q in QUANTILES:
                value = bucket_quantile(q, bounds, rates)
                if math.isfinite(value):
                    labels = {**base, "quantile": f"{q:g}"}
                    samples.append(Sample(labels, value, True))
                    keys.append(series_name(labels))
                    kind_of.append(MetricKind.HISTOGRAM)
        for mean_name, (total, count) in means.items():
            mean = values[total] / values[count] if values[count] > 0 else math.nan
            if not (fresh[total] or fresh[count]) or not math.isfinite(mean):
                continue
            family = self.labels[count][NAME].removesuffix("_count")
            samples.append(Sample({**self.labels[count], NAME: f"{family}_mean"}, mean, True))
            keys.append(mean_name)
            kind_of.append(_KINDS[kinds[count]])
        self._end_scrape(t_ms)
        return Scrape(samples, keys, kind_of)

    def derives(self) -> bool:
        """Whether any series is a histogram's or summary's part (whose quantiles and means
        the scrape derives)."""
        buckets, means = self._derived_groups()
        return bool(buckets or means)

    def kinds(self) -> list[MetricKind]:
        """Each series' kind, in row order."""
        return [_KINDS[k] for k in self.table[: len(self.names), _KIND].astype(np.int64).tolist()]

    def _derived_groups(self) -> tuple[dict[str, list[int]], dict[str, tuple[int, int]]]:
        """The bucket rows of each histogram, keyed by its family series (``le`` aside);
        the ``(_sum, _count)`` rows of each histogram and summary, keyed by its mean's name."""
        if self._groups is not None:
            return self._groups
        buckets: dict[str, list[int]] = {}
        parts: dict[str, dict[str, int]] = {}
        for row, labels in enumerate(self.labels):
            kind = _KINDS[int(self.table[row, _KIND])]
            name = labels[NAME]
            bucket = name.endswith("_bucket") and not math.isnan(_bound(labels.get("le", "")))
            if kind is MetricKind.HISTOGRAM and bucket:
                family = {k: v for k, v in labels.items() if k != "le"}
                family[NAME] = name.removesuffix("_bucket")
                buckets.setdefault(series_name(family), []).append(row)
            elif kind in (MetricKind.HISTOGRAM, MetricKind.SUMMARY) and name.endswith(
                ("_sum", "_count")
            ):
                family_name, _, part = name.rpartition("_")
                mean = series_name({**labels, NAME: f"{family_name}_mean"})
                parts.setdefault(mean, {})[part] = row
        self._groups = (
            buckets,
            {k: (p["sum"], p["count"]) for k, p in parts.items() if len(p) == 2},
        )
        return self._groups

    def _compact(self, oldest: int) -> None:
        """Forget series not seen since ``oldest`` (pods come and go; state must not grow)."""
        n = len(self.names)
        keep = np.flatnonzero(self.table[:n, _RAW_T] >= oldest)
        self.names = [self.names[r] for r in keep]
        self.labels = [self.labels[r] for r in keep]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.table = self.table[keep].copy()
        self._groups = None
        self.version += 1

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], FloatArray]:
        """A JSON-ready header and the table, for the entity's checkpoint."""
        return {"series": self.names}, self.table[: len(self.names)]

    @classmethod
    def restore(
        cls, header: dict[str, Any], table: FloatArray, max_series: int, lookback_ms: int
    ) -> SeriesTable:
        """The table :meth:`state` saved."""
        restored = cls(max_series, lookback_ms)
        restored.names = list(header["series"])
        restored.index = {name: i for i, name in enumerate(restored.names)}
        restored.labels = [parse_series(name) for name in restored.names]
        restored.table = np.array(table, dtype=np.float64).reshape(-1, _COLUMNS)
        times = restored.table[:, _RAW_T]
        if np.isfinite(times).any():
            restored._newest_ms = float(np.nanmax(times))
        return restored
