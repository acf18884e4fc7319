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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from connectors.http.errors import ApiError
from connectors.redis_store import FeatureStore, PoolExhaustedError, latest_of_everything
from models import explain
from models.entity import EntityPipeline, ModelSet, step_many
from models.features import vector_names
from models.registry import ModelRegistry, RegistryError
from models.signals import MetricKind
from models.traffic import entity_slot
from models.training import FAILURE_RISK
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
    """An entity's predictions (a PredictionBatch as rows) and features at one step."""

    source: Source
    batch: Record | None
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
                lambda: [self._replay(requests[i], now_ms) for i in replayed]
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
            batches, vectors = await self.store.online(entities)
        except RedisError as error:
            raise store_error(error) from error
        states: list[_State | ApiError] = []
        for entity, batch, vector in zip(entities, batches, vectors, strict=True):
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
                states.append(_State(Source.ONLINE, batch, vector))
        return states

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
        return _State(Source.WINDOW, latest_of_everything(batch, forecast), features)

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
        feature_values: Mapping[str, float] = (
            dict(zip(vector_names(vector), vector["values"], strict=True))
            if vector is not None and top
            else {}
        )
        rescored = {(FAILURE_RISK, scored.model.version) for scored in trained}
        predictions = [
            self._online_prediction(p, feature_values, top)
            for p in (state.batch or {}).get("predictions", [])
            if (p["model"], p["model_version"]) not in rescored and _wanted(request, p)
        ]
        entity_wide = [
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
        predictions += [p for p in entity_wide if _wanted(request, p)]
        event_time = (state.batch or vector or {}).get("event_time", 0)
        return {
            "entity": request.entity,
            "source": state.source,
            "event_time": event_time,
            "features_event_time": vector["event_time"] if vector is not None else None,
            "predictions": predictions,
        }

    @staticmethod
    def _online_prediction(row: Record, features: Mapping[str, float], top: int) -> Record:
        """A prediction as the stream made it, with the drivers it carries (an entity anomaly
        or a local-trend risk) or else the features its model reads."""
        carried = row.get("drivers")
        if carried:
            drivers = [
                {
                    "feature": d["feature"],
                    "value": _number(features.get(d["feature"])),
                    "contribution": d["contribution"],
                }
                for d in carried[:top]
            ]
        else:
            read = explain.features_read(row["kind"], row["metric"]) if features else ()
            drivers = [
                {"feature": name, "value": _number(features.get(name)), "contribution": None}
                for name in read[:top]
            ]
        return {
            "kind": row["kind"],
            "metric": row["metric"],
            "horizon_s": row["horizon_s"],
            "value": _number(row["value"]),
            "score": _number(row["score"]),
            "lower": _number(row["lower"]),
            "upper": _number(row["upper"]),
            "model": {"name": row["model"], "version": row["model_version"]},
            "shadow": row["model"] == ONLINE_FAILURE_MODEL,
            "drivers": drivers,
        }


def _drivers(drivers: Sequence[explain.Driver]) -> list[Record]:
    return [
        {"feature": d.feature, "value": d.value, "contribution": d.contribution} for d in drivers
    ]


def _wanted(request: PredictRequest, prediction: Mapping[str, Any]) -> bool:
    """Whether the request's filters keep a prediction (a row of a PredictionBatch, or an
    answer's prediction: both have its ``kind``, ``metric`` and ``horizon_s``)."""
    if request.kinds is not None and prediction["kind"] not in request.kinds:
        return False
    if (
        request.metrics is not None
        and prediction["metric"] != "entity"
        and prediction["metric"] not in request.metrics
    ):
        return False
    return not (
        request.horizons_s is not None
        and prediction["kind"] == "FORECAST"
        and prediction["horizon_s"] not in request.horizons_s
    )
