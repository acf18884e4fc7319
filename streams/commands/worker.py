"""``foresight worker``: run the Faust stream processors (one process; scale with partitions)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from typing import Any

from aiokafka.errors import KafkaError

from connectors.kafka_admin import TopicRequest, ensure_topics
from models.signals import RulesError
from streams import topics
from streams.commands.stack import topic_requests
from streams.settings import Settings


def run_worker(settings: Settings) -> int:
    """Run the worker until it is stopped (SIGTERM or Ctrl-C); returns the exit code."""
    from faust.worker import Worker

    from streams.app import create_app
    from streams.state_store import discard_stale_state

    try:
        app = create_app(settings)
    except RulesError as error:
        print(f"foresight worker: {error}", file=sys.stderr)
        return 2
    # A topic the metadata does not list when Faust's consumer subscribes is left out of the
    # assignment until the next rebalance (a worker started before `foresight topics create`
    # read nothing), and a table's write to a changelog its producer does not know crashes
    # the agent, again at every restart. So the data topics and the ones Faust makes for
    # itself exist, and are listed, before Faust starts (idempotent: existing ones are kept).
    internal = topics.routing_stats(settings)
    needed = [
        *topic_requests(settings),
        TopicRequest(internal.name, internal.partition_count(settings), {}),
        TopicRequest(f"{app.conf.id}-__assignor-__leader", 1, {}),
        *(
            TopicRequest(table.changelog_topic_name, settings.topic_partitions,
                         {"cleanup.policy": "compact"})
            for table in app.tables.values()
        ),
    ]  # fmt: skip
    try:
        asyncio.run(ensure_topics(settings.kafka(), needed))
    except KafkaError as error:
        print(f"foresight worker: {settings.kafka().failure(error)}", file=sys.stderr)
        return 2
    if settings.worker_store.startswith("rocksdb"):
        changelogs = [(name, table.changelog_topic_name) for name, table in app.tables.items()]
        discard_stale_state(app.conf.tabledir, settings.kafka(), changelogs)
    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG and costs ~14% of throughput.
    worker.spinner = None
    # What exists by now (modules, classes, functions: 200,000 objects and more) lives as
    # long as the process: out of the collector's full passes, which took 130 ms every few
    # seconds (the worker stands still meanwhile) and take a third of that without them.
    gc.collect()
    gc.freeze()
    worker.execute_from_commandline()
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    return run_worker(settings)


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser(
        "worker", help="run the stream processors: features, predictions, alerts, routing"
    )
    worker.set_defaults(func=_worker)
