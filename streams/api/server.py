"""``foresight api``'s server: the intelligence API on the shared HTTP stack.

One port (``FORESIGHT_API_PORT``) serves the REST routes under ``/v1``
(:mod:`streams.api.routes`), GraphQL at ``/graphql`` (:mod:`streams.api.graphql`; queries
over HTTP, subscriptions over WebSocket), the OpenAPI document at ``/openapi.json``, and
``/health`` and ``/metrics``. Keys, rate limits, the error body and TLS (``FORESIGHT_TLS_CERT``)
are the stack's (:mod:`connectors.http`), as on every Foresight server. ``/health`` says
``"degraded"`` (200) and what is down while Kafka or Redis does not answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from connectors.audit import AuditTrail
from connectors.http.app import HttpServer, OpenApi, create_app, require
from connectors.http.auth import Gatekeeper
from connectors.http.keys import READ
from connectors.live_feed import FeedConfig, LiveFeed
from connectors.prometheus import API_REQUESTS
from connectors.redis_store import FeatureStore
from schemas.codec import Codec
from streams.api.graphql import graphql_router
from streams.api.history import History, Tables
from streams.api.predict import Predictor, ServingWatch
from streams.api.route import RouteDesk
from streams.api.routes import router
from streams.api.service import Intelligence
from streams.settings import Settings
from streams.topics import ALERTS, DEADLETTER, PREDICTIONS, ROUTING, ROUTING_REQUESTS

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
MAX_BODY_BYTES = 16 << 20  # a batch of 1,000 windows
DESCRIPTION = """\
Foresight's predictions on demand, their history, the features behind them and the models
that make them. Every route but /health and /metrics needs an API key
(`Authorization: Bearer KEY`, `X-API-Key: KEY` or `?api_key=KEY`) with the `read` role, and
the `operate` role to promote or roll back a model, the `write` role to ask for a
routing decision. Times are epoch milliseconds (UTC).
Every refusal is `{"error": {"code", "message", "details"}}`, `details` naming each field
that was wrong and why.
"""


@dataclass(frozen=True)
class ApiConfig:
    """Where the API listens, whom it lets in (``gatekeeper``:
    :func:`streams.access.gatekeeper`), which topics its subscriptions follow and which
    ``POST /v1/route`` asks and hears the answer on; port 0 picks a free one."""

    gatekeeper: Gatekeeper
    host: str = "127.0.0.1"
    port: int = 8770
    predictions_topic: str = PREDICTIONS.name
    alerts_topic: str = ALERTS.name
    routing_requests_topic: str = ROUTING_REQUESTS.name
    routing_decisions_topic: str = ROUTING.name
    deadletter_topic: str = DEADLETTER.name


class ApiServer:
    """The intelligence API's services, its app and its server; ``async with`` starts and
    stops them (the live feed's Kafka consumer, then the HTTP server)."""

    def __init__(
        self, settings: Settings, config: ApiConfig, audit: AuditTrail, codec: Codec | None = None
    ) -> None:
        self.config = config
        self.tls = settings.tls()
        codec = codec or Codec()
        self.store = FeatureStore(
            settings.feature_store_url,
            settings.prediction_cache_ttl,
            codec,
            max_connections=settings.api_redis_connections,
            pool_wait_s=settings.api_redis_wait_s,
            decoded_forecasts=settings.api_forecast_cache,
        )
        feed = LiveFeed(
            FeedConfig(
                settings.kafka(),
                config.predictions_topic,
                config.alerts_topic,
                queue_size=settings.gateway_queue_size,
            ),
            self.store,
            codec,
        )
        self.tables = Tables(settings)
        self.service = Intelligence(
            settings,
            self.store,
            Predictor(settings, self.store, ServingWatch(settings)),
            History(self.tables),
            feed,
            audit,
        )
        self.desk = RouteDesk(
            settings.kafka(),
            codec,
            config.routing_requests_topic,
            config.routing_decisions_topic,
            settings.api_route_timeout_s,
            config.deadletter_topic,
        )
        self._http: HttpServer | None = None

    def health(self) -> dict[str, Any]:
        feed = self.service.feed.health()
        return {
            "status": feed["status"],
            "down": feed["down"],
            "kafka_consumer_alive": feed["kafka_consumer_alive"],
            "subscriptions": feed["clients"],
            "firing_alerts": feed["firing_alerts"],
            "uptime_s": feed["uptime_s"],
        }

    def app(self) -> FastAPI:
        app = create_app(
            "Foresight intelligence API",
            self.config.gatekeeper,
            max_body_bytes=MAX_BODY_BYTES,
            health=self.health,
            requests=API_REQUESTS,
            websocket_role=READ,
            openapi=OpenApi(API_VERSION, DESCRIPTION),
        )
        app.include_router(router(self.service, self.desk))
        app.include_router(
            graphql_router(self.service), prefix="/graphql", dependencies=[require(READ)]
        )
        return app

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the API server is not started")
        return self._http.port

    async def start(self) -> None:
        await self.service.feed.start()
        try:
            await self.desk.start()
        except BaseException:
            await self.stop()
            raise
        http = HttpServer(self.app(), self.config.host, self.config.port, self.tls)
        try:
            await http.start()
        except BaseException:
            await self.stop()
            raise
        self._http = http
        log.info("intelligence API on %s", self.tls.url(self.config.host, self.port))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.stop()
            self._http = None
        await self.desk.stop()
        await self.service.feed.stop()
        await self.store.close()
        self.tables.close()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
