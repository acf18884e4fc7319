"""Kafka Connect REST calls: create or update a connector, read its state, delete it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


class ConnectError(RuntimeError):
    """The Connect worker refused a call; the message carries its answer."""


def _call(url: str, method: str = "GET", body: Any = None, timeout_s: float = 15.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read()[:500].decode(errors="replace")
        raise ConnectError(f"{method} {url}: HTTP {error.code}: {detail}") from error
    return json.loads(raw) if raw else None


def apply_connector(connect_url: str, name: str, config: Mapping[str, str]) -> dict[str, Any]:
    """Create connector ``name`` or update its configuration (PUT is idempotent)."""
    reply: dict[str, Any] = _call(
        f"{connect_url.rstrip('/')}/connectors/{name}/config", "PUT", dict(config)
    )
    return reply


def connector_status(connect_url: str, name: str) -> dict[str, Any]:
    """The connector's and its tasks' states, as the worker reports them."""
    reply: dict[str, Any] = _call(f"{connect_url.rstrip('/')}/connectors/{name}/status")
    return reply


def delete_connector(connect_url: str, name: str) -> None:
    """Remove connector ``name``; a connector that does not exist is not an error."""
    try:
        _call(f"{connect_url.rstrip('/')}/connectors/{name}", "DELETE")
    except ConnectError as error:
        if "HTTP 404" not in str(error):
            raise
