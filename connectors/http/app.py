"""The app factory and the uvicorn server of every Foresight HTTP server.

:func:`create_app` gives a FastAPI app that already has what every server needs: the one error
body, the body size limit, the per-address rate limit, request counting, ``/health`` and
``/metrics`` (the only routes without a key). A server adds its routes, each declaring the role
it needs with :func:`require`; its WebSocket routes all need ``websocket_role``, checked before
the upgrade, so a refused key gets the same status and error body as over HTTP. With
``openapi`` the app publishes its OpenAPI document at ``/openapi.json``, every route declaring
the one error body for its 4xx and 5xx answers. :class:`HttpServer` serves an app with uvicorn
inside the caller's event loop, over TLS when given a :class:`~connectors.http.tls.TlsConfig`
with a certificate; :func:`uvicorn_config` is the one place uvicorn is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from connectors.dependencies import DEGRADED
from connectors.http.auth import Admission, Gatekeeper
from connectors.http.errors import (
    ERROR_RESPONSES,
    ApiError,
    error_response,
    install_error_handlers,
)
from connectors.http.keys import ApiKey, presented_key
from connectors.http.limits import BodyLimit
from connectors.http.tls import TlsConfig

OPEN_PATHS = ("/health", "/metrics")
DEFAULT_MAX_BODY = 1 << 20
MAX_WEBSOCKET_MESSAGE = 64 * 1024  # clients only send subscriptions
# A request's line and headers: four times what Node.js takes (16 KiB), and bounded, since the
# parser keeps them in memory as they come: one connection sending headers without end grew a
# server by 221 MB for 200 MB sent before this limit.
MAX_REQUEST_HEAD = 64 * 1024
# After refusing a request, what the client still sends is read and dropped this long before
# the connection closes: closing with bytes unread resets it, and the reset can take the
# answer with it before the client reads it (nginx's lingering close).
REFUSAL_LINGER_S = 2.0
# A request's line and headers must arrive within this from the connection's opening (or the
# previous answer, then uvicorn's keep-alive timeout comes first): uvicorn has no such limit,
# and a connection that sent nothing, or a byte of header every two seconds, stayed open, so
# a few thousand slow clients would hold every file descriptor (408 past it).
REQUEST_HEAD_TIMEOUT_S = 20.0
# An answer the client stops reading may wait this long for its next byte to leave (nginx's
# send_timeout): uvicorn has none, and closing a connection waits for what is unsent, so each
# client that asked and never read held its unsent answer (a batch's is about 1.6 MB) in the
# server's memory for as long as it lived.
SEND_TIMEOUT_S = 60.0
_ADMITTED_KEY = "foresight.key"  # where the WebSocket door leaves the key it let in


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


def _query(scope: Scope) -> str:
    return bytes(scope.get("query_string", b"")).decode("latin-1")


class _WebSocketDoor:
    """ASGI middleware: every WebSocket connection needs a key with ``role``, within the rate
    limits; a refusal is answered before the upgrade, as an HTTP response with the one error
    body (401, 403 or 429), so WebSocket clients see what HTTP clients see."""

    def __init__(self, app: ASGIApp, gatekeeper: Gatekeeper, role: str) -> None:
        self.app = app
        self.gatekeeper = gatekeeper
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        admission = self.gatekeeper.arrive(address)
        if admission.admitted:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            presented = presented_key(headers, _query(scope))
            admission = self.gatekeeper.admit(address, presented, self.role, scope["path"])
        if admission.admitted:
            scope.setdefault("state", {})[_ADMITTED_KEY] = admission.key
            await self.app(scope, receive, send)
            return
        await _deny(admission, scope, send)


async def _deny(admission: Admission, scope: Scope, send: Send) -> None:
    """Refuse a WebSocket handshake with ``admission``'s status and error body (servers that
    cannot send a response to a handshake close it, which clients see as 403)."""
    await asyncio.sleep(admission.delay)
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    response = error_response(admission.status, admission.message, headers=admission.headers)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "websocket.http.response.body", "body": bytes(response.body)})


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
    """A route dependency: the request's key must have ``role`` (see :class:`Gatekeeper`).

    Its value is the key's :class:`ApiKey` (``key: Annotated[ApiKey, require(READ)]``). On a
    WebSocket route it is the key the app's WebSocket door let in (``websocket_role``).
    """

    async def admitted(request: HTTPConnection) -> ApiKey:
        if request.scope["type"] == "websocket":
            door_key: ApiKey = request.scope["state"][_ADMITTED_KEY]
            if role not in door_key.roles:
                raise ApiError(403, f"key {door_key.id} ({door_key.name}) lacks the {role} role")
            return door_key
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


@dataclass(frozen=True)
class OpenApi:
    """What the OpenAPI document says of the server as a whole."""

    version: str
    description: str = ""


def create_app(
    title: str,
    gatekeeper: Gatekeeper,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    health: Callable[[], Mapping[str, Any]] | None = None,
    requests: Counter | None = None,
    websocket_role: str | None = None,
    openapi: OpenApi | None = None,
) -> FastAPI:
    """A FastAPI app with Foresight's errors, limits, ``/health`` and ``/metrics``.

    ``health`` reports the server's state (``{"status": "ok", ...}`` and ``"degraded"``, a
    service it relies on being down, answer 200; any other status 503, see
    :mod:`connectors.dependencies`); ``requests`` is a counter labelled ``endpoint`` and
    ``code``; ``websocket_role`` is the role every WebSocket route needs (none are served
    without it); ``openapi`` publishes the OpenAPI document at ``/openapi.json``.
    """
    app = FastAPI(
        title=title,
        version=openapi.version if openapi else "0.1.0",
        description=openapi.description if openapi else "",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if openapi else None,
        responses=ERROR_RESPONSES if openapi else None,
    )
    app.state.gatekeeper = gatekeeper
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if websocket_role is not None:
        app.add_middleware(_WebSocketDoor, gatekeeper=gatekeeper, role=websocket_role)
    app.add_middleware(_Arrivals, gatekeeper=gatekeeper)
    if requests is not None:
        app.add_middleware(_CountRequests, counter=requests)

    @app.get(
        "/health",
        tags=["operations"],
        summary="Health of the server, 503 when it cannot serve",
        responses={503: {"description": "the server cannot serve now; the body says why"}},
    )
    async def report_health() -> JSONResponse:
        report = dict(health()) if health is not None else {"status": "ok"}
        healthy = report.get("status") in ("ok", DEGRADED)
        return JSONResponse(report, status_code=200 if healthy else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's protocol on httptools (the C parser: several times its pure-Python h11),
    with the limits of a request's head it lacks, and every refusal below the routes in the
    error body every route answers with, not uvicorn's plain text: a request the parser
    refuses (a malformed request line or header, 400), a line and headers past
    :data:`MAX_REQUEST_HEAD` (431) or slower than :data:`REQUEST_HEAD_TIMEOUT_S` (408). After a
    refusal the connection closes, once :data:`REFUSAL_LINGER_S` of dropping what still comes
    has passed. An answer the client has stopped reading for :data:`SEND_TIMEOUT_S` is dropped
    with its connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._lingering = False
        self._refusal = (400, "the request is not HTTP/1.1 this server can read: its request "
                         "line, URL or headers were refused")  # fmt: skip
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_send_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_send(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._time_head()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if not self._lingering:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        self._refuse(*self._refusal)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_REQUEST_HEAD:
            self._refusal = (431, f"the request line and headers pass {MAX_REQUEST_HEAD:,} bytes")
            raise ValueError(self._refusal[1])  # the parser stops; uvicorn calls send_400_response

    def _time_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(REQUEST_HEAD_TIMEOUT_S, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._time_head()  # a pipelined request's head waits for the answer before it
            return
        self._refuse(408, f"the request line and headers did not arrive within "
                          f"{REQUEST_HEAD_TIMEOUT_S:g} s")  # fmt: skip

    def _watch_send(self, unsent: int) -> None:
        self._stop_send_timer()
        self._send_timer = self.loop.call_later(SEND_TIMEOUT_S, self._send_stalled, unsent)

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_stalled(self, unsent: int) -> None:
        self._send_timer = None
        now_unsent = self.transport.get_write_buffer_size()
        if now_unsent < unsent:  # the client reads, slowly: watch on
            self._watch_send(now_unsent)
            return
        self.transport.abort()  # uvicorn then tells the app the client is gone

    def _refuse(self, status: int, message: str) -> None:
        if self._lingering or self.transport.is_closing():
            return
        body = error_response(status, message).body
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + bytes(body))
        self._lingering = True
        self._stop_head_timer()
        self.loop.call_later(REFUSAL_LINGER_S, self.transport.close)


def uvicorn_config(
    app: ASGIApp, tls: TlsConfig, *, compress_websockets: bool = False
) -> uvicorn.Config:
    """How every Foresight server runs uvicorn: TLS when ``tls`` has a certificate, no access
    log, no proxy headers trusted, lifespan handled by the server object, a short graceful
    shutdown; WebSocket messages from clients of at most 64 KiB, and permessage-deflate only
    when ``compress_websockets`` (it costs CPU per client and message, for messages that are
    small already)."""
    context = tls.server_context()
    return uvicorn.Config(
        app,
        http=_HttpProtocol,
        ws="websockets-sansio",
        ws_max_size=MAX_WEBSOCKET_MESSAGE,
        ws_per_message_deflate=compress_websockets,
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

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        tls: TlsConfig | None = None,
        *,
        compress_websockets: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.tls = tls or TlsConfig()
        self.compress_websockets = compress_websockets
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

    @property
    def open_connections(self) -> int:
        """Connections open now (0 before start)."""
        return 0 if self._server is None else len(self._server.server_state.connections)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose
        # proto says TCP, and without it Nagle holds a reply's body behind its headers until
        # the client's delayed ACK (40 ms on Linux) on every small answer.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        # a TlsError before anything is bound
        config = uvicorn_config(self.app, self.tls, compress_websockets=self.compress_websockets)
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
