"""``foresight api``: the intelligence API (REST under ``/v1``, GraphQL at ``/graphql``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from typing import TYPE_CHECKING, Any

from connectors.audit import AuditTrail
from connectors.live_feed import FeedStartError
from streams.access import StartRefusedError, audit_trail, gatekeeper
from streams.codecs import codec_for
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.api.server import ApiServer


async def _serve(server: ApiServer, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        # What startup made (modules, the app, schemas: some 230,000 objects) lives as long
        # as the process: out of the collector's reach, a full collection under load takes
        # milliseconds instead of the 40-400 ms in which no request was answered.
        gc.collect()
        gc.freeze()
        print(
            f"foresight api: listening on {settings.tls().url(settings.bind_host, server.port)} "
            "(REST under /v1, GraphQL at /graphql, OpenAPI at /openapi.json)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def api_server(args: argparse.Namespace, settings: Settings, audit: AuditTrail) -> ApiServer:
    """The API the settings describe; raises :class:`StartRefusedError` when the keys forbid
    starting."""
    # Imported here: GraphQL and the API's models take seconds to load, which no other
    # command should pay for.
    from streams.api.server import ApiConfig, ApiServer

    config = ApiConfig(
        gatekeeper=gatekeeper(settings, "api", audit),
        host=settings.bind_host,
        port=settings.api_port if args.port is None else args.port,
    )
    return ApiServer(settings, config, audit, codec_for(settings))


def run_api(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM; exit 2 when the keys forbid starting, 1 when Kafka or the
    address is unavailable."""
    audit = audit_trail(settings, "api")
    try:
        server = api_server(args, settings, audit)
    except StartRefusedError as error:
        print(f"foresight api: {error}", file=sys.stderr)
        return 2
    with audit:
        try:
            asyncio.run(_serve(server, settings))
        except (FeedStartError, OSError) as error:
            print(f"foresight api: cannot start: {error}", file=sys.stderr)
            return 1
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``api`` command."""
    parser = subparsers.add_parser(
        "api",
        help="serve on-demand and batch predictions, history, features and models over REST "
        "and GraphQL",
    )
    parser.add_argument(
        "--port", type=int, help="port to listen on (default: FORESIGHT_API_PORT; 0: any free)"
    )
    parser.set_defaults(func=run_api)
