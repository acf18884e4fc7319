"""Kafka Connect: REST calls (create or update a connector, read its state, restart, delete it)
and the secrets files its FileConfigProvider reads.

A connector config never holds a secret: it holds ``${file:<file>:<key>}``, and the worker
reads the value from that properties file when the connector or a task starts. So the config
topic, the REST API and the worker's log show only the reference.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.private_files import private_folder, write_private


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


def restart_connector(connect_url: str, name: str) -> None:
    """Restart connector ``name`` and its tasks, which re-reads the secrets they reference."""
    _call(f"{connect_url.rstrip('/')}/connectors/{name}/restart?includeTasks=true", "POST")


def delete_connector(connect_url: str, name: str) -> bool:
    """Remove connector ``name``; whether it existed (one that does not is not an error)."""
    try:
        _call(f"{connect_url.rstrip('/')}/connectors/{name}", "DELETE")
    except ConnectError as error:
        if "HTTP 404" not in str(error):
            raise
        return False
    return True


def secret_reference(secrets_file: Path, key: str) -> str:
    """``${file:<secrets_file>:<key>}``, the config value the worker replaces by the secret.

    ValueError when the path holds a ``:`` or ``}``, which the reference syntax cannot carry.
    """
    if any(c in str(secrets_file) for c in ":}"):
        raise ValueError(
            f"secrets file {secrets_file} has ':' or '}}' in its path, which a ${{file:...}} "
            "reference cannot hold; move the stack folder (FORESIGHT_STACK_DIR) to a plain path"
        )
    return f"${{file:{secrets_file}:{key}}}"


def _properties_value(text: str) -> str:
    """``text`` escaped for a Java properties file (read back by ``Properties.load``)."""
    escapes = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}
    escaped = "".join(escapes.get(c, c) for c in text)
    return "\\" + escaped if escaped.startswith(" ") else escaped


def secrets_text(secrets: Mapping[str, str]) -> str:
    """The properties file of ``secrets`` that a connector's ``${file:...}`` references read
    (also the content of the Kubernetes Secret the chart mounts on its Connect workers), keys
    in alphabetical order as the chart writes them."""
    return "# Read by Kafka Connect's FileConfigProvider: ${file:<this file>:<key>}.\n" + "".join(
        f"{key}={_properties_value(value)}\n" for key, value in sorted(secrets.items())
    )


def write_secrets(secrets_file: Path, secrets: Mapping[str, str]) -> bool:
    """Write ``secrets`` to a properties file only its owner can read (0600), atomically.

    Returns True when the file held other secrets before: the connector's running tasks still
    use those until restarted (:func:`restart_connector`).
    """
    text = secrets_text(secrets)
    previous = secrets_file.read_text(encoding="utf-8") if secrets_file.is_file() else None
    private_folder(secrets_file.parent)
    write_private(secrets_file, text)
    return previous is not None and previous != text
