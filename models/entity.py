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

import functools
import json
import math
import struct
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cramjam
import numpy as np
import numpy.typing as npt

from models.alerts import DEFAULT_RULES, AlertRule, AlertState, evaluate
from models.anomaly import StreamingAnomalyDetector
from models.arena import IntArray, SeriesArena
from models.base import FloatArray, as_float64, store_rows
from models.bottleneck import ExhaustionModel
from models.entity_anomaly import EntityAnomalyDetector
from models.explain import ENTITY_METRIC, TOP, Driver, summary
from models.failure_risk import LocalTrendRisk
from models.features import (
    FeatureWindows,
    WindowArena,
    feature_set_hash,
    statistic,
    window_parts,
)
from models.forecast import SeasonalForecaster
from models.signals import MetricKind, SignalRules, SignalStage, StageOutput
from models.traffic import entity_slot
from schemas.predictions import PredictionColumns

Record = dict[str, Any]
_MAGIC = b"FSE2"


_DAY_BUCKETS = 96  # quarter hours, the detector's default
#: Series a vectorised step works on at once (see :func:`step_many`).
STEP_SERIES = 8192


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
    rules: tuple[AlertRule, ...] = DEFAULT_RULES
    signal_rules: SignalRules = field(default_factory=SignalRules.shipped)
    max_series: int = 10_000
    series_lookback_s: float = 300.0


@dataclass(frozen=True)
class BatchModel:
    """A trained model scoring FeatureVector records (an XGBoost failure-risk version):
    ``explain`` gives each record's probability and its top drivers. It scores the entities
    whose slot (:func:`models.traffic.entity_slot`) lies in ``arm``: all of them, unless an
    A/B split gives it a share."""

    name: str
    version: str
    horizon_s: int
    explain: Callable[[Sequence[Record]], tuple[FloatArray, list[list[Driver]]]]
    shadow: bool = False
    arm: tuple[float, float] = (0.0, 1.0)


class ModelSet:
    """The shared model objects of a worker (stateless, so one serves every entity), and the
    arena that holds every entity's per-series model states and windows."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        # The detector's defaults are tuned for NAB, which scores the first detection of
        # each anomaly: a value beyond the range seen scores 1, and 100 points after a
        # detection stay silent, then re-arm slowly. A stream alerts differently: the alert
        # rule deduplicates and holds an episode, and a host's range grows with its daily
        # cycle for days, so here novelty does not score on its own and there is no silence
        # or re-arming after a detection.
        # Its seasonal profile trusts a time-of-day bucket after ``season_min`` visits, which
        # on 5-minute data means days; at a step of seconds a bucket fills in minutes, so
        # trust it only after two days' worth of visits.
        visits_per_day = 86_400 / _DAY_BUCKETS / config.step_s
        self.detector = StreamingAnomalyDetector(
            warmup=config.anomaly_warmup_steps,
            novelty_margin=math.inf,
            quiet_steps=0,
            rearm_steps=0,
            day_buckets=_DAY_BUCKETS,
            season_min=max(4, round(2 * visits_per_day)),
            calibrated_start=True,
        )
        self.entity_detector = EntityAnomalyDetector(warmup=config.anomaly_warmup_steps)
        self.forecaster = SeasonalForecaster(step_s=config.forecast_step_s)
        self.bottleneck = ExhaustionModel(memory_s=config.exhaustion_memory_s)
        self.failure_risk = LocalTrendRisk(
            config.failure_horizon_s, config.trend_r2, config.trend_min_samples
        )
        self.horizon_steps = np.array(
            [max(1, round(h / config.forecast_step_s)) for h in config.horizons_s], dtype=np.int64
        )
        self.feature_set = feature_set_hash()
        horizons = len(config.horizons_s)
        self.states = SeriesArena(
            {
                "anomaly": self.detector.init_state,
                "forecast": self.forecaster.init_state,
                # Latest forecasts per horizon: mean, lower, upper (NaN until learned).
                "forecasts": lambda n: np.full((n, horizons, 3), np.nan),
                "bottleneck": self.bottleneck.init_state,
                # The capacity a series is a used amount of (NaN: not capacity-bound), as
                # the signal rules said with its latest samples.
                "capacity": lambda n: np.full(n, np.nan),
                "entity_anomaly": self.entity_detector.init_state,
                **window_parts(),
            }
        )
        # Every entity's windows live in the same rows as its model states.
        self.windows = WindowArena(self.states)
        # One row per entity: the state of its entity anomaly model as a whole.
        self.entity_states = SeriesArena(
            {"entity_anomaly": self.entity_detector.init_entity_state}, rows=64
        )


class EntityPipeline:
    """Windows and model state of one entity.

    Examples
    --------
    >>> models = ModelSet(PipelineConfig())
    >>> p = EntityPipeline("web-1", models)
    >>> _ = p.add(600_000, ["cpu_percent"], np.array([12.0]))
    >>> features, predictions, alerts = p.step(600_000)
    >>> features["metrics"], predictions["metrics"]
    (['cpu_percent'], ['cpu_percent', '*'])
    >>> predictions["kinds"]
    ['ANOMALY', 'ANOMALY', 'FORECAST', 'FORECAST', 'FORECAST']
    """

    def __init__(self, entity: str, models: ModelSet) -> None:
        self.entity = entity
        self.models = models
        cfg = models.config
        self.windows = FeatureWindows(cfg.max_metrics, models.windows)
        self.stage = SignalStage(
            cfg.signal_rules, cfg.max_series, int(cfg.series_lookback_s * 1000)
        )
        self.labels: dict[str, str] = {}
        self.slot = entity_slot(entity)  # its place in A/B splits
        self.phase_ms = step_phase_ms(entity, models.config.step_s)
        # Its windows' rows in the arena hold its metrics' model states too (about 15 KB a
        # row); they go back to the arena when the pipeline is collected.
        self.entity_row = models.entity_states.take(1)
        weakref.finalize(self, _release, models, self.windows, self.entity_row)
        self.alerts = {rule.name: AlertState() for rule in cfg.rules}
        self.last_step_ms = 0
        self.last_forecast_ms = 0
        # Scaled error of the forecasts checked at the latest forecast step (NaN until then):
        # the worker watches it for drift.
        self.forecast_error = math.nan
        # The latest step's trend of the entity's riskiest capacity-bound metric (used
        # fraction, slopes per minute, fit), for the failure-outcome log; None without one.
        self.risk_features: FloatArray | None = None
        # Kafka offset of the newest record in the windows: a record replayed after a crash
        # (at or below it) is already counted and is skipped, so nothing counts twice.
        self.last_offset = -1

    @property
    def rows(self) -> IntArray:
        """The arena rows of the entity's metrics, in the windows' order."""
        return self.windows.rows

    @property
    def capacity(self) -> FloatArray:
        """The capacity each metric is a used amount of (NaN: not capacity-bound), as the
        signal rules said with its latest samples (a copy)."""
        return self.models.states.parts["capacity"][self.rows]

    def add(
        self,
        t_ms: int,
        names: list[str],
        values: FloatArray,
        capacities: FloatArray | None = None,
    ) -> list[str]:
        """Add a batch of samples, with the capacity each is a used amount of (NaN where
        none); returns the metric names refused by the cardinality limit."""
        rows, refused = self.windows.admit(names)
        if refused:
            kept = rows >= 0
            rows, values = rows[kept], values[kept]
            capacities = None if capacities is None else capacities[kept]
        self.windows.add_rows(t_ms, rows, values)
        if capacities is not None:
            self.models.states.parts["capacity"][rows] = capacities
        return refused

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
            refused = set(self.add(signals.t_ms, signals.names, signals.values, signals.capacities))
            if refused:
                out.refused += [
                    (name, *origin)
                    for name, origin in zip(signals.names, signals.origins, strict=True)
                    if name in refused
                ]
        return out

    def due(self, watermark_ms: int) -> bool:
        """Whether a window step has ended by ``watermark_ms`` (the first at once)."""
        return watermark_ms >= self.next_step_ms()

    def next_step_ms(self) -> int:
        """When the entity's next window step ends. Each entity's steps end on the step's
        grid shifted by a phase of its own: a fleet that started together (or whose scrapes
        are aligned) spreads its steps over the step length instead of closing them all in
        the same second, a burst of work every step that the records behind it wait for."""
        return step_end_after(self.last_step_ms, self.phase_ms, self.models.config.step_s)

    def step(self, now_ms: int) -> tuple[Record, Record, list[Record]]:
        """Close the step ending at ``now_ms``: features, predictions and alert changes."""
        return step_many([self], [now_ms])[0]

    def _features(self, now_ms: int, grid: FloatArray) -> Record:
        """The step's FeatureVector record: the standard layout, metrics named once."""
        return {
            "entity": self.entity,
            "event_time": now_ms,
            "names": [],
            "metrics": list(self.windows.metrics),
            "values": grid.reshape(-1),
            "feature_set": self.models.feature_set,
        }

    def _alerts(self, now_ms: int, columns: PredictionColumns) -> list[Record]:
        """The step's alert changes, from its predictions (shadow ones are not in yet); an
        alert's detail names what drove the prediction it read."""
        self.last_step_ms = now_ms
        alerts = []
        for rule in self.models.config.rules:
            at = columns.worst_at(rule.kind, rule.min_metrics, rule.metric)
            value, metric = 0.0, ""
            detail: str | Callable[[], str] = ""  # made only for an alert
            if at >= 0:
                value = columns.columns["scores"][at]
                metric = columns.metrics[columns.columns["metric_index"][at]]
                detail = functools.partial(_detail, columns, at)
            alert = evaluate(
                rule, self.alerts[rule.name], self.entity, value, metric, now_ms, self.labels,
                detail,
            )  # fmt: skip
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _batch(self, now_ms: int, columns: PredictionColumns) -> Record:
        """The step's PredictionBatch record."""
        return {
            "prediction_id": f"{self.entity}@{now_ms}",
            "entity": self.entity,
            "event_time": now_ms,
            "emitted_at": now_ms,
            "latency_ms": 0.0,
            **columns.record(),
        }

    # -- compact state -------------------------------------------------------------------
    # Two parts, written at different paces: the windows (and alert states, offsets) change
    # with every record and are small; the model states are ten times larger and are
    # checkpointed less often (a restored model that is a few minutes behind keeps
    # learning). Both are zstd-compressed: the arrays hold many zeros and repeats. Model
    # states are saved as float64 rows whatever their dtype in memory (float32 bulks are read
    # back exactly), so states saved before the bulks were float32 restore, rounded.

    def windows_bytes(self) -> bytes:
        """The windows, alert states and stream position, as compressed bytes."""
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
                self.windows.buckets,
                self.windows.bucket_ids.astype(np.float64),
                self.windows.last,
                self.windows.ewma,
                self.capacity,
                table,
            ],
        )

    def step_state(self) -> bytes:
        """What a window step leaves that its records do not: the step's time and the alert
        states (for the journal, between snapshots: see :meth:`take_step`)."""
        alerts = {k: v.as_array() for k, v in self.alerts.items()}
        return json.dumps({"last_step_ms": self.last_step_ms, "alerts": alerts}).encode()

    def take_step(self, state: bytes) -> None:
        """A step taken again from its :meth:`step_state`, in its place among the records
        taken again: the scrape it closed closes, and its alert states come back."""
        self.close_scrape()
        saved = json.loads(state)
        self.last_step_ms = saved["last_step_ms"]
        self._load_alerts(saved["alerts"])

    def _load_alerts(self, saved: dict[str, list[float]]) -> None:
        """Take back saved alert states: of the rules there are now (a rule added since
        starts afresh, one removed is dropped)."""
        for name in self.alerts:
            if name in saved:
                self.alerts[name] = AlertState.from_array(saved[name])

    def models_bytes(self) -> bytes:
        """The online models' states, as compressed bytes."""
        rows, parts = self.rows, self.models.states.parts
        return _pack(
            {"metrics": self.windows.metrics, "last_forecast_ms": self.last_forecast_ms},
            [
                as_float64(parts["anomaly"][rows]),
                as_float64(parts["forecast"][rows]),
                parts["bottleneck"][rows],
                parts["entity_anomaly"][rows],
                self.models.entity_states.parts["entity_anomaly"][self.entity_row],
            ],
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
        w = pipeline.windows
        w.load(header["metrics"], arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3])
        parts = models.states.parts
        if len(arrays) > 4:  # states saved before capacities learn them with the next samples
            parts["capacity"][pipeline.rows] = arrays[4]
        pipeline.labels = header["labels"]
        pipeline._load_alerts(header["alerts"])
        pipeline.last_step_ms = header["last_step_ms"]
        pipeline.last_offset = header["last_offset"]
        if "signals" in header:  # states saved before the signal stage have none
            pipeline.stage.restore(header["signals"], arrays[5])
        if model_states is not None:
            saved, (anomaly, forecast, bottleneck, *entity) = _unpack(model_states)
            k = len(saved["metrics"])
            # Metrics are only ever appended; models saved by an older layout start afresh.
            if saved["metrics"] == w.metrics[:k] and bottleneck.shape[0] == k:
                rows = pipeline.rows[:k]
                store_rows(parts["anomaly"], rows, anomaly)
                store_rows(parts["forecast"], rows, forecast)
                parts["bottleneck"][rows] = bottleneck
                pipeline.last_forecast_ms = saved["last_forecast_ms"]
                states = models.entity_states.parts["entity_anomaly"]
                slots = parts["entity_anomaly"]
                # Saved before the entity score, or in an older layout of it: start afresh.
                if (
                    entity
                    and entity[1].shape == (1, states.shape[1])
                    and entity[0].shape[1:] == slots.shape[1:]
                ):
                    slots[rows] = entity[0]
                    states[pipeline.entity_row] = entity[1]
        return pipeline


def step_phase_ms(entity: str, step_s: float) -> int:
    """Where in each step the entity's steps end, in [0, step): from the low bits of its
    A/B slot's hash, so an arm's entities do not all step in the same part of the step.

    >>> step_phase_ms("web-1", 10.0) == step_phase_ms("web-1", 10.0) < 10_000
    True
    """
    return int(entity_slot(entity) * 2**32) % max(int(step_s * 1000), 1)


def step_end_after(t_ms: int, phase_ms: int, step_s: float) -> int:
    """The first end of a step after ``t_ms`` on the grid of ``step_s`` shifted by
    ``phase_ms`` (an entity's :func:`step_phase_ms`).

    >>> step_end_after(12_345, 3_000, 10.0), step_end_after(13_000, 3_000, 10.0)
    (13000, 23000)
    """
    step = max(int(step_s * 1000), 1)
    return t_ms - (t_ms - phase_ms) % step + step


def _detail(columns: PredictionColumns, at: int) -> str:
    """What drove prediction ``at``, for an alert's summary."""
    return summary(columns.drivers_of(at))


def _release(models: ModelSet, windows: FeatureWindows, entity_row: IntArray) -> None:
    models.states.release(windows.rows)
    models.entity_states.release(entity_row)


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

    A step of more than :data:`STEP_SERIES` series goes in parts of about that many (a whole
    fleet's first step, when the worker starts): arrays of every series at once outgrow the
    caches and the heap, and each temporary is mapped and faulted in afresh.
    """
    results: list[tuple[Record, Record, list[Record]]] = []
    for part in _parts([len(p.rows) for p in pipelines], STEP_SERIES):
        results += _step_part(pipelines[part], now_ms[part], batch_models)
    return results


def _parts(sizes: Sequence[int], limit: int) -> list[slice]:
    """Consecutive slices of ``sizes`` adding up to ``limit`` at most (one item, if larger).

    >>> _parts([3, 3, 3, 5, 1], 6)
    [slice(0, 2, None), slice(2, 3, None), slice(3, 5, None)]
    """
    parts, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            parts.append(slice(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        parts.append(slice(start, len(sizes)))
    return parts


def _step_part(
    pipelines: Sequence[EntityPipeline],
    now_ms: Sequence[int],
    batch_models: Sequence[BatchModel],
) -> list[tuple[Record, Record, list[Record]]]:
    """:func:`step_many` of entities whose series fit in one vectorised pass."""
    if not pipelines:
        return []
    models = pipelines[0].models
    cfg = models.config
    parts = models.states.parts
    counts = np.array([len(p.rows) for p in pipelines])
    starts = np.concatenate([[0], np.cumsum(counts)])
    now = np.asarray(now_ms, dtype=np.int64)
    rows = np.concatenate([p.rows for p in pipelines])
    grid = models.windows.statistics(rows, np.repeat(now, counts))
    last = parts["window_last"][rows]
    stepped = np.repeat([p.last_step_ms for p in pipelines], counts)
    fresh = last[:, 1] > stepped
    x = np.where(fresh, last[:, 0], np.nan)
    scores = models.detector.score_learn(parts["anomaly"], x, int(now.max()), rows)
    entity_rows = np.concatenate([p.entity_row for p in pipelines])
    entity_scores = models.entity_detector.score_learn(
        parts["entity_anomaly"],
        models.entity_states.parts["entity_anomaly"],
        x,
        starts,
        rows,
        entity_rows,
    )

    # Forecasts change only when the forecaster learns (once per forecast step), so each
    # entity keeps its latest ones and only the entities that learn now touch that state.
    forecasts = parts["forecasts"]
    learned = np.array([p.last_forecast_ms for p in pipelines], dtype=np.int64)
    # An entity holds forecasts when its first metric has one (an entity without metrics yet
    # holds none).
    held = np.full(len(pipelines), np.nan)
    some = counts > 0
    held[some] = forecasts[rows[starts[:-1][some]], 0, 0]
    stale = (learned > 0) & np.isnan(held)
    learn = now - learned >= cfg.forecast_step_s * 1000
    level = statistic(grid, "mean", "5m")
    period = cfg.forecast_step_s * 1000
    for e in np.flatnonzero(learn):
        learned[e] = now[e]
    for group in _aligned_groups(learned[learn | stale], period):
        entities = np.flatnonzero(learn | stale)[group]
        at = np.concatenate([np.arange(starts[e], starts[e + 1]) for e in entities])
        learning = np.repeat(learn[entities], counts[entities])
        t = int(learned[entities].max())
        if learning.any():  # the others' level is NaN: skipped
            x_level = np.where(learning, level[at], np.nan)
            models.forecaster.learn(parts["forecast"], x_level, t, rows[at])
        mean, lower, upper = models.forecaster.forecast(
            parts["forecast"], t, models.horizon_steps, rows[at]
        )
        for e in entities[learn[entities]]:
            a, b = starts[e], starts[e + 1]
            pipelines[e].forecast_error = _scaled_error(forecasts[rows[a:b], 0], level[a:b])
        forecasts[rows[at]] = np.stack([mean, lower, upper], axis=-1)

    columns = [PredictionColumns() for _ in pipelines]
    detector, forecaster = models.detector, models.forecaster
    entity_detector = (models.entity_detector.name, models.entity_detector.version)
    horizons = np.asarray(cfg.horizons_s)
    # The series with a new value, all entities' at once; each entity's are a slice.
    fresh_at = np.flatnonzero(fresh)
    fresh_values, fresh_scores = last[fresh_at, 0].tolist(), scores[fresh_at].tolist()
    fresh_local = (fresh_at - np.repeat(starts[:-1], counts)[fresh_at]).tolist()
    fresh_bounds = np.searchsorted(fresh_at, starts).tolist()
    for k, p in enumerate(pipelines):
        a, b = starts[k], starts[k + 1]
        p.last_forecast_ms = int(learned[k])
        metrics = p.windows.metrics
        first, end = fresh_bounds[k], fresh_bounds[k + 1]
        fresh_metrics = (
            metrics if end - first == len(metrics)
            else [metrics[i] for i in fresh_local[first:end]]
        )  # fmt: skip
        columns[k].add(
            "ANOMALY",
            (detector.name, detector.version),
            fresh_metrics,
            [0] * (end - first),
            fresh_values[first:end],
            fresh_scores[first:end],
        )
        if end > first:
            score = entity_scores.scores[k : k + 1]
            own = columns[k].add("ANOMALY", entity_detector, [ENTITY_METRIC], [0], score, score)
            columns[k].explain(own, [(metrics[i], c) for i, c in entity_scores.top(a, b, TOP)])
        if learn[k] or stale[k]:  # forecasts go out when they are refreshed
            made = forecasts[rows[a:b]]
            row, h = np.nonzero(np.isfinite(made[..., 0]))
            columns[k].add(
                "FORECAST",
                (forecaster.name, forecaster.version),
                [metrics[i] for i in row],
                horizons[h],
                made[row, h, 0],
                np.zeros(len(row)),
                made[row, h, 1],
                made[row, h, 2],
            )
    _exhaustion_many(pipelines, now, grid, starts, rows, columns)
    features = [p._features(int(now[k]), grid[starts[k] : starts[k + 1]])
                for k, p in enumerate(pipelines)]  # fmt: skip
    slots = np.array([p.slot for p in pipelines])
    scored = []
    for model in batch_models:
        low, high = model.arm
        served = np.flatnonzero((slots >= low) & (slots < high)).tolist()
        probabilities, drivers = model.explain([features[k] for k in served])
        results = zip(probabilities.tolist(), drivers, strict=True)
        scored.append((model, dict(zip(served, results, strict=True))))

    def add_scored(k: int, shadow: bool) -> None:
        for model, by_entity in scored:
            if model.shadow == shadow and k in by_entity:
                risk, drivers = by_entity[k]
                at = columns[k].add(
                    "FAILURE_RISK", (model.name, model.version), ["entity"],
                    [model.horizon_s], [risk], [risk],
                )  # fmt: skip
                columns[k].explain(at, [(d.feature, d.contribution or 0.0) for d in drivers])

    out = []
    for k, p in enumerate(pipelines):
        add_scored(k, shadow=False)  # a champion's risk is one the alert rules read
        alerts = p._alerts(int(now[k]), columns[k])
        add_scored(k, shadow=True)  # a shadow's is recorded, and never alerts
        out.append((features[k], p._batch(int(now[k]), columns[k]), alerts))
    return out


def replay_scrapes(
    scrapes: Iterable[tuple[int, Sequence[Record]]], models: ModelSet
) -> Iterator[tuple[int, list[tuple[Record, Record, list[Record]]]]]:
    """MetricBatch records grouped by event time, in time order, through the signal stage and
    the step as the worker takes them, scrape by scrape (a backfill, a benchmark): each time,
    and the steps it closed (features, predictions, alerts)."""
    pipelines: dict[str, EntityPipeline] = {}
    for t, records in scrapes:
        due = []
        for record in records:
            entity = record["entity"]
            pipeline = pipelines.setdefault(entity, EntityPipeline(entity, models))
            kinds = [MetricKind(k) for k in record["kinds"]]
            pipeline.observe(t, record["names"], np.asarray(record["values"]), kinds)
            if pipeline.due(t):
                pipeline.close_scrape()
                due.append(pipeline)
        yield t, step_many(due, [t] * len(due))


def _largest(metric: str, contributions: FloatArray) -> list[tuple[str, float]]:
    """The local trend's nonzero drivers of one metric's risk, largest first."""
    order = np.argsort(-np.abs(contributions), kind="stable")
    return [
        (f"{metric}:{LocalTrendRisk.DRIVERS[i]}", float(contributions[i]))
        for i in order.tolist()
        if contributions[i] != 0.0
    ]


def _exhaustion_many(
    pipelines: Sequence[EntityPipeline],
    now: npt.NDArray[np.int64],
    grid: FloatArray,
    starts: npt.NDArray[np.int64],
    rows: IntArray,
    columns: Sequence[PredictionColumns],
) -> None:
    """BOTTLENECK and FAILURE_RISK of every capacity-bound metric of every entity, added to
    each entity's ``columns``.

    The BOTTLENECK call comes from the seasonality-aware :class:`ExhaustionModel`, which
    weighs hours of history and is right for capacity planning: one where it sees a finite
    time to exhaustion. FAILURE_RISK, the early warning, comes from
    :class:`~models.failure_risk.LocalTrendRisk` on the minutes-scale windows: one for every
    capacity-bound metric, every step. Each pipeline's ``risk_features`` is left set to its
    riskiest metric's trend (:data:`~models.failure_outcomes.TREND_FEATURES`), for the
    failure-outcome log.
    """
    models, cfg = pipelines[0].models, pipelines[0].models.config
    for p in pipelines:
        p.risk_features = None
    capacity = models.states.parts["capacity"][rows]
    bound = np.flatnonzero(np.isfinite(capacity))
    if not bound.size:
        return
    entity_of = np.searchsorted(starts, bound, side="right") - 1
    local = bound - starts[entity_of]
    state = models.states.parts["bottleneck"][rows[bound]]
    values = statistic(grid, "last", "1m")[bound]
    cap = capacity[bound]
    tte = np.full(len(bound), np.inf)
    tte_lower, tte_upper = tte.copy(), tte.copy()
    for group in _aligned_groups(now[entity_of], cfg.step_s * 1000):
        sub = state[group]
        t = int(now[entity_of[group]].max())
        models.bottleneck.learn(sub, values[group], t)
        state[group] = sub
        tte[group], tte_lower[group], tte_upper[group] = models.bottleneck.time_to_exhaustion(
            sub, t, cap[group]
        )
    models.states.parts["bottleneck"][rows[bound]] = state
    risk = models.failure_risk.assess(grid[bound], cap)
    at_risk = risk.rising | risk.exhausted
    drivers = models.failure_risk.drivers(grid[bound], cap, risk)
    trend = np.nan_to_num(
        np.stack(
            [
                values / cap,
                *(
                    np.clip(statistic(grid, "slope", w)[bound] * cfg.failure_horizon_s / cap, -2, 2)
                    for w in ("5m", "15m")
                ),
                statistic(grid, "r2", "15m")[bound],
            ],
            axis=1,
        ),
        posinf=0.0,
        neginf=0.0,
    )
    bottleneck = (models.bottleneck.name, models.bottleneck.version)
    failure = (models.failure_risk.name, models.failure_risk.version)
    horizon = int(cfg.failure_horizon_s)
    for e in np.unique(entity_of).tolist():
        js = np.flatnonzero(entity_of == e)
        p = pipelines[e]
        metrics = [p.windows.metrics[r] for r in local[js].tolist()]
        finite = np.isfinite(tte[js])
        seen = js[finite]
        columns[e].add(
            "BOTTLENECK", bottleneck, [m for m, f in zip(metrics, finite, strict=True) if f],
            np.zeros(len(seen)), tte[seen], np.zeros(len(seen)), tte_lower[seen],
            np.where(np.isfinite(tte_upper[seen]), tte_upper[seen], np.nan),
        )  # fmt: skip
        first = columns[e].add(
            "FAILURE_RISK", failure, metrics, np.full(len(js), horizon), risk.eta[js],
            risk.risk[js], np.where(at_risk[js], risk.lower[js], np.nan),
            np.where(at_risk[js], risk.upper[js], np.nan),
        )  # fmt: skip
        for n, j in enumerate(js.tolist()):
            if at_risk[j]:
                columns[e].explain(first + n, _largest(metrics[n], drivers[j]))
        highest = js[np.flatnonzero(risk.risk[js] == risk.risk[js].max())[-1]]
        p.risk_features = trend[highest]
