"""A small typed client of the intelligence API: one method per route, answers parsed into
the API's own shapes (:mod:`streams.api.schema`), refusals raised as
:class:`~connectors.http.errors.ApiError` with the server's status, message and details.

Against a running ``foresight api`` (tests/integration/test_api.py runs it so)::

    client = ApiClient("http://127.0.0.1:8770", key="fsk_...")
    answer = client.predict("web-1", kinds=["FORECAST"], horizons_s=[3600])
    [(p.metric, p.value, p.lower, p.upper) for p in answer.predictions]
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from connectors.http.errors import ApiError
from streams.api import schema

T = TypeVar("T", bound=BaseModel)
DEFAULT_TIMEOUT_S = 60.0


class ApiClient:
    """The API at ``base_url`` with ``key`` (``read`` role; ``operate`` to change models),
    or through an ``http`` client of your own (which then carries the key). Over https the
    server's certificate is checked with ``verify`` (a context trusting the CA:
    ``TlsConfig.client_context()``; the default, the system's trusted CAs)."""

    def __init__(
        self,
        base_url: str = "",
        key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.Client | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = http or httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout_s, verify=verify
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        answer: type[T],
        params: Mapping[str, Any] | None = None,
        body: BaseModel | None = None,
    ) -> T:
        try:
            response = self._http.request(
                method,
                path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                content=body.model_dump_json(exclude_none=True) if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
            )
        except httpx.HTTPError as error:
            raise ApiError(
                503, f"the intelligence API at {self._http.base_url} did not answer: {error}"
            ) from error
        if response.status_code >= 400:
            raise _refusal(response)
        return answer.model_validate_json(response.content)

    # -- predictions ------------------------------------------------------------------

    def predict(
        self,
        entity: str,
        *,
        window: Sequence[schema.SeriesWindow] | None = None,
        kinds: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
        horizons_s: Sequence[int] | None = None,
        top: int = 5,
    ) -> schema.PredictResponse:
        """The stream's predictions for ``entity`` now (from ``window``, when given)."""
        return self._send(
            "POST",
            "/v1/predict/performance",
            schema.PredictResponse,
            body=prediction_request(entity, window, kinds, metrics, horizons_s, top),
        )

    def predict_batch(self, items: Sequence[schema.PredictRequest]) -> schema.BatchResponse:
        return self._send(
            "POST",
            "/v1/predict/batch",
            schema.BatchResponse,
            body=schema.BatchRequest(items=list(items)),
        )

    def entities(self, glob: str = "*", limit: int = 1000) -> schema.EntityList:
        return self._send("GET", "/v1/entities", schema.EntityList, {"glob": glob, "limit": limit})

    # -- history and features ---------------------------------------------------------

    def prediction_history(
        self,
        entity: str = "*",
        *,
        kinds: Sequence[str] = (),
        metric: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> schema.PredictionHistory:
        params = _page(entity, since, until, limit, offset) | {"kind": list(kinds) or None}
        return self._send(
            "GET",
            "/v1/history/predictions",
            schema.PredictionHistory,
            params | {"metric": metric},
        )

    def alert_history(
        self,
        entity: str = "*",
        *,
        statuses: Sequence[str] = (),
        severities: Sequence[str] = (),
        rule: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> schema.AlertHistory:
        params = _page(entity, since, until, limit, offset) | {
            "status": list(statuses) or None,
            "severity": list(severities) or None,
            "rule": rule,
        }
        return self._send("GET", "/v1/history/alerts", schema.AlertHistory, params)

    def sample_history(
        self,
        entity: str = "*",
        *,
        metric: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> schema.SampleHistory:
        params = _page(entity, since, until, limit, offset) | {"metric": metric}
        return self._send("GET", "/v1/history/samples", schema.SampleHistory, params)

    def firing_alerts(self, entity: str = "*") -> schema.FiringAlerts:
        return self._send("GET", "/v1/alerts/firing", schema.FiringAlerts, {"entity": entity})

    def features(self, entity: str, as_of: int | None = None) -> schema.FeatureVector:
        """The entity's latest features, or those it had at ``as_of`` (epoch ms)."""
        params = {"entity": entity, "as_of": as_of}
        return self._send("GET", "/v1/features", schema.FeatureVector, params)

    def features_as_of(
        self, rows: Sequence[tuple[str, int]], features: Sequence[str] | None = None
    ) -> schema.AsOfResponse:
        """For each ``(entity, as_of)``, the entity's features as they were then."""
        body = schema.AsOfRequest(
            rows=[schema.AsOfRow(entity=e, as_of=t) for e, t in rows],
            features=list(features) if features else None,
        )
        return self._send("POST", "/v1/features/as-of", schema.AsOfResponse, body=body)

    # -- models -----------------------------------------------------------------------

    def models(self) -> schema.ModelList:
        return self._send("GET", "/v1/models", schema.ModelList)

    def model(self, name: str) -> schema.ModelInfo:
        return self._send("GET", f"/v1/models/{name}", schema.ModelInfo)

    def model_version(self, name: str, version: str) -> schema.ModelVersionInfo:
        return self._send("GET", f"/v1/models/{name}/versions/{version}", schema.ModelVersionInfo)

    def promote(self, name: str, version: str) -> schema.ModelChangeResponse:
        body = schema.PromoteRequest(version=version)
        return self._send(
            "POST", f"/v1/models/{name}/promote", schema.ModelChangeResponse, body=body
        )

    def rollback(self, name: str) -> schema.ModelChangeResponse:
        return self._send("POST", f"/v1/models/{name}/rollback", schema.ModelChangeResponse)

    # -- agents -----------------------------------------------------------------------

    def routing_decisions(
        self,
        task_type: str = "*",
        *,
        latest: bool = False,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> schema.RoutingDecisions:
        params = _page(task_type, since, until, limit, offset, key="task_type")
        return self._send(
            "GET", "/v1/routing/decisions", schema.RoutingDecisions, params | {"latest": latest}
        )

    def agent_stats(
        self,
        agent: str = "*",
        *,
        task_type: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> schema.AgentStatsResponse:
        params = _page(agent, since, until, limit, offset, key="agent") | {"task_type": task_type}
        return self._send("GET", "/v1/agents/stats", schema.AgentStatsResponse, params)

    # -- GraphQL ----------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A GraphQL query's ``{"data", "errors"}`` (errors are GraphQL's, not raised)."""
        try:
            response = self._http.post(
                "/graphql", json={"query": query, "variables": dict(variables or {})}
            )
        except httpx.HTTPError as error:
            raise ApiError(503, f"the intelligence API did not answer: {error}") from error
        if response.status_code >= 400 and "application/json" not in response.headers.get(
            "content-type", ""
        ):
            raise _refusal(response)
        answer: dict[str, Any] = response.json()
        if "error" in answer:  # the stack's error body: the key was refused, or a limit hit
            raise _refusal(response)
        return answer


def prediction_request(
    entity: str,
    window: Sequence[schema.SeriesWindow] | None = None,
    kinds: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    horizons_s: Sequence[int] | None = None,
    top: int = 5,
) -> schema.PredictRequest:
    """One item of a prediction request, validated here as the server would (a
    ``pydantic.ValidationError``, a ValueError, names each field that is wrong)."""
    return schema.PredictRequest.model_validate(
        {
            "entity": entity,
            "window": list(window) if window is not None else None,
            "kinds": list(kinds) if kinds else None,
            "metrics": list(metrics) if metrics else None,
            "horizons_s": list(horizons_s) if horizons_s else None,
            "top": top,
        }
    )


def _page(
    glob: str, since: int | None, until: int | None, limit: int, offset: int, key: str = "entity"
) -> dict[str, Any]:
    return {key: glob, "since": since, "until": until, "limit": limit, "offset": offset}


def _refusal(response: httpx.Response) -> ApiError:
    """The server's error body as an :class:`ApiError`."""
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, error["message"], error.get("details", []))
    except (ValueError, KeyError, TypeError):
        return ApiError(
            response.status_code,
            f"{response.request.method} {response.request.url} answered {response.status_code} "
            f"without Foresight's error body: {response.text[:200]!r}",
        )
