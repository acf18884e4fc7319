"""The HTTP side of the gateway: responses, and the live page's static files.

The gateway answers plain HTTP from the ``process_request`` hook of the ``websockets`` server
(one port for the WebSocket feed, the page, the read API, /health and /metrics), so responses
are built here as ``websockets`` :class:`~websockets.http11.Response` objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from importlib import resources
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Response

from connectors.http.errors import error_body

STATIC_PACKAGE = "connectors"
STATIC_FOLDER = "gateway_static"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The page loads only its own files and talks only to this gateway.
_PAGE_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'"
)


def respond(
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    extra_headers: Mapping[str, str] | None = None,
) -> Response:
    """An HTTP response that closes the connection (the ``websockets`` server does not keep
    plain HTTP connections alive)."""
    headers = Headers(
        [
            ("Date", formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    for name, value in (extra_headers or {}).items():
        headers[name] = value
    return Response(status.value, status.phrase, headers, body)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(payload: Any) -> str:
    """Compact JSON that browsers can parse: NaN and infinities become ``null``."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False)


def json_response(status: HTTPStatus, payload: Any) -> Response:
    """``payload`` as an ``application/json`` response."""
    return respond(status, to_json(payload).encode(), "application/json")


def error_response(
    status: HTTPStatus, message: str, extra_headers: Mapping[str, str] | None = None
) -> Response:
    """The one error body of :mod:`connectors.http.errors`; ``401`` also names the scheme."""
    extra = dict(extra_headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", 'Bearer realm="foresight"')
    return respond(status, to_json(error_body(status, message)).encode(), "application/json", extra)


class StaticFiles:
    """The live page's files, read once from the package (``connectors/gateway_static``)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] = {}
        folder = resources.files(STATIC_PACKAGE).joinpath(STATIC_FOLDER)
        for entry in folder.iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in _CONTENT_TYPES:
                self._files[entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
        if "index.html" not in self._files:
            raise FileNotFoundError(
                f"{STATIC_PACKAGE}/{STATIC_FOLDER}/index.html is missing from the installed "
                "package; reinstall Foresight with its package data"
            )

    def response(self, name: str) -> Response | None:
        """The file ``name`` (no folders), or ``None`` when there is no such file."""
        found = self._files.get(name)
        if found is None:
            return None
        body, content_type = found
        extra = {"Content-Security-Policy": _PAGE_POLICY} if name.endswith(".html") else None
        return respond(HTTPStatus.OK, body, content_type, extra)
