"""Everything Foresight knows about one entity, and what it predicts at each window step.

:class:`EntityPipeline` holds an entity's rolling windows and the state of every online model
and alert rule for it, as arrays; :meth:`EntityPipeline.step` turns them into the step's
FeatureVector, PredictionBatch and Alert records. The shared, stateless model objects live in
a :class:`ModelSet`. Nothing here touches Kafka or a database: the Faust worker calls
``add`` and ``step``, and a backfill or a test calls the same methods.

State serialises to compact bytes in two parts (:meth:`EntityPipeline.windows_bytes`,
:meth:`EntityPipeline.models_bytes`), written to the worker's changelogs at most once per
pass, not once per sample.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cramjam
import numpy as np
import numpy.typing as npt

from models.alerts import DEFAULT_RULES, AlertRule, AlertState, evaluate, worst
from models.anomaly import StreamingAnomalyDetector
from models.base import FloatArray
from models.bottleneck import ExhaustionModel
from models.features import (
    STATISTICS,
    FeatureWindows,
    feature_set_hash,
    statistic,
    window_statistics,
)
from models.forecast import SeasonalForecaster
from models.signals import MetricKind, SignalRules, SignalStage, StageOutput

Record = dict[str, Any]
_MAGIC = b"FSE2"


@dataclass(frozen=True)
class _ModelName:
    name: str
    version: str


_LOCAL_TREND = _ModelName("local_trend", "1")
_DAY_BUCKETS = 96  # quarter hours, the detector's default


@dataclass(frozen=True)
class PipelineConfig:
    """How an entity is featurised and predicted (from the settings)."""

    step_s: float = 10.0
    forecast_step_s: float = 300.0
    horizons_s: tuple[int, ...] = (300, 3600, 86_400)
    failure_horizon_s: float = 1800.0
    max_metrics: int = 64
    anomaly_warmup_steps: int = 120
    exhaustion_memory_s: float = 21_600.0
    trend_r2: float = 0.6
    trend_min_samples: int = 12
    capacities: Mapping[str, float] = field(
        default_factory=lambda: {"memory_percent": 100.0, "disk_used_percent": 100.0}
    )
    rules: tuple[AlertRule, ...] = DEFAULT_RULES
    signal_rules: SignalRules = field(default_factory=SignalRules.shipped)
    max_series: int = 10_000
    series_lookback_s: float = 300.0


@dataclass(frozen=True)
class BatchModel:
    """A trained model scoring FeatureVector records (an XGBoost failure-risk version)."""

    name: str
    version: str
    horizon_s: int
    score: Callable[[Sequence[Record]], FloatArray]
    shadow: bool = False


class ModelSet:
    """The shared model objects of a worker: stateless, so one serves every entity."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        # The detector's defaults are tuned for NAB, which scores the first detection of
        # each anomaly: a value beyond the range seen scores 1, and 100 points after a
        # detection stay silent. A stream alerts differently: the alert rule deduplicates
        # and holds an episode, and a host's range grows with its daily cycle for days, so
        # here novelty does not score on its own and there is no silence after a detection.
        # Its seasonal profile trusts a time-of-day bucket after ``season_min`` visits, which
        # on 5-minute data means days; at a step of seconds a bucket fills in minutes, so
        # trust it only after two days' worth of visits.
        visits_per_day = 86_400 / _DAY_BUCKETS / config.step_s
        self.detector = StreamingAnomalyDetector(
            warmup=config.anomaly_warmup_steps,
            novelty_margin=math.inf,
            quiet_steps=0,
            day_buckets=_DAY_BUCKETS,
            season_min=max(4, round(2 * visits_per_day)),
            calibrated_start=True,
        )
        self.forecaster = SeasonalForecaster(step_s=config.forecast_step_s)
        self.bottleneck = ExhaustionModel(memory_s=config.exhaustion_memory_s)
        self.resources = tuple(config.capacities)
        self.capacity = np.array([config.capacities[r] for r in self.resources])
        self.horizon_steps = np.array(
            [max(1, round(h / config.forecast_step_s)) for h in config.horizons_s], dtype=np.int64
        )
        self.feature_set = feature_set_hash()


class EntityPipeline:
    """Windows and model state of one entity.

    Examples
    --------
    >>> models = ModelSet(PipelineConfig())
    >>> p = EntityPipeline("web-1", models)
    >>> _ = p.add(600_000, ["cpu_percent"], np.array([12.0]))
    >>> features, predictions, alerts = p.step(600_000)
    >>> features["names"][:2], [x["kind"] for x in predictions["predictions"]][:1]
    (['cpu_percent:1m:count', 'cpu_percent:1m:mean'], ['ANOMALY'])
    """

    def __init__(self, entity: str, models: ModelSet) -> None:
        self.entity = entity
        self.models = models
        cfg = models.config
        self.windows = FeatureWindows(max_metrics=cfg.max_metrics)
        self.stage = SignalStage(
            cfg.signal_rules, cfg.max_series, int(cfg.series_lookback_s * 1000)
        )
        self.labels: dict[str, str] = {}
        self.anomaly = models.detector.init_state(self.windows.capacity)
        self.forecast = models.forecaster.init_state(self.windows.capacity)
        self.forecasts = self._no_forecasts(self.windows.capacity)
        self.bottleneck = models.bottleneck.init_state(len(models.resources))
        self.alerts = {rule.name: AlertState() for rule in cfg.rules}
        self.last_step_ms = 0
        self.last_forecast_ms = 0
        # Scaled error of the forecasts checked at the latest forecast step (NaN until then):
        # the worker watches it for drift.
        self.forecast_error = math.nan
        # Kafka offset of the newest record in the windows: a record replayed after a crash
        # (at or below it) is already counted and is skipped, so nothing counts twice.
        self.last_offset = -1

    def _fit_states(self) -> None:
        """Grow the per-metric model states with the windows (new rows start fresh)."""
        rows = self.windows.capacity
        extra = rows - self.anomaly.shape[0]
        if extra > 0:
            models = self.models
            self.anomaly = np.concatenate([self.anomaly, models.detector.init_state(extra)])
            self.forecast = np.concatenate([self.forecast, models.forecaster.init_state(extra)])
            self.forecasts = np.concatenate([self.forecasts, self._no_forecasts(extra)])

    def _no_forecasts(self, rows: int) -> FloatArray:
        """Latest forecasts per metric and horizon: mean, lower, upper (NaN until learned)."""
        return np.full((rows, len(self.models.config.horizons_s), 3), np.nan)

    def add(self, t_ms: int, names: list[str], values: FloatArray) -> list[str]:
        """Add a batch of samples; returns the metric names refused by the cardinality limit."""
        return self.windows.add(t_ms, names, values)

    def observe(
        self,
        t_ms: int,
        names: Sequence[str],
        values: FloatArray,
        kinds: Sequence[MetricKind],
        ended: Sequence[str] = (),
    ) -> StageOutput:
        """The first stage: one MetricBatch's raw series (see :mod:`models.signals`); the
        signals of every scrape it completes go to the windows."""
        return self._admit(self.stage.observe(t_ms, names, values, kinds, ended))

    def close_scrape(self) -> StageOutput:
        """Complete the open scrape now (its window step is closing): its signals go to the
        windows."""
        return self._admit(self.stage.close())

    def _admit(self, out: StageOutput) -> StageOutput:
        for signals in out.signals:
            refused = set(self.add(signals.t_ms, signals.names, signals.values))
            out.refused += [
                (name, *origin)
                for name, origin in zip(signals.names, signals.origins, strict=True)
                if name in refused
            ]
        return out

    def due(self, watermark_ms: int) -> bool:
        """Whether a window step has ended by ``watermark_ms``."""
        return watermark_ms - self.last_step_ms >= self.models.config.step_s * 1000

    def step(self, now_ms: int) -> tuple[Record, Record, list[Record]]:
        """Close the step ending at ``now_ms``: features, predictions and alert changes."""
        return step_many([self], [now_ms])[0]

    def _prediction(
        self,
        metric: str,
        kind: str,
        model: Any,
        horizon_s: int,
        value: float,
        score: float,
        lower: float | None = None,
        upper: float | None = None,
    ) -> Record:
        return {
            "metric": metric,
            "kind": kind,
            "model": model.name,
            "model_version": model.version,
            "horizon_s": horizon_s,
            "value": value,
            "score": score,
            "lower": lower,
            "upper": upper,
        }

    def _features(self, now_ms: int, grid: FloatArray) -> Record:
        """The step's FeatureVector record."""
        return {
            "entity": self.entity,
            "event_time": now_ms,
            "names": self.windows.names(),
            "values": grid.reshape(-1).tolist(),
            "feature_set": self.models.feature_set,
        }

    def _close(
        self, now_ms: int, predictions: list[Record], shadow: list[Record]
    ) -> tuple[Record, list[Record]]:
        """The step's PredictionBatch and alert changes; shadow predictions never alert."""
        self.last_step_ms = now_ms
        alerts = []
        for rule in self.models.config.rules:
            value, metric = worst(predictions, rule.kind, rule.min_metrics)
            alert = evaluate(
                rule, self.alerts[rule.name], self.entity, value, metric, now_ms, self.labels
            )
            if alert is not None:
                alerts.append(alert)
        batch = {
            "prediction_id": f"{self.entity}@{now_ms}",
            "entity": self.entity,
            "event_time": now_ms,
            "emitted_at": now_ms,
            "latency_ms": 0.0,
            "predictions": predictions + shadow,
        }
        return batch, alerts

    # -- compact state -------------------------------------------------------------------
    # Two parts, written at different paces: the windows (and alert states, offsets) change
    # with every record and are small; the model states are ten times larger and are
    # checkpointed less often (a restored model that is a few minutes behind keeps
    # learning). Both are zstd-compressed: the arrays hold many zeros and repeats.

    def windows_bytes(self) -> bytes:
        """The windows, alert states and stream position, as compressed bytes."""
        n = len(self.windows.metrics)
        series, table = self.stage.state()
        return _pack(
            {
                "entity": self.entity,
                "metrics": self.windows.metrics,
                "labels": self.labels,
                "alerts": {k: v.as_array() for k, v in self.alerts.items()},
                "last_step_ms": self.last_step_ms,
                "last_offset": self.last_offset,
                "signals": series,
            },
            [
                self.windows.buckets[:n],
                self.windows.bucket_ids[:n].astype(np.float64),
                self.windows.last[:n],
                self.windows.ewma[:n],
                table,
            ],
        )

    def models_bytes(self) -> bytes:
        """The online models' states, as compressed bytes."""
        n = len(self.windows.metrics)
        return _pack(
            {"metrics": self.windows.metrics, "last_forecast_ms": self.last_forecast_ms},
            [self.anomaly[:n], self.forecast[:n], self.bottleneck],
        )

    @classmethod
    def restore(
        cls, models: ModelSet, windows: bytes, model_states: bytes | None = None
    ) -> EntityPipeline:
        """Rebuild an entity from :meth:`windows_bytes` (and :meth:`models_bytes`).

        Raises ValueError on bytes that are not an entity's state.
        """
        header, arrays = _unpack(windows)
        pipeline = cls(header["entity"], models)
        n = len(header["metrics"])
        w = pipeline.windows
        if n > w.capacity:
            w.reserve(n)
        pipeline._fit_states()
        w.metrics = list(header["metrics"])
        w.index = {m: i for i, m in enumerate(w.metrics)}
        w.buckets[:n], w.last[:n], w.ewma[:n] = arrays[0], arrays[2], arrays[3]
        w.bucket_ids[:n] = arrays[1].astype(np.int64)
        pipeline.labels = header["labels"]
        pipeline.alerts = {k: AlertState.from_array(v) for k, v in header["alerts"].items()}
        pipeline.last_step_ms = header["last_step_ms"]
        pipeline.last_offset = header["last_offset"]
        if "signals" in header:  # states saved before the signal stage have none
            pipeline.stage.restore(header["signals"], arrays[4])
        if model_states is not None:
            saved, (anomaly, forecast, bottleneck) = _unpack(model_states)
            k = len(saved["metrics"])
            if saved["metrics"] == w.metrics[:k]:  # metrics are only ever appended
                pipeline.anomaly[:k], pipeline.forecast[:k] = anomaly, forecast
                pipeline.bottleneck[:] = bottleneck
                pipeline.last_forecast_ms = saved["last_forecast_ms"]
        return pipeline


def _pack(header: dict[str, Any], arrays: list[npt.NDArray[Any]]) -> bytes:
    header = {**header, "shapes": [a.shape for a in arrays]}
    head = json.dumps(header).encode()
    body = b"".join(np.ascontiguousarray(a, dtype=np.float64).tobytes() for a in arrays)
    raw = struct.pack(">I", len(head)) + head + body
    return _MAGIC + bytes(cramjam.zstd.compress(raw, level=1))


def _unpack(data: bytes) -> tuple[dict[str, Any], list[FloatArray]]:
    if data[:4] != _MAGIC:
        raise ValueError("not an EntityPipeline state (bad magic)")
    try:
        raw = bytes(cramjam.zstd.decompress(data[4:]))
    except cramjam.DecompressionError as error:
        raise ValueError(f"entity state is corrupt: {error}") from error
    (length,) = struct.unpack_from(">I", raw, 0)
    header: dict[str, Any] = json.loads(raw[4 : 4 + length])
    offset = 4 + length
    arrays = []
    for shape in header["shapes"]:
        size = int(np.prod(shape))
        arrays.append(np.frombuffer(raw, np.float64, size, offset).reshape(shape))
        offset += size * 8
    return header, arrays


def _scaled_error(forecast: FloatArray, actual: FloatArray) -> float:
    """Mean absolute error of the shortest-horizon forecasts against what came, each scaled
    by its interval's half-width (so metrics of any unit average together); NaN if none."""
    mean, lower, upper = forecast[:, 0], forecast[:, 1], forecast[:, 2]
    half_width = np.maximum((upper - lower) / 2, 1e-9)
    errors = np.abs(actual - mean) / half_width
    errors = errors[np.isfinite(errors)]
    return float(errors.mean()) if errors.size else math.nan


def _aligned_groups(times: npt.NDArray[np.int64], period_ms: float) -> list[npt.NDArray[np.intp]]:
    """Indices grouped by ``period_ms`` slot: models that take one time per call get one
    call per slot, at the slot's latest time (the error is under one period)."""
    slots = times // max(int(period_ms), 1)
    return [np.flatnonzero(slots == slot) for slot in np.unique(slots)]


def step_many(
    pipelines: Sequence[EntityPipeline],
    now_ms: Sequence[int],
    batch_models: Sequence[BatchModel] = (),
) -> list[tuple[Record, Record, list[Record]]]:
    """Close a step of many entities at once: one vectorised pass over all their series.

    ``batch_models`` (trained models from the registry) score the step's feature vectors
    together; a champion's FAILURE_RISK joins the predictions the alert rules read, a
    shadow's is recorded beside it and never alerts.

    The worker steps every entity that is due in a poll batch together, so the cost of each
    numpy call is paid once per batch, not once per entity. Stepping entities one at a time
    gives the same records (the conformance tests check it).
    """
    if not pipelines:
        return []
    models = pipelines[0].models
    cfg = models.config
    for p in pipelines:
        p._fit_states()
    counts = np.array([len(p.windows.metrics) for p in pipelines])
    starts = np.concatenate([[0], np.cumsum(counts)])
    now = np.asarray(now_ms, dtype=np.int64)
    row_now = np.repeat(now, counts)

    def stack(get: Callable[[EntityPipeline, int], npt.NDArray[Any]]) -> npt.NDArray[Any]:
        return np.concatenate([get(p, n) for p, n in zip(pipelines, counts, strict=True)])

    grid = window_statistics(
        stack(lambda p, n: p.windows.buckets[:n]),
        stack(lambda p, n: p.windows.bucket_ids[:n]).astype(np.int64),
        stack(lambda p, n: p.windows.last[:n]),
        stack(lambda p, n: p.windows.ewma[:n]),
        row_now,
    )
    last = stack(lambda p, n: p.windows.last[:n])
    stepped = np.repeat([p.last_step_ms for p in pipelines], counts)
    fresh = last[:, 1] > stepped
    x = np.where(fresh, last[:, 0], np.nan)

    anomaly = stack(lambda p, n: p.anomaly[:n])
    scores = models.detector.score_learn(anomaly, x, int(now.max()))

    # Forecasts change only when the forecaster learns (once per forecast step), so each
    # entity keeps its latest ones and only the entities that learn now touch that state.
    learned = np.array([p.last_forecast_ms for p in pipelines], dtype=np.int64)
    stale = np.array([p.last_forecast_ms > 0 and np.isnan(p.forecasts[0, 0, 0])
                      for p in pipelines])  # fmt: skip
    learn = now - learned >= cfg.forecast_step_s * 1000
    level = statistic(grid, "mean", "5m")
    period = cfg.forecast_step_s * 1000
    for e in np.flatnonzero(learn):
        learned[e] = now[e]
    for group in _aligned_groups(learned[learn | stale], period):
        entities = np.flatnonzero(learn | stale)[group]
        rows = np.concatenate([np.arange(starts[e], starts[e + 1]) for e in entities])
        sub = np.concatenate([pipelines[e].forecast[: counts[e]] for e in entities])
        learning = np.repeat(learn[entities], counts[entities])
        if learning.any():
            t = int(learned[entities].max())
            part = sub[learning]
            models.forecaster.learn(part, np.where(learning, level[rows], np.nan)[learning], t)
            sub[learning] = part
        mean, lower, upper = models.forecaster.forecast(
            sub, int(learned[entities].max()), models.horizon_steps
        )
        cached = np.stack([mean, lower, upper], axis=-1)
        at = 0
        for e in entities:
            n = int(counts[e])
            p = pipelines[e]
            if learn[e]:
                p.forecast_error = _scaled_error(
                    p.forecasts[:n, 0], level[starts[e] : starts[e] + n]
                )
            p.forecast[:n] = sub[at : at + n]
            p.forecasts[:n] = cached[at : at + n]
            at += n

    exhaustion = _exhaustion_many(pipelines, now, grid, starts)

    built: list[tuple[Record, list[Record]]] = []
    horizons = cfg.horizons_s
    detector, forecaster = models.detector, models.forecaster
    for k, p in enumerate(pipelines):
        a, b = starts[k], starts[k + 1]
        p.anomaly[: b - a] = anomaly[a:b]
        p.last_forecast_ms = int(learned[k])
        values, anomaly_scores = last[a:b, 0].tolist(), scores[a:b].tolist()
        predictions = [
            p._prediction(metric, "ANOMALY", detector, 0, values[i], anomaly_scores[i])
            for i, metric in enumerate(p.windows.metrics)
            if fresh[a + i]
        ]
        forecasts = p.forecasts[: b - a].tolist()
        for i, metric in enumerate(p.windows.metrics):
            for h, horizon in enumerate(horizons):
                mean, low, high = forecasts[i][h]
                if math.isfinite(mean):
                    predictions.append(
                        p._prediction(metric, "FORECAST", forecaster, horizon, mean, 0.0, low, high)
                    )
        predictions += exhaustion[k]
        built.append((p._features(int(now[k]), grid[a:b]), predictions))
    features = [f for f, _ in built]
    scored = [(model, model.score(features).tolist()) for model in batch_models if features]
    out = []
    for k, (p, (record, predictions)) in enumerate(zip(pipelines, built, strict=True)):
        extra: dict[bool, list[Record]] = {False: [], True: []}
        for model, probabilities in scored:
            extra[model.shadow].append(
                p._prediction(
                    "entity",
                    "FAILURE_RISK",
                    model,
                    model.horizon_s,
                    probabilities[k],
                    probabilities[k],
                )
            )
        batch, alerts = p._close(int(now[k]), predictions + extra[False], extra[True])
        out.append((record, batch, alerts))
    return out


def _exhaustion_many(
    pipelines: Sequence[EntityPipeline],
    now: npt.NDArray[np.int64],
    grid: FloatArray,
    starts: npt.NDArray[np.int64],
) -> list[list[Record]]:
    """Bottleneck (days-scale exhaustion model) and failure risk (minutes-scale trend).

    The BOTTLENECK call comes from the seasonality-aware :class:`ExhaustionModel`, which
    weighs hours of history and is right for capacity planning. An OOM or a full disk
    builds up in minutes, faster than that fit follows, so the FAILURE_RISK early warning
    reads the local trend instead: the least-squares slopes of the 5-minute and 15-minute
    windows (Prometheus' ``predict_linear`` over two ranges), and calls the risk the
    probability that the resource is exhausted within ``failure_horizon_s``.
    """
    models, cfg = pipelines[0].models, pipelines[0].models.config
    n_res = len(models.resources)
    rows = np.full((len(pipelines), n_res), -1)
    for e, p in enumerate(pipelines):
        for r, resource in enumerate(models.resources):
            index = p.windows.index.get(resource)
            if index is not None:
                rows[e, r] = starts[e] + index
    has = rows >= 0
    values = np.where(has, grid[np.maximum(rows, 0), 0, STATISTICS.index("last")], np.nan)
    state = np.concatenate([p.bottleneck for p in pipelines])  # (entities * n_res, S)
    flat_values = values.reshape(-1)
    tte = np.full(len(flat_values), np.inf)
    tte_lower, tte_upper = tte.copy(), tte.copy()
    capacity = np.tile(models.capacity, len(pipelines))
    entity_of_row = np.repeat(np.arange(len(pipelines)), n_res)
    for group in _aligned_groups(now[entity_of_row], cfg.step_s * 1000):
        sub = state[group]
        t = int(now[entity_of_row[group]].max())
        models.bottleneck.learn(sub, flat_values[group], t)
        state[group] = sub
        tte[group], tte_lower[group], tte_upper[group] = models.bottleneck.time_to_exhaustion(
            sub, t, capacity[group]
        )
    slopes = np.stack(
        [statistic(grid, "slope", w)[np.maximum(rows, 0)] for w in ("5m", "15m")], axis=-1
    )  # (entities, n_res, 2)
    headroom = models.capacity[None, :] - values
    with np.errstate(invalid="ignore", divide="ignore"):
        times = headroom[..., None] / slopes
        fits = np.stack(
            [statistic(grid, "r2", w)[np.maximum(rows, 0)] for w in ("5m", "15m")], axis=-1
        )
        evidence = statistic(grid, "count", "15m")[np.maximum(rows, 0)]
        # A trend, not noise: both windows rise, the lines explain most of the variance,
        # and the 15-minute window holds enough samples to fit.
        rising = (
            has
            & (np.nan_to_num(slopes) > 0).all(axis=-1)
            & (fits[..., 1] >= cfg.trend_r2)
            & (fits[..., 0] >= cfg.trend_r2 / 2)
            & (evidence >= cfg.trend_min_samples)
        )
        eta = np.sqrt(times[..., 0] * times[..., 1])
        sigma = np.maximum(np.abs(times[..., 0] - times[..., 1]) / 2, 0.15 * eta)
        z = (cfg.failure_horizon_s - eta) / sigma
    rising &= np.isfinite(z)  # a degenerate fit (no spread, no headroom) says nothing
    risk = np.where(rising, 0.5 * (1 + _erf(np.nan_to_num(z) / math.sqrt(2.0))), 0.0)
    exhausted = has & (headroom <= 0)
    risk = np.where(exhausted, 1.0, risk)
    eta = np.where(exhausted, 0.0, eta)
    out: list[list[Record]] = []
    for e, p in enumerate(pipelines):
        p.bottleneck[:] = state[e * n_res : (e + 1) * n_res]
        records = []
        finite = np.isfinite(tte[e * n_res : (e + 1) * n_res])
        if finite.any():
            r = int(np.argmin(np.where(finite, tte[e * n_res : (e + 1) * n_res], np.inf)))
            k = e * n_res + r
            records.append(
                p._prediction(
                    models.resources[r],
                    "BOTTLENECK",
                    models.bottleneck,
                    0,
                    float(tte[k]),
                    0.0,
                    float(tte_lower[k]),
                    float(tte_upper[k]) if np.isfinite(tte_upper[k]) else None,
                )
            )
        if (rising[e] | exhausted[e]).any():
            r = int(np.argmax(risk[e]))
            low, high = np.nanmin(times[e, r]), np.nanmax(times[e, r])
            records.append(
                p._prediction(
                    models.resources[r],
                    "FAILURE_RISK",
                    _LOCAL_TREND,
                    int(cfg.failure_horizon_s),
                    float(eta[e, r]),
                    float(risk[e, r]),
                    max(float(low), 0.0) if exhausted[e, r] == 0 else 0.0,
                    float(high) if not exhausted[e, r] else 0.0,
                )
            )
        out.append(records)
    return out


_erf = np.vectorize(math.erf, otypes=[np.float64])
