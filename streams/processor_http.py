"""The life of a long-running processor that serves only ``/health`` and ``/metrics``
(``foresight quality run``, ``foresight retrain``): serve them, run until SIGINT or SIGTERM,
and when the processor's loop fails, stay up with ``/health`` answering 503 and saying why
until stopped (a liveness probe restarts it), then exit 1.

Its doors are open (no key asked: :func:`streams.access.open_gatekeeper`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.http.app import HttpServer, create_app
from streams.access import open_gatekeeper
from streams.settings import Settings


@dataclass(frozen=True)
class Processor:
    """What :func:`serve` runs: its command for messages (``foresight retrain``), its title on
    the API docs, the setting of its port (environment variable and value), its /health
    report, its loop (until the event is set), and why that loop failed (empty while it has
    not: then a raise from the loop means it could not start)."""

    command: str
    title: str
    port_env: str
    port: int
    health: Callable[[], Mapping[str, Any]]
    run: Callable[[asyncio.Event], Awaitable[None]]
    crashed: Callable[[], str]


async def serve(processor: Processor, settings: Settings, doing: str) -> int:
    """Serve /health and /metrics, and run the processor until SIGINT or SIGTERM: 0, or 1
    when its port is taken or its loop failed. ``doing`` says on stderr what it does once
    serving. What the loop raises before it failed (it could not start) is raised."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(processor.title, open_gatekeeper(settings), health=processor.health)
    http = HttpServer(app, settings.bind_host, processor.port, settings.tls())
    try:
        await http.start()
    except OSError as error:
        print(
            f"{processor.command}: cannot serve /health on {settings.bind_host}:"
            f"{processor.port} ({error}); is another one running? Set {processor.port_env} to "
            "a free port",
            file=sys.stderr,
        )
        return 1
    print(
        f"{processor.command}: {doing}; /health and /metrics on "
        f"{settings.tls().url(settings.bind_host, http.port)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await processor.run(stop)
    except Exception:
        if not processor.crashed():
            raise  # it could not start
        print(
            f"{processor.command}: its loop failed ({processor.crashed()}); /health answers "
            "503 until this process is restarted (SIGTERM or Ctrl-C stops it)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        return 1
    finally:
        await http.stop()
    return 0
