"""The columnar PredictionBatch: build one, and read one whatever its version.

Version 2 of ``prediction_batch.avsc`` carries predictions as parallel arrays (metric and model
names once, then kinds, indices, horizons, values, scores and bounds), so an entity step with
two hundred predictions encodes as a dozen arrays rather than two hundred records. Version 1
data, with its list of prediction records, still decodes into the current schema: readers
that want one record per prediction call :func:`prediction_rows` (or :func:`as_rows` for the
whole batch) and need not care which version wrote it.

In the columns a missing interval bound is NaN; in rows it is ``None``, as in version 1.

Version 4 adds what drove the predictions, as three more parallel arrays with one item per
driver (``driver_of``, the index of the prediction explained, then the feature or metric and
its signed contribution); a row carries its own as ``drivers``, largest first, and a row of
an older batch has none.

Examples
--------
>>> columns = PredictionColumns()
>>> _ = columns.add("ANOMALY", ("detector", "1"), ["cpu", "mem"], [0.0, 0.0], [12.0, 40.0],
...             [0.1, 0.9])
>>> batch = {"entity": "web-1", **columns.record()}
>>> at = columns.add("ANOMALY", ("entity_anomaly", "1"), ["*"], [0], [0.8], [0.8])
>>> columns.explain(at, [("mem", 0.7), ("cpu", 0.1)])
>>> batch = {"entity": "web-1", **columns.record()}
>>> [(p["metric"], p["score"], p["lower"]) for p in prediction_rows(batch)]
[('cpu', 0.1, None), ('mem', 0.9, None), ('*', 0.8, None)]
>>> prediction_rows(batch)[2]["drivers"]
[{'feature': 'mem', 'contribution': 0.7}, {'feature': 'cpu', 'contribution': 0.1}]
>>> columns.worst("ANOMALY")
(0.9, 'mem')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Record = dict[str, Any]

KINDS: tuple[str, ...] = (
    "ANOMALY", "FORECAST", "FAILURE_RISK", "BOTTLENECK", "DURATION", "SCALING"
)  # fmt: skip
COLUMNS: tuple[str, ...] = (
    "kinds",
    "metric_index",
    "model_index",
    "horizons_s",
    "values",
    "scores",
    "lowers",
    "uppers",
)
NAMES: tuple[str, ...] = ("metrics", "models", "model_versions")
DRIVERS: tuple[str, ...] = ("driver_of", "driver_features", "driver_contributions")


class PredictionColumns:
    """The prediction columns of one batch, filled a kind at a time."""

    def __init__(self) -> None:
        self.metrics: list[str] = []
        self.models: list[str] = []
        self.model_versions: list[str] = []
        self.columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self.drivers: dict[str, list[Any]] = {name: [] for name in DRIVERS}
        self._metric_at: dict[str, int] = {}
        self._model_at: dict[tuple[str, str], int] = {}

    @classmethod
    def of(cls, record: MutableMapping[str, Any]) -> PredictionColumns:
        """The columns of a built batch record, shared: :meth:`add` then grows the record."""
        columns = cls()
        columns.metrics = record["metrics"]
        columns.models = record["models"]
        columns.model_versions = record["model_versions"]
        columns.columns = {name: record[name] for name in COLUMNS}
        columns.drivers = {name: record.setdefault(name, []) for name in DRIVERS}
        columns._metric_at = {m: i for i, m in enumerate(columns.metrics)}
        columns._model_at = {
            (m, v): i
            for i, (m, v) in enumerate(zip(columns.models, columns.model_versions, strict=True))
        }
        return columns

    def highest(self, kind: str) -> dict[tuple[str, str], float]:
        """Each model's highest score of ``kind`` (over its metrics)."""
        out: dict[tuple[str, str], float] = {}
        columns = self.columns
        for k, at, score in zip(
            columns["kinds"], columns["model_index"], columns["scores"], strict=True
        ):
            if k == kind:
                key = (self.models[at], self.model_versions[at])
                out[key] = max(out.get(key, 0.0), score)
        return out

    def __len__(self) -> int:
        return len(self.columns["kinds"])

    def metric(self, name: str) -> int:
        """The index of metric ``name``, added when new."""
        at = self._metric_at.get(name)
        if at is None:
            at = self._metric_at[name] = len(self.metrics)
            self.metrics.append(name)
        return at

    def model(self, name: str, version: str) -> int:
        """The index of a model version, added when new."""
        at = self._model_at.get((name, version))
        if at is None:
            at = self._model_at[(name, version)] = len(self.models)
            self.models.append(name)
            self.model_versions.append(version)
        return at

    def add(
        self,
        kind: str,
        model: tuple[str, str],
        metrics: Sequence[str],
        horizons_s: npt.ArrayLike,
        values: npt.ArrayLike,
        scores: npt.ArrayLike,
        lowers: npt.ArrayLike | None = None,
        uppers: npt.ArrayLike | None = None,
    ) -> int:
        """Predictions of one kind by one model, one per metric (parallel sequences; bounds
        NaN, or None for none at all); returns the index of the first (for :meth:`explain`)."""
        n = len(metrics)
        columns = self.columns
        first = len(columns["kinds"])
        if not n:
            return first
        columns["kinds"] += [kind] * n
        if not self.metrics and len(set(metrics)) == n:  # the first, each once: in their order
            self.metrics += metrics
            self._metric_at.update(zip(metrics, range(n), strict=True))
            columns["metric_index"] += range(n)
        else:
            columns["metric_index"] += [self.metric(m) for m in metrics]
        columns["model_index"] += [self.model(*model)] * n
        columns["horizons_s"] += np.asarray(horizons_s, dtype=np.int64).tolist()
        columns["values"] += _floats(values)
        columns["scores"] += _floats(scores)
        columns["lowers"] += [math.nan] * n if lowers is None else _floats(lowers)
        columns["uppers"] += [math.nan] * n if uppers is None else _floats(uppers)
        return first

    def explain(self, at: int, drivers: Sequence[tuple[str, float]]) -> None:
        """What drove prediction ``at``: (feature or metric, signed contribution) pairs,
        largest first."""
        self.drivers["driver_of"] += [at] * len(drivers)
        self.drivers["driver_features"] += [feature for feature, _ in drivers]
        self.drivers["driver_contributions"] += [float(c) for _, c in drivers]

    def drivers_of(self, at: int) -> list[tuple[str, float]]:
        """What drove prediction ``at``, as given to :meth:`explain`."""
        d = self.drivers
        return [
            (feature, contribution)
            for of, feature, contribution in zip(
                d["driver_of"], d["driver_features"], d["driver_contributions"], strict=True
            )
            if of == at
        ]

    def worst_at(self, kind: str, rank: int = 1, metric: str = "") -> int:
        """The index of the ``rank``-th highest finite score of ``kind`` (of ``metric`` only,
        when given); -1 when fewer than ``rank`` predictions have one."""
        columns = self.columns
        candidates = (
            (score, -i)  # of equal scores, the first added
            for i, (k, score, at) in enumerate(
                zip(columns["kinds"], columns["scores"], columns["metric_index"], strict=True)
            )
            if k == kind and math.isfinite(score) and (not metric or self.metrics[at] == metric)
        )
        if rank == 1:  # the usual rule: the highest alone, without sorting them all
            best = max(candidates, default=None)
            return -1 if best is None else -best[1]
        scored = sorted(candidates, reverse=True)
        return -scored[rank - 1][1] if len(scored) >= rank else -1

    def worst(self, kind: str, rank: int = 1, metric: str = "") -> tuple[float, str]:
        """The ``rank``-th highest finite score of ``kind`` (of ``metric`` only, when given)
        and its metric; ``(0, '')`` when fewer than ``rank`` predictions have one."""
        at = self.worst_at(kind, rank, metric)
        if at < 0:
            return 0.0, ""
        return self.columns["scores"][at], self.metrics[self.columns["metric_index"][at]]

    def record(self) -> Record:
        """The batch's prediction fields."""
        return {
            "predictions": [],
            "metrics": self.metrics,
            "models": self.models,
            "model_versions": self.model_versions,
            **self.columns,
            **self.drivers,
        }


def _floats(values: npt.ArrayLike) -> list[float]:
    floats: list[float] = np.asarray(values, dtype=np.float64).tolist()
    return floats


def _bound(value: float) -> float | None:
    return None if math.isnan(value) else value


def _drivers(batch: Mapping[str, Any]) -> dict[int, list[Record]]:
    """Each explained prediction's drivers, by the prediction's index."""
    out: dict[int, list[Record]] = {}
    for of, feature, contribution in zip(*(batch.get(name, ()) for name in DRIVERS), strict=True):
        out.setdefault(of, []).append({"feature": feature, "contribution": contribution})
    return out


def prediction_rows(batch: Mapping[str, Any], only: str | None = None) -> list[Record]:
    """One record per prediction (version 1's shape, with its ``drivers``), from a batch of
    any version; with ``only``, of the predictions of that kind alone."""
    if batch.get("predictions"):
        return [
            {**p, "drivers": p.get("drivers", [])}
            for p in batch["predictions"]
            if only is None or p["kind"] == only
        ]
    metrics, models, versions = batch["metrics"], batch["models"], batch["model_versions"]
    drivers = _drivers(batch)
    return [
        {
            "metric": metrics[m],
            "kind": kind,
            "model": models[k],
            "model_version": versions[k],
            "horizon_s": horizon,
            "value": value,
            "score": score,
            "lower": _bound(lower),
            "upper": _bound(upper),
            "drivers": drivers.get(i, []),
        }
        for i, (kind, m, k, horizon, value, score, lower, upper) in enumerate(
            zip(*(batch.get(name, ()) for name in COLUMNS), strict=True)
        )
        if only is None or kind == only
    ]


def prediction_columns(batch: Mapping[str, Any]) -> Mapping[str, Any]:
    """The batch's predictions as columns (the names, :data:`COLUMNS` and :data:`DRIVERS`),
    from a batch of any version: a columnar batch is its own, a version 1 batch's records
    are laid out in columns (a missing bound as NaN)."""
    if not batch.get("predictions"):
        return batch
    columns = PredictionColumns()
    for p in batch["predictions"]:
        at = columns.add(
            p["kind"], (p["model"], p["model_version"]), [p["metric"]], [p["horizon_s"]],
            [p["value"]], [p["score"]],
            [math.nan if p["lower"] is None else p["lower"]],
            [math.nan if p["upper"] is None else p["upper"]],
        )  # fmt: skip
        columns.explain(at, [(d["feature"], d["contribution"]) for d in p.get("drivers", ())])
    return columns.record()


def prediction_count(batch: Mapping[str, Any]) -> int:
    """How many predictions a batch of either version carries."""
    return len(batch.get("predictions") or ()) or len(batch.get("kinds") or ())


def as_rows(batch: Mapping[str, Any]) -> Record:
    """The batch in version 1's shape, ``predictions`` as records and no columns: for
    readers that hand it on as JSON (the gateway, ``tail``, the read API)."""
    out = {k: v for k, v in batch.items() if k not in COLUMNS + NAMES + DRIVERS}
    out["predictions"] = prediction_rows(batch)
    return out
