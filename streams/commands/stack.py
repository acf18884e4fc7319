"""``foresight stack up | status | down`` and ``foresight topics create``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from connectors.kafka_admin import TopicRequest, ensure_topics
from deploy.local.stack import LocalStack, ServiceStatus, StackError, endpoints
from streams.access import local_client_key
from streams.setting_domains import Between, option
from streams.settings import Settings
from streams.topics import JSON_TOPICS, data_topics


def local_stack(settings: Settings, quiet: bool = False) -> LocalStack:
    """The local stack the settings describe; progress goes to stderr unless ``quiet``."""
    where = endpoints(
        settings.kafka_bootstrap_servers,
        settings.kafka_connect_url,
        settings.feature_store_url,
        settings.clickhouse_url,
        settings.chdb_path,
        settings.sink_sql_port,
        local_client_key(settings),
        sink_tls=settings.tls(),
        kafka_sasl_port=settings.stack_kafka_sasl_port,
        kafka=settings.kafka(),
        registry_port=settings.schema_registry_port,
    )

    def progress(line: str) -> None:
        if not quiet:
            print(f"  {line}", file=sys.stderr, flush=True)

    return LocalStack(Path(settings.stack_dir), where, progress)


def _print_statuses(statuses: list[ServiceStatus], as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "healthy": all(s.healthy for s in statuses),
                    "services": [s.as_dict() for s in statuses],
                },
                indent=2,
            )
        )
        return
    for s in statuses:
        mark = "ok  " if s.healthy else "DOWN"
        owner = f" pid {s.pid}" if s.pid else ""
        print(f"{mark} {s.name:<15} {s.detail}{owner}")


def _up(args: argparse.Namespace, settings: Settings) -> int:
    try:
        statuses = local_stack(settings, quiet=args.json).up(timeout=args.timeout)
    except StackError as error:
        print(f"foresight stack up: {error}", file=sys.stderr)
        return 1
    _print_statuses(statuses, args.json)
    return 0 if all(s.healthy for s in statuses) else 1


def _status(args: argparse.Namespace, settings: Settings) -> int:
    statuses = local_stack(settings, quiet=True).status()
    _print_statuses(statuses, args.json)
    return 0 if all(s.healthy for s in statuses) else 1


def _down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = local_stack(settings, quiet=True).down(wipe=args.wipe)
    if args.json:
        print(json.dumps({"stopped": stopped, "wiped": args.wipe}))
    else:
        print(
            f"stopped: {', '.join(stopped) or 'nothing was running'}"
            + ("; data wiped" if args.wipe else "")
        )
    return 0


def topic_requests(settings: Settings) -> list[TopicRequest]:
    """Every topic of :func:`streams.topics.data_topics` and the JSON twins, as the broker
    should hold it."""
    return [
        TopicRequest(t.name, t.partition_count(settings), t.config(settings))
        for t in (*data_topics(settings), *JSON_TOPICS)
    ]


def create_topics(settings: Settings) -> dict[str, str]:
    """Create every topic that does not exist yet."""
    return asyncio.run(ensure_topics(settings.kafka(), topic_requests(settings)))


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        outcome = create_topics(settings)
    except KafkaError as error:
        print(f"foresight topics create: {error}", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = [
        {
            "topic": t.name,
            "partitions": t.partition_count(settings),
            "cleanup": t.config(settings)["cleanup.policy"],
            "result": outcome[t.name],
        }
        for t in (*data_topics(settings), *JSON_TOPICS)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(
                f"{row['result']:<8} {row['topic']:<24} {row['partitions']:>3} partitions, "
                f"{row['cleanup']}"
            )
    return 0


def register(subparsers: Any) -> None:
    stack = subparsers.add_parser("stack", help="the local Kafka, Connect, Redis and ClickHouse")
    verbs = stack.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="start what is not running and wait until healthy")
    up.add_argument(
        "--timeout",
        type=option(Between(0, above=True)),
        default=180.0,
        help="seconds to wait per service",
    )
    up.add_argument("--json", action="store_true", help="print the statuses as JSON")
    up.set_defaults(func=_up)
    status = verbs.add_parser("status", help="say for each service healthy or not, and why")
    status.add_argument("--json", action="store_true", help="print as JSON")
    status.set_defaults(func=_status)
    down = verbs.add_parser("down", help="stop what `up` started")
    down.add_argument("--wipe", action="store_true", help="also delete the stack's data")
    down.add_argument("--json", action="store_true", help="print as JSON")
    down.set_defaults(func=_down)

    topics = subparsers.add_parser("topics", help="Kafka topics of Foresight")
    topic_verbs = topics.add_subparsers(dest="verb", required=True)
    create = topic_verbs.add_parser("create", help="create every topic, idempotently")
    create.add_argument("--json", action="store_true", help="print as JSON")
    create.set_defaults(func=_topics_create)
