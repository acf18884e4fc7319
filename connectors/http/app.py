"""The app factory and the uvicorn server of every Foresight HTTP server.

:func:`create_app` gives a FastAPI app that already has what every server needs: the one error
body, the body size limit, the per-address rate limit, request counting, ``/health`` and
``/metrics`` (the only routes without a key). A server adds its routes, each declaring the role
it needs with :func:`require`. :class:`HttpServer` serves an app with uvicorn inside the
caller's event loop, over TLS when given a :class:`~connectors.http.tls.TlsConfig` with a
certificate; :func:`uvicorn_config` is the one place uvicorn is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.http.auth import Gatekeeper
from connectors.http.errors import ApiError, error_response, install_error_handlers
from connectors.http.keys import ApiKey, presented_key
from connectors.http.limits import BodyLimit
from connectors.http.tls import TlsConfig

OPEN_PATHS = ("/health", "/metrics")
DEFAULT_MAX_BODY = 1 << 20


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``""`` is every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def client_address(scope: Scope) -> str:
    """The address a request came from (the peer: proxy headers are not trusted)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class _Arrivals:
    """ASGI middleware: the per-address rate limit, before any other work on a request."""

    def __init__(self, app: ASGIApp, gatekeeper: Gatekeeper) -> None:
        self.app = app
        self.gatekeeper = gatekeeper

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            arrival = self.gatekeeper.arrive(client_address(scope))
            if not arrival.admitted:
                await asyncio.sleep(arrival.delay)
                response = error_response(arrival.status, arrival.message, headers=arrival.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _CountRequests:
    """ASGI middleware: ``counter`` by route (``unmatched`` when none) and status code."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.counter.labels(endpoint, str(status)).inc()


def require(role: str) -> Any:
    """A route dependency: the request's key must have ``role`` (see :class:`Gatekeeper`)."""

    async def admitted(request: Request) -> ApiKey:
        gatekeeper: Gatekeeper = request.app.state.gatekeeper
        admission = gatekeeper.admit(
            client_address(request.scope),
            presented_key(request.headers, request.url.query),
            role,
            request.url.path,
        )
        if not admission.admitted or admission.key is None:
            await asyncio.sleep(admission.delay)
            raise ApiError(admission.status, admission.message, headers=admission.headers)
        return admission.key

    return Depends(admitted)


def create_app(
    title: str,
    gatekeeper: Gatekeeper,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    health: Callable[[], Mapping[str, Any]] | None = None,
    requests: Counter | None = None,
) -> FastAPI:
    """A FastAPI app with Foresight's errors, limits, ``/health`` and ``/metrics``.

    ``health`` reports the server's state (``{"status": "ok", ...}`` answers 200, any other
    status 503); ``requests`` is a counter labelled ``endpoint`` and ``code``.
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gatekeeper = gatekeeper
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(_Arrivals, gatekeeper=gatekeeper)
    if requests is not None:
        app.add_middleware(_CountRequests, counter=requests)

    @app.get("/health")
    async def report_health() -> JSONResponse:
        report = dict(health()) if health is not None else {"status": "ok"}
        return JSONResponse(report, status_code=200 if report.get("status") == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def uvicorn_config(app: ASGIApp, tls: TlsConfig) -> uvicorn.Config:
    """How every Foresight server runs uvicorn: TLS when ``tls`` has a certificate, no access
    log, no proxy headers trusted, lifespan handled by the server object, a short graceful
    shutdown."""
    context = tls.server_context()
    return uvicorn.Config(
        app,
        http="httptools",  # the C parser: several times uvicorn's pure-Python h11
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        ssl_context_factory=None if context is None else lambda _config, _default: context,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, leaving the process's signals to the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves ``app`` on ``host:port`` in the running event loop; port 0 picks a free one;
    https only when ``tls`` has a certificate.

    :meth:`start` binds (an ``OSError`` when the address is taken) and returns once serving.
    """

    def __init__(self, app: ASGIApp, host: str, port: int, tls: TlsConfig | None = None) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.tls = tls or TlsConfig()
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (the real one when asked for port 0)."""
        if self._socket is None:
            raise RuntimeError("the HTTP server is not started; call start() first")
        port: int = self._socket.getsockname()[1]
        return port

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        config = uvicorn_config(self.app, self.tls)  # a TlsError before anything is bound
        self._socket = self._bind()
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError(f"the HTTP server on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop taking requests, finish those under way (5 s at most), close the socket."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()
        self._socket, self._server, self._task = None, None, None
