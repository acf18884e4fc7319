"""The WebSocket gateway: predictions and alerts from Kafka to browsers and dashboards, live.

One process, one port (``FORESIGHT_GATEWAY_PORT``), on the shared HTTP stack
(:mod:`connectors.http`: the same keys, limits, error body and TLS as every Foresight server),
over TLS (https and wss) when the configuration has a certificate:

* ``/ws``: the live feed. A client connects with its API key (``read`` role, checked before
  the upgrade: 401, 403 or 429 with the error body), sends a subscribe message (see
  :mod:`connectors.gateway_filters`), and gets ``{"type": "subscribed"}``, the latest state
  matching its filter as ``{"type": "snapshot"}`` messages (cached predictions from Redis,
  firing alerts), any missed messages after ``last_id``, then live
  ``{"type": "prediction" | "alert", "id": n, "data": {...}}``.
* ``/``: the live page (``connectors/gateway_static``, files under ``/static/``);
  ``/api/entities/<entity>/predictions`` and ``/api/alerts/firing``: the read API;
  ``/health`` and ``/metrics``.

The fan-out is the :class:`~connectors.live_feed.LiveFeed`: the Kafka consumer only queues
messages in each client's bounded outbox, and a sender task per client drains it into its
socket, so a slow client only loses (coalesced or oldest) messages of its own and is told
how many (``{"type": "dropped", "count": k, "total": t}``).

No outage stops the gateway: while Kafka or Redis does not answer, ``/health`` says
``"degraded"`` (200) and what is down; without Redis a new subscription's snapshot starts
with ``{"type": "snapshot_degraded", "message": ...}`` (no cached predictions, firing alerts
and the live feed as usual), and ``/api/entities/<entity>/predictions`` answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from redis.exceptions import RedisError

from connectors.gateway_filters import SubscriptionError, read_subscription
from connectors.gateway_http import StaticFiles
from connectors.http.app import HttpServer, create_app, require
from connectors.http.auth import Gatekeeper
from connectors.http.errors import ApiError
from connectors.http.keys import READ
from connectors.http.tls import TlsConfig
from connectors.live_feed import FeedConfig, LiveFeed, Subscriber, to_json
from connectors.prometheus import GATEWAY_CLIENTS, GATEWAY_REQUESTS, GATEWAY_SENT
from connectors.redis_store import FeatureStore
from schemas.codec import Codec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs, passed explicitly (``foresight gateway`` maps settings).

    Parameters
    ----------
    feed
        What the live feed reads and how it buffers (:class:`~connectors.live_feed.FeedConfig`).
    gatekeeper
        Checks the key (``read`` role) of ``/ws`` and ``/api/`` requests, and the rate limits.
    host, port
        Where to listen (``FORESIGHT_BIND_HOST``, ``FORESIGHT_GATEWAY_PORT``); port 0 picks a
        free one, see :attr:`Gateway.port`.
    compress
        Offer permessage-deflate to clients (default ``False``: it costs CPU per client per
        message; turn it on when clients sit behind slow links).
    tls
        With a certificate (``FORESIGHT_TLS_CERT``), every route and the feed are served over
        TLS only (``https``, ``wss``); without, plain (the default).
    """

    feed: FeedConfig
    gatekeeper: Gatekeeper
    host: str = "127.0.0.1"
    port: int = 8765
    compress: bool = False
    tls: TlsConfig = field(default_factory=TlsConfig)


async def serve_feed(websocket: WebSocket, feed: LiveFeed) -> None:
    """One WebSocket client of ``feed``, in the gateway's protocol, until it disconnects: each
    subscribe message replaces its subscription; a bad one gets ``{"type": "error"}``."""
    subscriber: Subscriber | None = None
    sender: asyncio.Task[None] | None = None
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            try:
                subscription = read_subscription(raw if raw is not None else message["bytes"])
            except SubscriptionError as error:
                await websocket.send_text(to_json({"type": "error", "message": str(error)}))
                continue
            if sender is not None and subscriber is not None:
                sender.cancel()
                feed.unsubscribe(subscriber)
            subscriber = feed.subscribe(subscription)
            sender = asyncio.create_task(_send(websocket, feed, subscriber))
    except WebSocketDisconnect:
        pass
    finally:
        if sender is not None:
            sender.cancel()
        if subscriber is not None:
            feed.unsubscribe(subscriber)


async def _send(websocket: WebSocket, feed: LiveFeed, subscriber: Subscriber) -> None:
    outbox = subscriber.outbox
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client is gone
        for text in await feed.opening(subscriber):
            await websocket.send_text(text)
        reported = 0
        while True:
            texts = await outbox.wait()
            if outbox.dropped > reported:
                notice = {"type": "dropped", "count": outbox.dropped - reported}
                await websocket.send_text(to_json({**notice, "total": outbox.dropped}))
                reported = outbox.dropped
            for text in texts:
                await websocket.send_text(text)
            GATEWAY_SENT.inc(len(texts))


class Gateway:
    """The live feed, the page and the read API on one port.

    Use :meth:`start` and :meth:`stop` (tests, embedding) or :meth:`run` (the command).
    """

    def __init__(self, config: GatewayConfig, store: FeatureStore, codec: Codec | None = None):
        self.config = config
        self.feed = LiveFeed(config.feed, store, codec)
        self._store = store
        self._static = StaticFiles()
        self._connections = 0
        self._http: HttpServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming and listening; returns once both are ready."""
        await self.feed.start()
        http = HttpServer(
            self.app(),
            self.config.host,
            self.config.port,
            self.config.tls,
            compress_websockets=self.config.compress,
        )
        try:
            await http.start()
        except BaseException:
            await self.feed.stop()
            raise
        self._http = http
        log.info(
            "gateway on %s relaying %s and %s",
            self.config.tls.url(self.config.host, self.port),
            self.config.feed.predictions_topic,
            self.config.feed.alerts_topic,
        )

    @property
    def port(self) -> int:
        """The port listened on (the real one when configured with port 0)."""
        if self._http is None:
            raise RuntimeError("the gateway is not started; call start() first")
        return self._http.port

    async def stop(self) -> None:
        """Stop listening (clients are closed as the server shuts down), then the consumer."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        await self.feed.stop()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await self.start()
        try:
            await stopping.wait()
            log.info("gateway shutting down: closing %d clients", self._connections)
        finally:
            await self.stop()

    # -- state -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What /health reports: whether the consumer polls, which services are down,
        clients, uptime, ids, drops."""
        return {**self.feed.health(), "connections": self._connections}

    def firing_alerts(self) -> list[dict[str, Any]]:
        """Alerts firing now, as the alerts topic says, oldest episode first."""
        return self.feed.firing_alerts()

    # -- HTTP and WebSocket ----------------------------------------------------------------

    def app(self) -> FastAPI:
        """The gateway's routes on the shared stack (every WebSocket needs ``read``)."""
        app = create_app(
            "Foresight gateway",
            self.config.gatekeeper,
            health=self.health,
            requests=GATEWAY_REQUESTS,
            websocket_role=READ,
        )
        readers = [require(READ)]

        @app.get("/")
        async def page() -> Response:
            return self._static.response("index.html")

        @app.get("/static/{name}")
        async def static(name: str) -> Response:
            return self._static.response(name)

        @app.get("/api/alerts/firing", dependencies=readers)
        async def firing() -> Response:
            return _json(self.firing_alerts())

        @app.get("/api/entities/{entity}/predictions", dependencies=readers)
        async def cached(entity: str) -> Response:
            try:
                (batch,) = await self._store.predictions([entity])
            except RedisError as error:
                redis = self.feed.redis
                redis.failed(error)
                raise ApiError(
                    503,
                    f"the prediction cache (Redis at {redis.where}) did not answer: {error}; "
                    "retry once it is back (GET /health says)",
                ) from None
            if batch is None:
                raise ApiError(
                    404,
                    f"no cached prediction for entity {entity!r}: none yet, or older than "
                    "the cache TTL (PREDICTION_CACHE_TTL)",
                )
            return _json(batch)

        @app.websocket("/ws")
        async def live(websocket: WebSocket) -> None:
            await websocket.accept()
            self._connections += 1
            GATEWAY_CLIENTS.set(self._connections)
            try:
                await serve_feed(websocket, self.feed)
            finally:
                self._connections -= 1
                GATEWAY_CLIENTS.set(self._connections)

        return app


def _json(payload: Any) -> Response:
    """``payload`` as JSON browsers can parse (NaN and infinities as ``null``), not cached."""
    return Response(
        to_json(payload), media_type="application/json", headers={"Cache-Control": "no-store"}
    )
