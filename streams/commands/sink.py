"""``foresight sink clickhouse``: store every data topic in ClickHouse, and answer SQL."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import asdict
from functools import partial
from typing import Any
from urllib.parse import urlparse

from connectors.clickhouse import ChdbStore, ClickHouseStore, ServerStore
from connectors.clickhouse_sink import SQL_HOST, ClickHouseSink, SinkError
from connectors.dependencies import health_report
from connectors.http.app import HttpServer, create_app
from connectors.http.auth import Gatekeeper
from streams.access import StartRefusedError, audit_trail, gatekeeper
from streams.codecs import codec_for
from streams.settings import Settings
from streams.topics import data_topics

DEFAULT_GROUP = "foresight-clickhouse-sink"
PROGRESS_SECONDS = 5.0


def store_factory(settings: Settings) -> ClickHouseStore:
    """The store the settings name: the server at ``CLICKHOUSE_URL``, else chdb's folder."""
    if settings.clickhouse_url:
        return ServerStore(settings.clickhouse_url)
    return ChdbStore(settings.chdb_path)


def store_where(settings: Settings) -> str:
    """The store the settings name, for messages: a server by its address alone (the URL
    carries the password), or chdb's folder."""
    if settings.clickhouse_url:
        url = urlparse(settings.clickhouse_url)
        return f"ClickHouse server {url.hostname}:{url.port or 8123}"
    return f"chdb at {settings.chdb_path}"


def _totals(sink: ClickHouseSink) -> str:
    stats = sink.stats
    return (
        f"{stats.rows_inserted:,} rows from {stats.records:,} records, {stats.skipped:,} "
        f"skipped, {stats.rows_already_stored:,} already stored, {stats.rows_repeated:,} "
        "repeated outputs"
    )


async def _progress(sink: ClickHouseSink, stop: asyncio.Event) -> None:
    last_rows, last_time = 0, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PROGRESS_SECONDS)
        now, stats = time.monotonic(), sink.stats
        rate = (stats.rows_inserted - last_rows) / (now - last_time)
        last_rows, last_time = stats.rows_inserted, now
        print(f"sink: {rate:,.0f} rows/s; {_totals(sink)}", file=sys.stderr, flush=True)


async def _run(sink: ClickHouseSink, keys: Gatekeeper, settings: Settings) -> None:
    """Serve /health and /metrics, and run the sink until SIGTERM or SIGINT."""
    app = create_app(
        "Foresight sink",
        keys,
        health=lambda: {**health_report(sink.store, sink.brokers), **asdict(sink.stats)},
    )
    metrics = HttpServer(app, settings.bind_host, settings.sink_metrics_port, settings.tls())
    try:
        await metrics.start()
    except OSError as error:
        raise SinkError(
            f"cannot serve /metrics on {settings.bind_host}:{settings.sink_metrics_port} "
            f"({error}); is another sink running? Set FORESIGHT_SINK_METRICS_PORT to a free port"
        ) from error
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    progress = asyncio.create_task(_progress(sink, stop))
    try:
        await sink.run(stop)
    finally:
        stop.set()
        await progress
        await metrics.stop()


def _clickhouse(args: argparse.Namespace, settings: Settings) -> int:
    topics = args.topics or [t.name for t in data_topics(settings)]
    audit = audit_trail(settings, "sink")
    try:
        keys = gatekeeper(settings, "sink", audit)
    except StartRefusedError as error:
        print(f"foresight sink: {error}", file=sys.stderr)
        return 2
    sink = ClickHouseSink(
        kafka=settings.kafka(),
        topics=topics,
        group_id=args.group,
        store_factory=partial(store_factory, settings),
        batch_rows=settings.sink_batch_rows,
        batch_seconds=settings.sink_batch_seconds,
        ttl_days=settings.clickhouse_ttl_days,
        sql_port=settings.sink_sql_port,
        gatekeeper=keys,
        sql_limits=settings.sql_limits(),
        audit=audit,
        tls=settings.tls(),
        store_where=store_where(settings),
        codec=codec_for(settings),
    )
    where = store_where(settings)
    tls = settings.tls()
    print(
        f"sink: {', '.join(topics)} -> {where} as group {args.group}; read-only SQL on "
        f"{tls.url(SQL_HOST, settings.sink_sql_port)}, /metrics on "
        f"{tls.url(settings.bind_host, settings.sink_metrics_port, '/metrics')}",
        file=sys.stderr,
        flush=True,
    )
    with audit:
        try:
            asyncio.run(_run(sink, keys, settings))
        except SinkError as error:
            print(f"foresight sink: {error}", file=sys.stderr)
            return 1
    print(f"sink: stopped after {_totals(sink)}", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    sink = subparsers.add_parser("sink", help="store Kafka topics in ClickHouse")
    kinds = sink.add_subparsers(dest="kind", required=True)
    clickhouse = kinds.add_parser(
        "clickhouse",
        help="every data topic into ClickHouse tables; answers SQL while it owns chdb's folder",
    )
    clickhouse.add_argument(
        "--topics",
        nargs="+",
        metavar="TOPIC",
        help="topics to store (default: every data topic, the audit topic as "
        "FORESIGHT_AUDIT_TOPIC names it)",
    )
    clickhouse.add_argument(
        "--group", default=DEFAULT_GROUP, help=f"consumer group (default: {DEFAULT_GROUP})"
    )
    clickhouse.set_defaults(func=_clickhouse)
