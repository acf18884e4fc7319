"""On-demand predictions: the stream's own, now, for an entity or for a window of samples.

Nothing here predicts differently from the worker. An entity's predictions come from the
online state the worker keeps (Redis: the latest of everything predicted about it, and its
latest FeatureVector, :mod:`connectors.redis_store`); a window of samples is replayed through
a fresh :class:`~models.entity.EntityPipeline` with the worker's configuration
(:func:`streams.engine.pipeline_config`), step by step as the worker would, and the
predictions of its last step come back. The trained failure-risk models that serve
(:mod:`streams.serving`) score the latest features again, so that their SHAP values
(:meth:`~models.training.FailureRiskModel.contributions`) can say what drove them; the online
models' drivers are the features they read (:mod:`models.explain`).

Many requests are answered together: one Redis round trip for every entity's predictions
and features, one XGBoost call per serving model for every feature vector. Answers are plain
records in the shape of :class:`~streams.api.schema.PredictResponse`, sent as they are
(:class:`~streams.api.schema.RecordResponse`): building a pydantic model per prediction and
driver took half of a batch's time, to validate values this module has just made.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from connectors.http.errors import ApiError
from connectors.redis_store import FeatureStore, PoolExhaustedError, latest_parts
from models import explain
from models.entity import EntityPipeline, ModelSet, step_many
from models.features import vector_positions
from models.registry import ModelRegistry, RegistryError
from models.signals import MetricKind
from models.traffic import entity_slot
from models.training import FAILURE_RISK
from schemas.predictions import COLUMNS, DRIVERS, prediction_columns
from streams.api.schema import (
    Kind,
    PredictRequest,
    Source,
)
from streams.engine import ONLINE_FAILURE_MODEL, pipeline_config
from streams.serving import ServingModel, serving_models
from streams.settings import Settings

log = logging.getLogger(__name__)
Record = dict[str, Any]
_RELOAD_CHECK_S = 2.0


class ServingWatch:
    """The trained models that serve, reloaded when the registry says another version serves
    (looked at most every 2 s). A registry that cannot be read keeps the models loaded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: list[ServingModel] = []
        self._revision: str | None = None
        self._checked = -math.inf

    async def current(self) -> list[ServingModel]:
        now = time.monotonic()
        if now - self._checked >= _RELOAD_CHECK_S:
            self._checked = now
            await asyncio.to_thread(self._reload)
        return self._models

    def _reload(self) -> None:
        try:
            revision = ModelRegistry(self.settings.model_registry_url).revision(FAILURE_RISK)
            if revision != self._revision:
                self._models = serving_models(self.settings)
                self._revision = revision
                log.info("serving %s", [f"{FAILURE_RISK} v{m.version}" for m in self._models])
        except (RegistryError, OSError, ValueError) as error:
            log.error("model registry %s: %s", self.settings.model_registry_url, error)


@dataclass(frozen=True)
class _Scored:
    """A serving model's probability for one feature vector, and its drivers by SHAP value."""

    model: ServingModel
    probability: float
    drivers: list[explain.Driver]


@dataclass(frozen=True)
class _State:
    """An entity's predictions and features at one step: the PredictionBatch records its
    predictions are read from, each with the one kind read from it (None: all, see
    :func:`~connectors.redis_store.latest_parts`), and its FeatureVector."""

    source: Source
    batches: list[tuple[Record, str | None]]
    features: Record | None


def store_error(error: RedisError) -> ApiError:
    """The 503 of a request the online store could not serve: Redis did not answer, or every
    connection of the API's pool to it stayed busy (the API is asked too much at once)."""
    if isinstance(error, PoolExhaustedError):
        return ApiError(
            503,
            f"the API is busy: {error}. Send fewer requests at once, or raise "
            "FORESIGHT_API_REDIS_CONNECTIONS (or FORESIGHT_API_REDIS_WAIT_S)",
        )
    return ApiError(503, f"the online store (Redis, FEATURE_STORE_URL) did not answer: {error}")


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Predictor:
    """The stream's predictions on demand (see the module docstring)."""

    def __init__(self, settings: Settings, store: FeatureStore, serving: ServingWatch) -> None:
        self.settings = settings
        self.store = store
        self.serving = serving
        self.models = ModelSet(pipeline_config(settings))
        # Replays run in threads, and the model set's rows (windows, model states) are one
        # arena: one replay at a time.
        self._replaying = threading.Lock()

    async def predict(self, requests: Sequence[PredictRequest]) -> list[Record | ApiError]:
        """Each request's predictions (a PredictResponse as a record), or the
        :class:`ApiError` it alone would get (404: no online state; 422: a window the stream
        would refuse). Raises :class:`ApiError` 503 when Redis does not answer."""
        served = await self.serving.current()
        online = [i for i, r in enumerate(requests) if r.window is None]
        replayed = [i for i, r in enumerate(requests) if r.window is not None]
        states: dict[int, _State | ApiError] = {}
        if online:
            found = await self._online([requests[i].entity for i in online])
            states.update(zip(online, found, strict=True))
        if replayed:
            now_ms = int(time.time() * 1000)
            windows = await asyncio.to_thread(
                self._replay_all, [requests[i] for i in replayed], now_ms
            )
            states.update(zip(replayed, windows, strict=True))
        ready = {i: state for i, state in states.items() if isinstance(state, _State)}
        slots = {i: entity_slot(requests[i].entity) for i in ready}
        trained = self._trained(served, ready, slots, max((r.top for r in requests), default=0))
        answers: list[Record | ApiError] = []
        for i, request in enumerate(requests):
            state = states[i]
            if isinstance(state, ApiError):
                answers.append(state)
            else:
                answers.append(self._response(request, state, trained.get(i, [])))
        return answers

    # -- where the predictions come from --------------------------------------------------

    async def _online(self, entities: list[str]) -> list[_State | ApiError]:
        try:
            latest, forecasts, vectors = await self.store.online(entities)
        except RedisError as error:
            raise store_error(error) from error
        states: list[_State | ApiError] = []
        for entity, batch, forecast, vector in zip(
            entities, latest, forecasts, vectors, strict=True
        ):
            if batch is None and vector is None:
                states.append(
                    ApiError(
                        404,
                        f"no online state for entity {entity!r}: the worker has not stepped it "
                        f"within PREDICTION_CACHE_TTL ({self.store.prediction_ttl_s} s). Check "
                        "the name, or send its recent samples as a window",
                    )
                )
            else:
                states.append(_State(Source.ONLINE, latest_parts(batch, forecast), vector))
        return states

    def _replay_all(
        self, requests: Sequence[PredictRequest], now_ms: int
    ) -> list[_State | ApiError]:
        with self._replaying:
            return [self._replay(request, now_ms) for request in requests]

    def _replay(self, request: PredictRequest, now_ms: int) -> _State | ApiError:
        """The window's samples through a fresh pipeline, stepped as the worker steps."""
        window = request.window or []
        latest_allowed = now_ms + int(self.settings.max_future_s * 1000)
        for s, series in enumerate(window):
            late = max(series.times)
            if late > latest_allowed:
                return ApiError(
                    422,
                    f"window.{s}.times: {late} is more than FORESIGHT_MAX_FUTURE_S "
                    f"({self.settings.max_future_s:g} s) ahead of the server's clock ({now_ms}); "
                    "send epoch milliseconds",
                )
        times = np.concatenate([np.asarray(s.times, dtype=np.int64) for s in window])
        values = np.concatenate([np.asarray(s.values, dtype=np.float64) for s in window])
        names = [s.metric for s in window for _ in s.times]
        kinds = [MetricKind(s.kind) for s in window for _ in s.times]
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        instants, starts = np.unique(times, return_index=True)
        bounds = [*starts.tolist(), len(times)]
        pipeline = EntityPipeline(request.entity, self.models)
        features: Record | None = None
        batch: Record | None = None
        forecast: Record | None = None

        def step(t_ms: int) -> None:
            nonlocal features, batch, forecast
            pipeline.close_scrape()
            features, batch, _ = step_many([pipeline], [t_ms])[0]
            if "FORECAST" in batch["kinds"]:
                forecast = batch

        for k, t_ms in enumerate(instants.tolist()):
            at = order[bounds[k] : bounds[k + 1]].tolist()
            pipeline.observe(
                t_ms,
                [names[i] for i in at],
                values[bounds[k] : bounds[k + 1]],
                [kinds[i] for i in at],
            )
            if pipeline.due(t_ms):
                step(t_ms)
        last_ms = int(instants[-1])
        if last_ms > pipeline.last_step_ms:  # samples after the last step: step now
            step(last_ms)
        return _State(Source.WINDOW, latest_parts(batch, forecast), features)

    @staticmethod
    def _trained(
        served: Sequence[ServingModel],
        states: Mapping[int, _State],
        slots: Mapping[int, float],
        top: int,
    ) -> dict[int, list[_Scored]]:
        """Each serving model's probability and ``top`` drivers for every state that has
        features and whose entity its arm serves, as the stream explains them: one XGBoost
        call per model for them all."""
        out: dict[int, list[_Scored]] = {}
        for model in served:
            low, high = model.arm
            vectors = {
                k: state.features
                for k, state in states.items()
                if state.features is not None and low <= slots[k] < high
            }
            at = list(vectors)
            if not at:
                continue
            probabilities, drivers = model.loaded.model.explain(list(vectors.values()), top)
            for row, k in enumerate(at):
                out.setdefault(k, []).append(
                    _Scored(model, float(probabilities[row]), drivers[row])
                )
        return out

    # -- the answer -----------------------------------------------------------------------

    def _response(
        self,
        request: PredictRequest,
        state: _State,
        trained: list[_Scored],
    ) -> Record:
        top = request.top
        vector = state.features
        features = _Features(vector if top else None)
        rescored = {(FAILURE_RISK, scored.model.version) for scored in trained}
        predictions = [
            p
            for batch, only in state.batches
            for p in _stream_predictions(request, batch, only, rescored, features)
        ]
        entity_wide: list[Record] = [
            {
                "kind": Kind.FAILURE_RISK,
                "metric": "entity",
                "horizon_s": int(scored.model.loaded.model.horizon_s),
                "value": scored.probability,
                "score": scored.probability,
                "lower": None,
                "upper": None,
                "model": {"name": FAILURE_RISK, "version": scored.model.version},
                "shadow": scored.model.shadow,
                "drivers": _drivers(scored.drivers[:top]),
            }
            for scored in trained
        ]
        predictions += [
            p for p in entity_wide if _wanted(request, p["kind"], p["metric"], p["horizon_s"])
        ]
        newest = state.batches[0][0] if state.batches else vector or {}
        return {
            "entity": request.entity,
            "source": state.source,
            "event_time": newest.get("event_time", 0),
            "features_event_time": vector["event_time"] if vector is not None else None,
            "predictions": predictions,
        }


class _Features:
    """A FeatureVector's values by name, for drivers (none without a vector)."""

    def __init__(self, vector: Record | None) -> None:
        self.positions = vector_positions(vector) if vector is not None else {}
        self.values = vector["values"] if vector is not None else ()

    def value(self, name: str) -> float | None:
        at = self.positions.get(name)
        return None if at is None else _number(self.values[at])


def _stream_predictions(
    request: PredictRequest,
    batch: Record,
    only: str | None,
    rescored: set[tuple[str, str]],
    features: _Features,
) -> list[Record]:
    """The predictions of a PredictionBatch (of kind ``only`` alone, when given) that the
    request keeps, as the stream made them, except those of a model version scored again
    (``rescored``). Each comes with the drivers it carries (an entity anomaly or a
    local-trend risk) or else the features its model reads.

    Read straight from the batch's columns, each model's ``model`` record shared by its
    predictions: a row per prediction first, then an answer made of each row, made every
    object twice."""
    top = request.top
    columns = prediction_columns(batch)
    metrics = columns["metrics"]
    models = [
        {"name": name, "version": version}
        for name, version in zip(columns["models"], columns["model_versions"], strict=True)
    ]
    skipped = [(m["name"], m["version"]) in rescored for m in models]
    shadow = [m["name"] == ONLINE_FAILURE_MODEL for m in models]
    carried: dict[int, list[tuple[str, float]]] = {}
    for of, feature, contribution in zip(*(columns.get(name, ()) for name in DRIVERS), strict=True):
        carried.setdefault(of, []).append((feature, contribution))
    filtered = not (
        request.kinds is None and request.metrics is None and request.horizons_s is None
    )
    isfinite = math.isfinite
    read: dict[tuple[str, int], list[Record]] = {}
    out: list[Record] = []
    for i, (kind, m, k, horizon_s, value, score, lower, upper) in enumerate(
        zip(*(columns[name] for name in COLUMNS), strict=True)
    ):
        metric = metrics[m]
        if (
            (only is not None and kind != only)
            or skipped[k]
            or (filtered and not _wanted(request, kind, metric, horizon_s))
        ):
            continue
        drivers: list[Record] | None
        if i in carried:
            drivers = [
                {"feature": name, "value": features.value(name), "contribution": contribution}
                for name, contribution in carried[i][:top]
            ]
        elif features.positions:
            # The same features for every horizon of a kind and metric: one list, shared.
            drivers = read.get((kind, m))
            if drivers is None:
                drivers = read[kind, m] = [
                    {"feature": name, "value": features.value(name), "contribution": None}
                    for name in explain.features_read(kind, metric)[:top]
                ]
        else:
            drivers = []
        out.append(
            {
                "kind": kind,
                "metric": metric,
                "horizon_s": horizon_s,
                "value": value if isfinite(value) else None,
                "score": score if isfinite(score) else None,
                "lower": lower if isfinite(lower) else None,
                "upper": upper if isfinite(upper) else None,
                "model": models[k],
                "shadow": shadow[k],
                "drivers": drivers,
            }
        )
    return out


def _drivers(drivers: Sequence[explain.Driver]) -> list[Record]:
    return [
        {"feature": d.feature, "value": d.value, "contribution": d.contribution} for d in drivers
    ]


def _wanted(request: PredictRequest, kind: str, metric: str, horizon_s: int) -> bool:
    """Whether the request's filters keep a prediction of ``kind`` about ``metric``
    (``entity`` for an entity-wide one) ``horizon_s`` ahead."""
    if request.kinds is not None and kind not in request.kinds:
        return False
    if request.metrics is not None and metric != "entity" and metric not in request.metrics:
        return False
    return not (
        request.horizons_s is not None
        and kind == "FORECAST"
        and horizon_s not in request.horizons_s
    )
