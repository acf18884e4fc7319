"""``foresight ingest``: the HTTP ingestion server (Prometheus remote_write, agent events,
code-quality snapshots).

Listens on ``FORESIGHT_BIND_HOST``:``FORESIGHT_INGEST_PORT`` and produces to the
``telemetry.metrics``, ``telemetry.agent-events`` and ``telemetry.code-quality`` topics until
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiokafka.errors import KafkaError

from connectors.audit import AuditTrail
from connectors.ingest_http import IngestConfig, IngestServer
from connectors.pii import PiiRulesError, Scrubber
from streams.access import StartRefusedError, audit_trail, gatekeeper
from streams.codecs import codec_for
from streams.settings import Settings
from streams.topics import AGENT_EVENTS, METRICS, QUALITY


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ingest`` command."""
    parser = subparsers.add_parser(
        "ingest",
        help="receive Prometheus remote_write, JSON agent events and code-quality snapshots over "
        "HTTP into Kafka",
    )
    parser.set_defaults(func=run_ingest)


def ingest_config(settings: Settings, audit: AuditTrail) -> IngestConfig:
    """The ingestion server the settings describe, recording refused keys in ``audit``;
    raises :class:`StartRefusedError` or :class:`PiiRulesError` when it must not start."""
    return IngestConfig(
        kafka=settings.kafka(),
        metrics_topic=METRICS.name,
        agent_events_topic=AGENT_EVENTS.name,
        gatekeeper=gatekeeper(settings, "ingest", audit),
        entity_labels=tuple(k.strip() for k in settings.entity_labels.split(",") if k.strip()),
        scrubber=Scrubber.from_files(settings.pii_rules, settings.pii_key_file),
        host=settings.bind_host,
        port=settings.ingest_port,
        tls=settings.tls(),
        quality_topic=QUALITY.name,
        max_future_ms=int(settings.max_future_s * 1000),
        max_age_ms=settings.topic_retention_hours * 3_600_000,
    )


async def _serve(config: IngestConfig, settings: Settings) -> None:
    codec = codec_for(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with IngestServer(config, codec) as server:
        print(
            f"foresight ingest: listening on {config.tls.url(config.host, server.port)} "
            f"(remote_write at /api/v1/write), producing to {config.kafka.describe()}",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted; exit 2 when the keys or the PII rules forbid starting, 1 when
    Kafka or the listening address is unavailable."""
    audit = audit_trail(settings, "ingest")
    try:
        config = ingest_config(settings, audit)
    except (StartRefusedError, PiiRulesError) as error:
        print(f"foresight ingest: {error}", file=sys.stderr)
        return 2
    with audit:
        try:
            asyncio.run(_serve(config, settings))
        except KafkaError as error:
            print(f"foresight ingest: cannot start: {config.kafka.failure(error)}", file=sys.stderr)
            return 1
        except OSError as error:
            print(
                f"foresight ingest: cannot start: {error} (is port {settings.ingest_port} free?)",
                file=sys.stderr,
            )
            return 1
    return 0
