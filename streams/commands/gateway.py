"""``foresight gateway``: the WebSocket live feed, the live page and the HTTP read API."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from connectors.audit import AuditTrail
from connectors.gateway import Gateway, GatewayConfig
from connectors.live_feed import FeedConfig, FeedStartError
from connectors.redis_store import FeatureStore
from streams.access import StartRefusedError, audit_trail, gatekeeper
from streams.codecs import codec_for
from streams.settings import Settings
from streams.topics import ALERTS, PREDICTIONS


def gateway_config(
    args: argparse.Namespace, settings: Settings, audit: AuditTrail
) -> GatewayConfig:
    """The gateway's parameters from the settings, with the command's overrides; refused
    keys are recorded in ``audit``."""
    feed = FeedConfig(
        kafka=settings.kafka(),
        predictions_topic=args.predictions_topic,
        alerts_topic=args.alerts_topic,
        queue_size=settings.gateway_queue_size,
        coalesce=not args.no_coalesce,
        replay_size=args.replay_size,
    )
    return GatewayConfig(
        feed=feed,
        gatekeeper=gatekeeper(settings, "gateway", audit),
        host=settings.bind_host,
        port=settings.gateway_port if args.port is None else args.port,
        tls=settings.tls(),
    )


async def _serve(config: GatewayConfig, settings: Settings) -> None:
    codec = codec_for(settings)
    store = FeatureStore(settings.feature_store_url, settings.prediction_cache_ttl, codec)
    try:
        await Gateway(config, store, codec).run()
    finally:
        await store.close()


def run_gateway(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; exit 2 on a bad configuration, 1 if it cannot start."""
    audit = audit_trail(settings, "gateway")
    try:
        config = gateway_config(args, settings, audit)
    except StartRefusedError as error:
        print(f"foresight gateway: {error}", file=sys.stderr)
        return 2
    with audit:
        try:
            asyncio.run(_serve(config, settings))
        except (FeedStartError, OSError) as error:
            print(f"foresight gateway: {error}", file=sys.stderr)
            return 1
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``gateway`` command."""
    parser = subparsers.add_parser(
        "gateway",
        help="serve predictions and alerts live over WebSocket, the live page and the read API",
    )
    parser.add_argument(
        "--port", type=int, help="port to listen on (default: FORESIGHT_GATEWAY_PORT; 0: any free)"
    )
    parser.add_argument(
        "--predictions-topic", default=PREDICTIONS.name, help="topic of PredictionBatch records"
    )
    parser.add_argument("--alerts-topic", default=ALERTS.name, help="topic of Alert records")
    parser.add_argument(
        "--replay-size",
        type=int,
        default=10_000,
        help="messages kept so a reconnecting client can resume from its last id",
    )
    parser.add_argument(
        "--no-coalesce",
        action="store_true",
        help="never replace a slow client's unsent prediction with a newer one (drop oldest only)",
    )
    parser.set_defaults(func=run_gateway)
