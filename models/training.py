"""The batch failure-risk model: training set, temporal cross-validation, XGBoost, evaluation.

Pure: Arrow tables or records in, a model and its report out; no Kafka, no database. The
``foresight train`` command reads the tables from ClickHouse and registers what comes out.

Training set
    One row per FeatureVector (an entity at a window step), with the features the stream
    emits (names ``metric:window:statistic`` of :mod:`models.features`, one column each); the
    target is 1 when a FAILURE label of that entity falls within ``horizon_s`` after the
    row's event time. Rows whose look-ahead reaches past ``label_until_ms`` are left out: their
    labels may not have arrived yet. Rows written by another feature definition (a different
    :func:`~models.features.feature_set_hash`) are left out and counted.
Temporal cross-validation
    Expanding-window folds in time order: the rows are cut into ``folds + 1`` blocks of equal
    row count by event time; fold ``k`` tests on block ``k`` and trains on every row older
    than the block's start minus ``gap_ms``. The gap is at least the horizon, so no training
    label looks into the test period.
Evaluation
    Per fold: AUC-PR (average precision), ROC AUC, precision and recall at the alert
    threshold, Brier score; against two baselines, named for what they are: the training
    prevalence as a constant probability (what a model with no features achieves: ROC AUC 0.5,
    AUC-PR the test prevalence), and, when the online FAILURE_RISK predictions of the
    ``local_trend`` model are given for the same entity and step, that score (a step with no
    such prediction had risk 0: the stream emits one only on a rising trend).
"""

from __future__ import annotations

import hashlib
import json
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from models.alerts import DEFAULT_RULES
from models.base import FloatArray
from models.drift import FeatureReference
from models.explain import Driver, top_contributions
from models.features import (
    STATISTICS,
    WINDOW_NAMES,
    feature_names,
    feature_set_hash,
    vector_names,
)
from models.promotion import promotion_test

Record = dict[str, Any]
IntArray = npt.NDArray[np.int64]

FAILURE_RISK = "failure_risk"
#: The ``kind`` recorded in the registry for an XGBoost binary classifier over features.
XGBOOST_CLASSIFIER = "xgboost-binary-classifier"
SCORING_THREADS = 1
"""XGBoost threads of a loaded model's scoring and SHAP values. One: a call scores a few rows
(a request's, a step's), for which OpenMP costs more than the work, and on a busy 2-core
machine its second thread waits for a core: a row's probability and SHAP values took
18 ms (8.5 ms of CPU) on all cores and 1.2 ms (0.34 ms) on one, and 100 rows 6.7 and 0.5 ms."""
BOOSTER_FILE = "booster.ubj"
REFERENCE_FILE = "feature_reference.npy"
REPORT_FILE = "report.json"
#: Precision and recall are read at the threshold of the ``failure_risk`` alert rule.
ALERT_THRESHOLD = next(rule.threshold for rule in DEFAULT_RULES if rule.name == FAILURE_RISK)


def feature_table(records: Iterable[Record]) -> pa.Table:
    """FeatureVector records as the ClickHouse sink stores them (entity, ts, names, values)."""
    rows = list(records)
    return pa.table(
        {
            "entity": pa.array([r["entity"] for r in rows], pa.string()),
            "ts": pa.array([r["event_time"] for r in rows], pa.int64()),
            "names": pa.array([vector_names(r) for r in rows], pa.list_(pa.string())),
            "values": pa.array([r["values"] for r in rows], pa.list_(pa.float64())),
            "feature_set": pa.array([r.get("feature_set", "") for r in rows], pa.string()),
        }
    )


def label_table(records: Iterable[Record]) -> pa.Table:
    """Label records as the ClickHouse sink stores them (entity, kind, ts)."""
    rows = list(records)
    return pa.table(
        {
            "entity": pa.array([r["entity"] for r in rows], pa.string()),
            "kind": pa.array([r["kind"] for r in rows], pa.string()),
            "ts": pa.array([r["start_time"] for r in rows], pa.int64()),
        }
    )


def _millis(column: pa.ChunkedArray | pa.Array) -> IntArray:
    """Epoch milliseconds of a timestamp or integer column."""
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("ms", tz=column.type.tz)).cast(pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def _require(table: pa.Table, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(
            f"the {what} table lacks columns {missing}; it has {table.column_names} "
            f"(expected the ClickHouse sink's {what} table, or {what} records)"
        )


def _split_name(name: str) -> tuple[str, str, str] | None:
    metric, _, rest = name.rpartition(":")
    metric, _, window = metric.rpartition(":")
    if not metric or window not in WINDOW_NAMES or rest not in STATISTICS:
        return None
    return metric, window, rest


@dataclass(frozen=True)
class TrainingSet:
    """Feature matrix and targets, rows in event-time order.

    ``baseline`` holds the online local-trend risk of each row when it was given;
    ``dropped`` counts the rows left out, by reason.
    """

    matrix: FloatArray
    target: npt.NDArray[np.int8]
    times_ms: IntArray
    entities: list[str]
    features: list[str]
    horizon_s: float
    baseline: FloatArray | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])


def _align(
    names: pa.ChunkedArray, values: pa.ChunkedArray, features: Sequence[str] | None
) -> tuple[FloatArray, list[str], npt.NDArray[np.bool_]]:
    """Rows of (names, values) lists as a matrix over ``features`` (all names seen if None).

    Also returns which rows were well formed (as many names as values).
    """
    names_array = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
    values_array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    lengths = pc.fill_null(pc.list_value_length(names_array), 0).to_numpy()
    value_lengths = pc.fill_null(pc.list_value_length(values_array), 0).to_numpy()
    well_formed = lengths == value_lengths
    lengths = np.where(well_formed, lengths, 0)
    keep_rows = pa.array(well_formed)
    flat_names = pc.list_flatten(names_array.filter(keep_rows))
    flat_values = pc.list_flatten(values_array.filter(keep_rows)).to_numpy(zero_copy_only=False)
    encoded = pc.dictionary_encode(flat_names)
    seen = [str(n) for n in encoded.dictionary.to_pylist()]
    if features is None:
        parsed = [_split_name(n) for n in seen]
        metrics = sorted({p[0] for p in parsed if p is not None})
        present = set(seen)
        features = [n for n in feature_names(metrics) if n in present]
    column_of = {name: j for j, name in enumerate(features)}
    lookup = np.array([column_of.get(n, -1) for n in seen], dtype=np.int64)
    columns = lookup[np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)]
    rows = np.repeat(np.arange(len(lengths)), lengths)
    matrix = np.full((len(lengths), len(features)), np.nan)
    used = columns >= 0
    matrix[rows[used], columns[used]] = np.asarray(flat_values, dtype=np.float64)[used]
    return matrix, list(features), well_formed


def _failure_targets(
    entities: npt.NDArray[np.str_],
    times_ms: IntArray,
    labels: pa.Table,
    horizon_ms: int,
    kinds: Sequence[str],
) -> npt.NDArray[np.int8]:
    """1 where a label of ``kinds`` for the row's entity falls in ``(t, t + horizon]``."""
    # Cast: rows that came as JSON through the sink have no types when there are none.
    kind = labels["kind"].cast(pa.string())
    chosen = labels.filter(pc.fill_null(pc.is_in(kind, pa.array(list(kinds), pa.string())), False))
    label_entities = np.asarray(
        chosen["entity"].cast(pa.string()).to_numpy(zero_copy_only=False), dtype=str
    )
    label_times = _millis(chosen["ts"].cast(pa.int64()) if chosen.num_rows == 0 else chosen["ts"])
    target = np.zeros(len(times_ms), dtype=np.int8)
    for entity in np.unique(label_entities):
        moments = np.sort(label_times[label_entities == entity])
        rows = np.flatnonzero(entities == entity)
        if rows.size == 0:
            continue
        after = np.searchsorted(moments, times_ms[rows], side="right")
        has_next = after < len(moments)
        next_failure = moments[np.minimum(after, len(moments) - 1)]
        target[rows] = has_next & (next_failure - times_ms[rows] <= horizon_ms)
    return target


def build_training_set(
    features: pa.Table | Sequence[Record],
    labels: pa.Table | Sequence[Record],
    horizon_s: float = 1800.0,
    *,
    label_until_ms: int | None = None,
    baseline: pa.Table | None = None,
    kinds: Sequence[str] = ("FAILURE",),
) -> TrainingSet:
    """Rows of features with a "failure within ``horizon_s``" target.

    Parameters
    ----------
    features
        The sink's ``features`` table (``entity``, ``ts``, ``names``, ``values``,
        ``feature_set``), or FeatureVector records.
    labels
        The sink's ``labels`` table (``entity``, ``kind``, ``ts``), or Label records.
    horizon_s
        How far ahead a failure makes a row positive (``FORESIGHT_FAILURE_HORIZON_S``).
    label_until_ms
        Labels are known up to this time; rows whose horizon reaches past it are left out.
        Default: the newest feature row's time.
    baseline
        The online failure-risk scores, one per (``entity``, ``ts``) with column ``score``.
    kinds
        Label kinds that count as a failure.

    Examples
    --------
    >>> rows = [{"entity": "web-1", "event_time": t * 60_000, "names": ["mem:5m:mean"],
    ...          "values": [float(t)], "feature_set": feature_set_hash()} for t in range(120)]
    >>> failure = [{"entity": "web-1", "kind": "FAILURE", "incident_type": "oom",
    ...             "start_time": 100 * 60_000}]
    >>> data = build_training_set(rows, failure, horizon_s=600)
    >>> data.rows, int(data.target.sum()), data.features
    (110, 10, ['mem:5m:mean'])
    """
    table = features if isinstance(features, pa.Table) else feature_table(features)
    label_rows = labels if isinstance(labels, pa.Table) else label_table(labels)
    _require(table, ("entity", "ts", "names", "values"), "features")
    _require(label_rows, ("entity", "kind", "ts"), "labels")
    if horizon_s <= 0:
        raise ValueError(f"the failure horizon must be positive, got {horizon_s} s")
    dropped: dict[str, int] = {}
    if "feature_set" in table.column_names:
        ours = pc.fill_null(
            pc.or_(pc.equal(table["feature_set"], feature_set_hash()),
                   pc.equal(table["feature_set"], "")),
            False,
        )  # fmt: skip
        dropped["other_feature_definition"] = table.num_rows - int(pc.sum(ours).as_py() or 0)
        table = table.filter(ours)
    times = _millis(table["ts"])
    horizon_ms = int(horizon_s * 1000)
    until = (
        label_until_ms if label_until_ms is not None else (int(times.max()) if len(times) else 0)
    )
    known = times + horizon_ms <= until
    dropped["horizon_past_labels"] = int((~known).sum())
    table, times = table.filter(pa.array(known)), times[known]
    order = np.argsort(times, kind="stable")
    table, times = table.take(pa.array(order)), times[order]
    matrix, names, well_formed = _align(table["names"], table["values"], None)
    dropped["names_values_mismatch"] = int((~well_formed).sum())
    matrix, times = matrix[well_formed], times[well_formed]
    table = table.filter(pa.array(well_formed))
    if table.num_rows == 0:
        raise ValueError(
            f"no feature rows to train on ({dropped}); widen the time window, or check that "
            "the stream wrote features with this feature definition "
            f"({feature_set_hash()})"
        )
    entities = np.asarray(table["entity"].to_numpy(zero_copy_only=False), dtype=str)
    target = _failure_targets(entities, times, label_rows, horizon_ms, kinds)
    scores = None
    if baseline is not None and baseline.num_rows:
        _require(baseline, ("entity", "ts", "score"), "baseline")
        keys = pa.table(
            {"entity": pa.array(entities), "ts": pa.array(times), "row": np.arange(len(times))}
        )
        risk = (
            pa.table(
                {
                    "entity": baseline["entity"].cast(pa.string()),
                    "ts": pa.array(_millis(baseline["ts"])),
                    "score": baseline["score"].cast(pa.float64()),
                }
            )
            .group_by(["entity", "ts"])
            .aggregate([("score", "max")])
        )
        joined = keys.join(risk, ["entity", "ts"], join_type="left outer")
        scores = np.zeros(len(times))
        found = joined["score_max"].to_numpy(zero_copy_only=False)
        scores[joined["row"].to_numpy()] = np.nan_to_num(np.asarray(found, dtype=np.float64))
    return TrainingSet(
        matrix,
        target,
        times,
        entities.tolist(),
        names,
        float(horizon_s),
        scores,
        {k: v for k, v in dropped.items() if v},
    )


@dataclass(frozen=True)
class Fold:
    """One temporal fold: row indices, and the time bounds that keep it leak-free."""

    train: IntArray
    test: IntArray
    train_until_ms: int
    test_from_ms: int
    test_until_ms: int


def temporal_folds(times_ms: npt.ArrayLike, folds: int, gap_ms: int) -> list[Fold]:
    """Expanding-window folds over rows sorted or not by ``times_ms``.

    The rows are cut into ``folds + 1`` blocks of about equal row count; fold ``k`` tests on
    block ``k`` and trains on rows strictly older than the block's start minus ``gap_ms``.

    Examples
    --------
    >>> split = temporal_folds(np.arange(100) * 1000, folds=3, gap_ms=5000)
    >>> [(int(f.train.max()), int(f.test.min())) for f in split]
    [(19, 25), (44, 50), (69, 75)]
    """
    times = np.asarray(times_ms, dtype=np.int64)
    if folds < 1 or gap_ms < 0:
        raise ValueError(f"need folds >= 1 and gap_ms >= 0, got folds={folds}, gap_ms={gap_ms}")
    order = np.argsort(times, kind="stable")
    blocks = np.array_split(order, folds + 1)
    out = []
    for k in range(1, folds + 1):
        if blocks[k].size == 0:
            raise ValueError(f"{len(times)} rows are too few for {folds} folds")
        test_from = int(times[blocks[k][0]])
        test_until = int(times[blocks[k][-1]])
        test = np.flatnonzero((times >= test_from) & (times <= test_until))
        train = np.flatnonzero(times < test_from - gap_ms)
        if train.size == 0:
            raise ValueError(
                f"fold {k} of {folds} has no training rows: its test block starts at "
                f"{_iso(test_from)}, less than the gap ({gap_ms / 1000:.0f} s) after the first "
                f"row ({_iso(int(times.min()))}); use fewer folds or a longer time window"
            )
        out.append(Fold(train, test, int(times[train].max()), test_from, test_until))
    return out


def _iso(t_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ms / 1000))


def _roc_auc(y: npt.NDArray[np.int8], p: FloatArray) -> float | None:
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    _, inverse, counts = np.unique(p[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = (ends - counts + 1 + ends) / 2.0  # ties share the mean of their ranks
    ranks = np.empty(len(p))
    ranks[order] = average_rank[inverse]
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(y: npt.NDArray[np.int8], p: FloatArray) -> float | None:
    """Area under the precision-recall curve of scores ``p`` for labels ``y``, as a step
    function with tied scores counted together; None without a positive."""
    positives = int(y.sum())
    if positives == 0:
        return None
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    tp, fp = np.cumsum(ys), np.cumsum(1 - ys)
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]  # one point per threshold
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def classification_metrics(
    target: npt.ArrayLike, probability: npt.ArrayLike, threshold: float = ALERT_THRESHOLD
) -> dict[str, float | None]:
    """AUC-PR (average precision), ROC AUC, precision and recall at ``threshold``, Brier.

    A metric that is undefined on the data (ROC AUC with one class) is None.

    Examples
    --------
    >>> m = classification_metrics([0, 0, 1, 1], [0.1, 0.8, 0.35, 0.9], threshold=0.5)
    >>> m["roc_auc"], m["auc_pr"], m["precision"], m["recall"]
    (0.75, 0.8333333333333333, 0.5, 0.5)
    """
    y = np.asarray(target, dtype=np.int8)
    p = np.asarray(probability, dtype=np.float64)
    alarm = p >= threshold
    hits = int((alarm & (y == 1)).sum())
    return {
        "auc_pr": average_precision(y, p),
        "roc_auc": _roc_auc(y, p),
        "precision": hits / int(alarm.sum()) if alarm.any() else None,
        "recall": hits / int(y.sum()) if y.any() else None,
        "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
    }


@dataclass(frozen=True)
class TrainingConfig:
    """How the failure-risk model is trained and evaluated."""

    folds: int = 4
    threshold: float = ALERT_THRESHOLD
    rounds: int = 200
    max_depth: int = 4
    learning_rate: float = 0.1
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    seed: int = 0
    search_trials: int = 0
    """Optuna trials of hyper-parameter search over the same folds (0: none)."""
    reference_bins: int = 10
    threads: int = 1
    """XGBoost threads. One by default: on this project's 2-core machines, busy with the
    stack, a 100-round fit of 11k rows took 1.3 s on one thread and 12.7 s on two (OpenMP
    threads spin while they wait for a core); raise it on idle cores."""

    def xgboost_params(self) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "aucpr",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "seed": self.seed,
            "nthread": self.threads,
        }


class _Layout:
    """Where a feature layout's values go in a model's matrix: the ``columns`` of the
    features the model reads, from ``positions`` of the vector's values."""

    def __init__(self, columns: npt.NDArray[np.intp], positions: npt.NDArray[np.intp]) -> None:
        self.columns = columns
        self.positions = positions
        self._pick = operator.itemgetter(*positions.tolist()) if len(positions) else None

    def values(self, values: Sequence[float] | FloatArray) -> Any:
        """The values the model reads: a decoded record's list is picked from, not turned
        into an array of all its values first."""
        if isinstance(values, np.ndarray) or self._pick is None:
            return np.asarray(values, dtype=np.float64)[self.positions]
        return self._pick(values)


class FailureRiskModel:
    """An XGBoost classifier of "failure within the horizon" over stream features.

    ``score`` takes FeatureVector records as the stream emits them and aligns their names
    with the model's feature list (a feature the entity lacks is missing, which XGBoost
    handles), so serving features equal training ones by construction.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 1))
    >>> model = FailureRiskModel.fit(x, (x[:, 0] > 1).astype(np.int8), ["mem:5m:slope"],
    ...                              horizon_s=1800, config=TrainingConfig(rounds=20))
    >>> risk = model.score([{"entity": "web-1", "event_time": 0,
    ...                      "names": ["cpu:1m:mean", "mem:5m:slope"], "values": [50.0, 2.5]}])
    >>> bool(risk[0] > 0.5)
    True
    """

    name = FAILURE_RISK

    def __init__(
        self, booster: Any, features: Sequence[str], horizon_s: float, threshold: float
    ) -> None:
        self.booster = booster
        self.features = list(features)
        self.horizon_s = horizon_s
        self.threshold = threshold
        self._column_of = {name: j for j, name in enumerate(self.features)}
        self._layouts: dict[tuple[str, ...], _Layout] = {}

    @classmethod
    def fit(
        cls,
        matrix: FloatArray,
        target: npt.NDArray[np.int8],
        features: Sequence[str],
        horizon_s: float,
        config: TrainingConfig,
        params: Mapping[str, Any] | None = None,
    ) -> FailureRiskModel:
        """Train on ``matrix`` (rows x ``features``); ``params`` override the config's."""
        import xgboost as xgb

        data = xgb.DMatrix(matrix, label=target, missing=np.nan, nthread=config.threads)
        merged = {**config.xgboost_params(), **(params or {})}
        rounds = int(merged.pop("rounds", config.rounds))
        booster = xgb.train(merged, data, num_boost_round=rounds)
        return cls(booster, features, horizon_s, config.threshold)

    def _layout(self, vector: Record) -> _Layout:
        # A vector names its features, or its metrics for the standard layout: the shorter
        # key, since an entity's metrics repeat step after step.
        key = ("metrics", *vector["metrics"]) if vector.get("metrics") else tuple(vector["names"])
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= 4096:  # entities' name lists are few; bound the cache
                self._layouts.clear()
            names = vector_names(vector)
            columns = np.array([self._column_of.get(n, -1) for n in names], dtype=np.intp)
            used = np.flatnonzero(columns >= 0)
            layout = self._layouts[key] = _Layout(columns[used], used)
        return layout

    def matrix(self, feature_vectors: Sequence[Record]) -> FloatArray:
        """FeatureVector records as rows over the model's features (NaN where absent)."""
        out = np.full((len(feature_vectors), len(self.features)), np.nan)
        for i, vector in enumerate(feature_vectors):
            layout = self._layout(vector)
            if len(layout.positions):
                out[i, layout.columns] = layout.values(vector["values"])
        return out

    def score_matrix(self, matrix: FloatArray) -> FloatArray:
        """Failure probability of each row of an aligned matrix."""
        if matrix.shape[0] == 0:
            return np.zeros(0)
        return np.asarray(self.booster.inplace_predict(matrix, missing=np.nan), dtype=np.float64)

    def score(self, feature_vectors: Sequence[Record]) -> FloatArray:
        """Probability of a failure within ``horizon_s`` for each FeatureVector record."""
        return self.score_matrix(self.matrix(feature_vectors))

    def contributions(self, matrix: FloatArray) -> FloatArray:
        """SHAP values of each row of an aligned matrix (XGBoost's ``pred_contribs``): a
        column per feature, then the bias; a row adds up to the log-odds of its probability."""
        import xgboost as xgb

        if matrix.shape[0] == 0:
            return np.zeros((0, len(self.features) + 1))
        data = xgb.DMatrix(matrix, missing=np.nan, nthread=SCORING_THREADS)
        return np.asarray(self.booster.predict(data, pred_contribs=True), dtype=np.float64)

    def explain(
        self, feature_vectors: Sequence[Record], top: int, at_least: float = 0.0
    ) -> tuple[FloatArray, list[list[Driver]]]:
        """Each FeatureVector's probability and its ``top`` drivers by SHAP value (largest
        first), for the rows whose probability is at least ``at_least`` (the others get
        none): the stream and the API explain a prediction with this one function.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(400, 2))
        >>> model = FailureRiskModel.fit(x, (x[:, 0] > 1).astype(np.int8),
        ...     ["mem:5m:slope", "cpu:1m:last"], horizon_s=1800, config=TrainingConfig(rounds=20))
        >>> vector = {"names": ["mem:5m:slope", "cpu:1m:last"], "values": [2.5, 0.0]}
        >>> risk, drivers = model.explain([vector], top=1)
        >>> bool(risk[0] > 0.5), drivers[0][0].feature, drivers[0][0].contribution > 0
        (True, 'mem:5m:slope', True)
        """
        matrix = self.matrix(feature_vectors)
        probabilities = self.score_matrix(matrix)
        explained = np.flatnonzero(probabilities >= at_least)
        rows = matrix[explained]
        found = top_contributions(self.features, rows, self.contributions(rows), top)
        drivers: list[list[Driver]] = [[] for _ in feature_vectors]
        for i, its in zip(explained.tolist(), found, strict=True):
            drivers[i] = its
        return probabilities, drivers

    def booster_bytes(self) -> bytes:
        """The booster in XGBoost's own UBJSON format (safe to load: no code inside)."""
        return bytes(self.booster.save_raw("ubj"))

    @classmethod
    def from_booster_bytes(
        cls, data: bytes, features: Sequence[str], horizon_s: float, threshold: float
    ) -> FailureRiskModel:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        booster.set_param({"nthread": SCORING_THREADS})  # not stored: a loaded model uses all
        return cls(booster, features, horizon_s, threshold)


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def _search(
    data: TrainingSet, folds: list[Fold], config: TrainingConfig, notes: list[str]
) -> dict[str, Any]:
    """Optuna's search for the parameters with the best mean AUC-PR over the folds."""
    if config.search_trials <= 0:
        return {}
    import optuna  # about a second to import: only when a search runs

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: Any) -> float:
        params = {
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "eta": trial.suggest_float("eta", 0.01, 0.3, log=True),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20, log=True),
            "rounds": trial.suggest_int("rounds", 50, 500, log=True),
        }
        scores = []
        for fold in folds:
            model = FailureRiskModel.fit(
                data.matrix[fold.train], data.target[fold.train], data.features,
                data.horizon_s, config, params,
            )  # fmt: skip
            p = model.score_matrix(data.matrix[fold.test])
            scores.append(average_precision(data.target[fold.test], p))
        return _mean(scores) or 0.0

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed)
    )
    study.optimize(objective, n_trials=config.search_trials)
    notes.append(f"optuna: {config.search_trials} trials, best mean AUC-PR {study.best_value:.4f}")
    best: dict[str, Any] = study.best_params
    return best


def train_failure_risk(
    data: TrainingSet, config: TrainingConfig | None = None
) -> tuple[FailureRiskModel, FeatureReference, dict[str, Any]]:
    """Cross-validate in time, train on every row, and report.

    Returns the model trained on all rows, the training distribution of its features (for
    :class:`models.drift.FeatureDrift`) and the evaluation report (plain JSON types).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 2000
    >>> x = rng.normal(size=(n, 2))
    >>> data = TrainingSet(x, (x[:, 0] + 0.3 * rng.normal(size=n) > 1.2).astype(np.int8),
    ...                    np.arange(n) * 10_000, ["h"] * n, ["a:5m:mean", "b:5m:mean"], 60.0)
    >>> model, reference, report = train_failure_risk(data, TrainingConfig(folds=3, rounds=30))
    >>> report["cv"]["mean"]["model"]["roc_auc"] > 0.9
    True
    """
    config = config or TrainingConfig()
    notes: list[str] = []
    gap_ms = int(data.horizon_s * 1000)
    folds = temporal_folds(data.times_ms, config.folds, gap_ms)
    params = _search(data, folds, config, notes)
    contenders: dict[str, Callable[[Fold], FloatArray]] = {
        "model": lambda f: FailureRiskModel.fit(
            data.matrix[f.train], data.target[f.train], data.features, data.horizon_s,
            config, params,
        ).score_matrix(data.matrix[f.test]),
        "prevalence_baseline": lambda f: np.full(
            len(f.test), float(data.target[f.train].mean())
        ),
    }  # fmt: skip
    baseline = data.baseline
    if baseline is not None:
        contenders["local_trend_baseline"] = lambda f: baseline[f.test]
    else:
        notes.append(
            "no online local_trend FAILURE_RISK scores for these rows: the only baseline is "
            "the training prevalence"
        )
    per_fold = []
    for k, fold in enumerate(folds, start=1):
        y = data.target[fold.test]
        row: dict[str, Any] = {
            "fold": k,
            "train_rows": int(fold.train.size),
            "train_positives": int(data.target[fold.train].sum()),
            "train_until": _iso(fold.train_until_ms),
            "test_from": _iso(fold.test_from_ms),
            "test_until": _iso(fold.test_until_ms),
            "test_rows": int(fold.test.size),
            "test_positives": int(y.sum()),
        }
        for name, predict in contenders.items():
            row[name] = classification_metrics(y, predict(fold), config.threshold)
        per_fold.append(row)
        if not y.any():
            notes.append(f"fold {k} has no failure in its test block: AUC-PR and recall undefined")
    mean = {
        name: {
            metric: _mean(row[name][metric] for row in per_fold)
            for metric in ("auc_pr", "roc_auc", "precision", "recall", "brier")
        }
        for name in contenders
    }
    model = FailureRiskModel.fit(
        data.matrix, data.target, data.features, data.horizon_s, config, params
    )
    reference = FeatureReference.fit(data.matrix, config.reference_bins)
    report = {
        "model": FAILURE_RISK,
        "horizon_s": data.horizon_s,
        "threshold": config.threshold,
        "rows": data.rows,
        "positives": int(data.target.sum()),
        "prevalence": float(data.target.mean()),
        "entities": len(set(data.entities)),
        "features": len(data.features),
        "feature_set": feature_set_hash(),
        "since": _iso(int(data.times_ms.min())),
        "until": _iso(int(data.times_ms.max())),
        "dropped_rows": data.dropped,
        "params": {**asdict(config), **params},
        "cv": {"gap_s": gap_ms / 1000, "folds": per_fold, "mean": mean},
        "notes": notes,
    }
    return model, reference, report


def summary_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's headline numbers as a flat map (the ModelUpdate ``metrics`` field)."""
    out = {"rows": float(report["rows"]), "prevalence": float(report["prevalence"])}
    for contender, metrics in report["cv"]["mean"].items():
        prefix = "cv" if contender == "model" else contender
        for metric, value in metrics.items():
            if value is not None:
                out[f"{prefix}_{metric}"] = float(value)
    return out


def feature_list_hash(features: Sequence[str]) -> str:
    """A short hash of a model's ordered feature list (the ModelUpdate ``feature_hash``)."""
    return hashlib.sha256(json.dumps(list(features)).encode()).hexdigest()[:16]


def compare_predictions(
    predictions: pa.Table,
    labels: pa.Table,
    champion: str,
    challenger: str,
    horizon_s: float,
    now_ms: int,
    threshold: float = ALERT_THRESHOLD,
    *,
    alpha: float = 0.05,
    min_gain: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Champion against challenger on the steps both scored whose labels are in.

    ``predictions`` has columns ``entity``, ``ts``, ``model_version`` and ``score`` (the
    sink's ``predictions`` table, filtered to one model's FAILURE_RISK rows); a step counts
    once its horizon has passed by ``now_ms``. Only steps scored by both versions are
    compared, so neither wins by having scored easier moments. ``test`` is the paired
    promotion test over those steps (:func:`models.promotion.promotion_test`, with ``alpha``,
    ``min_gain`` and ``seed``).

    Examples
    --------
    >>> preds = pa.table({"entity": ["a"] * 4, "ts": [0, 0, 60_000, 60_000],
    ...                   "model_version": ["1", "2", "1", "2"], "score": [0.2, 0.9, 0.6, 0.1]})
    >>> fails = pa.table({"entity": ["a"], "kind": ["FAILURE"], "ts": [30_000]})
    >>> result = compare_predictions(preds, fails, "1", "2", 60, now_ms=10**6, threshold=0.5)
    >>> brier = [round(result[side]["brier"], 3) for side in ("champion", "challenger")]
    >>> result["steps"], brier, result["test"]["promote"], result["test"]["reason"]
    (2, [0.5, 0.01], False, 'only 2 labelled steps in common; the test needs at least 30')
    """
    _require(predictions, ("entity", "ts", "model_version", "score"), "predictions")
    _require(labels, ("entity", "kind", "ts"), "labels")
    horizon_ms = int(horizon_s * 1000)

    def side(version: str) -> pa.Table:
        rows = predictions.filter(pc.equal(predictions["model_version"], version))
        return (
            pa.table(
                {
                    "entity": rows["entity"].cast(pa.string()),
                    "ts": pa.array(_millis(rows["ts"])),
                    "score": rows["score"].cast(pa.float64()),
                }
            )
            .group_by(["entity", "ts"])
            .aggregate([("score", "max")])
        )

    both = side(champion).join(
        side(challenger), ["entity", "ts"], join_type="inner", right_suffix="_challenger"
    )
    times = _millis(both["ts"])
    settled = times + horizon_ms <= now_ms
    both = both.filter(pa.array(settled))
    times = times[settled]
    entities = np.asarray(both["entity"].to_numpy(zero_copy_only=False), dtype=str)
    target = _failure_targets(entities, times, labels, horizon_ms, ("FAILURE",))
    champion_scores = np.asarray(both["score_max"].to_numpy(zero_copy_only=False), np.float64)
    challenger_scores = np.asarray(
        both["score_max_challenger"].to_numpy(zero_copy_only=False), np.float64
    )
    test = promotion_test(
        target, champion_scores, challenger_scores, entities=entities, threshold=threshold,
        alpha=alpha, min_gain=min_gain, seed=seed,
    )  # fmt: skip
    return {
        "champion_version": champion,
        "challenger_version": challenger,
        "steps": len(times),
        "failures_within_horizon": int(target.sum()),
        "horizon_s": horizon_s,
        "threshold": threshold,
        "champion": classification_metrics(target, champion_scores, threshold),
        "challenger": classification_metrics(target, challenger_scores, threshold),
        "test": test.as_dict(),
    }
