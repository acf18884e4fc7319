"""``/health`` of a processor that serves only open doors, through the HTTP stack every server
shares (no socket: the ASGI app in process)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from connectors.http.app import create_app
from streams.access import open_gatekeeper
from streams.settings import Settings


async def get_health(
    health: Callable[[], Mapping[str, Any]], settings: Settings
) -> tuple[int, dict[str, Any]]:
    """The status code and body ``GET /health`` answers with ``health`` as the report."""
    app = create_app("processor", open_gatekeeper(settings), health=health)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://processor") as client:
        reply = await client.get("/health")
    body: dict[str, Any] = reply.json()
    return reply.status_code, body
