"""The REST routes of the intelligence API, under ``/v1``.

Each route validates its body and parameters (422 with the one error body naming each field
and why), needs a key of the ``read`` role (``operate`` to change models, ``write`` to ask for a
routing decision), and calls the same
services the GraphQL resolvers call (:class:`~streams.api.service.Intelligence`).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from connectors.http.app import client_address, require
from connectors.http.errors import ApiError
from connectors.http.keys import OPERATE, READ, WRITE, ApiKey
from connectors.prometheus import PREDICTION_LATENCY
from streams.api import schema
from streams.api.history import Paging, TimeRange
from streams.api.route import RouteDesk
from streams.api.service import Intelligence
from streams.operations import Caller

Glob = Annotated[
    str,
    Query(min_length=1, max_length=schema.MAX_TEXT, description="an entity name or fnmatch glob"),
]
Since = Annotated[
    int | None,
    Query(ge=0, le=32_503_680_000_000, description="from (epoch ms; default: an hour before)"),
]
Until = Annotated[
    int | None, Query(ge=0, le=32_503_680_000_000, description="until (epoch ms; default: now)")
]
Limit = Annotated[int, Query(ge=1, le=schema.MAX_PAGE, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="rows to skip")]
Name = Annotated[str, Query(min_length=1, max_length=schema.MAX_TEXT)]
ModelName = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]
Version = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,8}$")]

DEFAULT_SPAN_MS = 3_600_000


def time_range(since: int | None, until: int | None) -> TimeRange:
    """``since`` to ``until`` (now, and an hour before, by default); 422 when empty."""
    end = int(time.time() * 1000) if until is None else until
    start = end - DEFAULT_SPAN_MS if since is None else since
    if start >= end:
        raise ApiError(
            422,
            "the time range is empty",
            [{"field": "query.since", "reason": f"since ({start}) must be before until ({end})"}],
        )
    return TimeRange(start, end)


def router(service: Intelligence, desk: RouteDesk) -> APIRouter:
    """Every ``/v1`` route, answered by ``service`` (``/v1/route`` by ``desk``)."""
    v1 = APIRouter(prefix="/v1")
    readers = [require(READ)]

    @v1.post(
        "/predict/performance",
        tags=["predictions"],
        summary="The stream's predictions for one entity, now",
        dependencies=readers,
        response_model=schema.PredictResponse,
    )
    async def predict_performance(request: schema.PredictRequest) -> schema.RecordResponse:
        with PREDICTION_LATENCY.labels("performance").time():
            (answer,) = await service.predictor.predict([request])
        if isinstance(answer, ApiError):
            raise answer
        return schema.RecordResponse(answer)

    @v1.post(
        "/predict/batch",
        tags=["predictions"],
        summary="Predictions for up to 1,000 entities or windows at once",
        dependencies=readers,
        response_model=schema.BatchResponse,
    )
    async def predict_batch(request: schema.BatchRequest) -> schema.RecordResponse:
        with PREDICTION_LATENCY.labels("batch").time():
            answers = await service.predictor.predict(request.items)
        return schema.RecordResponse(schema.batch_response(answers))

    @v1.get(
        "/entities",
        tags=["predictions"],
        summary="Entities with predictions in the online store",
        dependencies=readers,
    )
    async def entities(
        glob: Glob = "*", limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
    ) -> schema.EntityList:
        return await service.entities(glob, limit)

    @v1.get(
        "/history/predictions",
        tags=["history"],
        summary="Predictions stored in ClickHouse, newest first",
        dependencies=readers,
    )
    async def prediction_history(
        entity: Glob = "*",
        kind: Annotated[list[schema.Kind] | None, Query()] = None,
        metric: Name | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> schema.PredictionHistory:
        return await service.history.predictions(
            entity, time_range(since, until), Paging(limit, offset), kind or (), metric
        )

    @v1.get(
        "/history/alerts",
        tags=["history"],
        summary="Alert state changes stored in ClickHouse, newest first",
        dependencies=readers,
    )
    async def alert_history(
        entity: Glob = "*",
        status: Annotated[list[schema.AlertStatus] | None, Query()] = None,
        severity: Annotated[list[schema.Severity] | None, Query()] = None,
        rule: Name | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> schema.AlertHistory:
        return await service.history.alerts(
            entity, time_range(since, until), Paging(limit, offset), status or (), severity or (),
            rule,
        )  # fmt: skip

    @v1.get(
        "/history/samples",
        tags=["history"],
        summary="Metric samples stored in ClickHouse, newest first",
        dependencies=readers,
    )
    async def sample_history(
        entity: Glob = "*",
        metric: Name | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> schema.SampleHistory:
        return await service.history.samples(
            entity, time_range(since, until), Paging(limit, offset), metric
        )

    @v1.get(
        "/alerts/firing",
        tags=["history"],
        summary="Alerts firing now, oldest episode first",
        dependencies=readers,
    )
    async def firing(entity: Glob = "*") -> schema.FiringAlerts:
        return service.firing_alerts(entity)

    @v1.get(
        "/features",
        tags=["features"],
        summary="An entity's latest features (online), or its features at a moment (as_of)",
        dependencies=readers,
    )
    async def features(
        entity: Name,
        as_of: Annotated[
            int | None,
            Query(ge=0, le=32_503_680_000_000, description="epoch ms: from ClickHouse instead"),
        ] = None,
    ) -> schema.FeatureVector:
        return await service.features(entity, as_of)

    @v1.post(
        "/features/as-of",
        tags=["features"],
        summary="Features of many entities at many moments, without leakage (a training set)",
        dependencies=readers,
    )
    async def features_as_of(request: schema.AsOfRequest) -> schema.AsOfResponse:
        return await service.history.features_as_of(request.rows, request.features)

    @v1.get("/models", tags=["models"], summary="The registry's models", dependencies=readers)
    async def models() -> schema.ModelList:
        return await service.models()

    @v1.get(
        "/models/{name}",
        tags=["models"],
        summary="One model and its versions",
        dependencies=readers,
    )
    async def model(name: ModelName) -> schema.ModelInfo:
        return await service.model(name)

    @v1.get(
        "/models/{name}/versions/{version}",
        tags=["models"],
        summary="One version of a model",
        dependencies=readers,
    )
    async def model_version(name: ModelName, version: Version) -> schema.ModelVersionInfo:
        return await service.model_version(name, version)

    @v1.post(
        "/models/{name}/promote",
        tags=["models"],
        summary="Put a version in production (operate role)",
    )
    async def promote(
        name: ModelName,
        body: schema.PromoteRequest,
        request: Request,
        key: Annotated[ApiKey, require(OPERATE)],
    ) -> schema.ModelChangeResponse:
        caller = Caller(key, client_address(request.scope))
        return await service.promote(name, body.version, caller)

    @v1.post(
        "/models/{name}/rollback",
        tags=["models"],
        summary="Back to the version in production before (operate role)",
    )
    async def rollback(
        name: ModelName, request: Request, key: Annotated[ApiKey, require(OPERATE)]
    ) -> schema.ModelChangeResponse:
        return await service.rollback(name, Caller(key, client_address(request.scope)))

    @v1.post(
        "/route",
        tags=["agents"],
        summary="Which agent should take a task: the worker's decision (write role)",
        dependencies=[require(WRITE)],
        responses={504: {"description": "no decision within FORESIGHT_API_ROUTE_TIMEOUT_S"}},
    )
    async def route(request: schema.RouteRequest) -> schema.RouteDecision:
        decision = await desk.route(request)
        model = {"name": decision["model"], "version": decision["model_version"]}
        return schema.RouteDecision.model_validate({**decision, "model": model})

    @v1.get(
        "/routing/decisions",
        tags=["agents"],
        summary="Routing decisions, newest first (latest: the newest per task type)",
        dependencies=readers,
    )
    async def routing_decisions(
        task_type: Glob = "*",
        latest: bool = False,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> schema.RoutingDecisions:
        return await service.history.routing_decisions(
            task_type, time_range(since, until), Paging(limit, offset), latest
        )

    @v1.get(
        "/agents/stats",
        tags=["agents"],
        summary="Per agent and task type: successes, failures, run times, cost",
        dependencies=readers,
    )
    async def agent_stats(
        agent: Glob = "*",
        task_type: Name | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> schema.AgentStatsResponse:
        return await service.history.agent_stats(
            agent, time_range(since, until), Paging(limit, offset), task_type
        )

    return v1
