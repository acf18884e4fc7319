"""``foresight tail predictions|alerts``: follow Foresight's output topics from a terminal.

The follower joins no consumer group: it assigns itself every partition of the topic, so it
never steals partitions from the worker, the sink or another operator's tail, and commits
nothing. By default it starts at the end and prints what arrives; ``--from-beginning`` replays
what the topic still retains first. One readable line per record, or the decoded record as one
JSON object per line with ``--json`` (for ``jq``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fnmatch
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from connectors.json_text import dumps
from connectors.kafka_clients import KafkaConfig
from schemas.codec import Codec, DeadLetter, Message
from schemas.field_rules import one_line
from schemas.predictions import as_rows, prediction_rows
from streams.codecs import codec_for
from streams.settings import Settings
from streams.topics import ALERTS, PREDICTIONS, TopicSpec

Record = dict[str, Any]
FOLLOWED: dict[str, TopicSpec] = {"predictions": PREDICTIONS, "alerts": ALERTS}
_POLL_MS = 500


class TailError(Exception):
    """The topic cannot be followed (no such topic, Kafka unreachable); the message says why."""


async def topic_partitions(kafka: KafkaConfig, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``, asked of the broker's metadata.

    A consumer without a group learns partitions only on a metadata refresh that
    ``consumer.topics()`` does not force, so the admin client's ``describe_topics`` is asked.
    """
    admin = kafka.admin(client_id="foresight-tail")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0 and entry["partitions"]:
            return sorted(TopicPartition(topic, p["partition"]) for p in entry["partitions"])
    raise TailError(
        f"topic {topic!r} does not exist on {kafka.bootstrap_servers}; create Foresight's "
        "topics with `foresight topics create`, or name another with --topic"
    )


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _value(kind: str, value: float | None) -> str:
    # An agent's task duration is predicted in milliseconds; a person reads seconds.
    if kind == "DURATION" and value is not None:
        return f"{value / 1000:.4g}s"
    return _number(value)


def prediction_line(batch: Record) -> str:
    """A PredictionBatch as one line: time, entity, then each prediction's kind and numbers,
    and what drove it in brackets."""
    parts = [
        f"{p['kind']} {p['metric']}={_value(p['kind'], p['value'])} score={_number(p['score'])}"
        + (f" +{p['horizon_s']}s" if p["horizon_s"] else "")
        + (f" [{_drivers(p['drivers'])}]" if p["drivers"] else "")
        for p in prediction_rows(batch)
    ]
    return f"{_when(batch['event_time'])}  {batch['entity']}  " + "; ".join(parts)


def _drivers(drivers: list[Record]) -> str:
    return ", ".join(f"{d['feature']} {d['contribution']:+.2f}" for d in drivers)


def alert_line(alert: Record) -> str:
    """An Alert as one line: time, entity, status, severity, rule and summary."""
    return (
        f"{_when(alert['event_time'])}  {alert['entity']}  {alert['status']:<8} "
        f"{alert['severity']:<8} {alert['rule']}: {alert['summary']}"
    )


LINES: dict[str, Callable[[Record], str]] = {"predictions": prediction_line, "alerts": alert_line}


async def follow(
    kafka: KafkaConfig,
    topic: str,
    schema: str,
    emit: Callable[[Record], None],
    *,
    entity: str | None = None,
    from_beginning: bool = False,
    limit: int | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[int], None] | None = None,
    codec: Codec | None = None,
) -> int:
    """Hand each decoded record of ``topic`` whose entity matches the glob to ``emit``.

    Returns the number emitted, once ``limit`` records were or ``stop`` is set. Records that
    do not decode as ``schema`` are reported on stderr and skipped. ``ready`` is called with
    the number of partitions once the start offsets are fixed: a record produced after that
    is seen even without ``from_beginning``.
    """
    stop = stop or asyncio.Event()
    partitions = await topic_partitions(kafka, topic)
    codec = codec or Codec()
    consumer = kafka.consumer(
        group_id=None,
        enable_auto_commit=False,
        client_id="foresight-tail",
        # A fresh assignment resets its offsets by this policy, concurrently with the seek
        # below: both must agree, or the reset can win and move the start.
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    emitted = 0
    try:
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:  # seeks are lazy: resolve them now, so "ready" means ready
            await consumer.position(tp)
        if ready is not None:
            ready(len(partitions))
        while not stop.is_set() and (limit is None or emitted < limit):
            batches = await consumer.getmany(*partitions, timeout_ms=_POLL_MS)
            for tp in sorted(batches):
                for m in batches[tp]:
                    message = Message(m.topic, m.partition, m.offset, m.key, m.value)
                    record = codec.decode_message(message, schema)
                    if isinstance(record, DeadLetter):
                        print(
                            f"foresight tail: skipped {m.topic}[{m.partition}]@{m.offset}: "
                            f"{record.reason}",
                            file=sys.stderr,
                        )
                        continue
                    if entity is not None and not fnmatch.fnmatchcase(record["entity"], entity):
                        continue
                    emit(record)
                    emitted += 1
                    if limit is not None and emitted >= limit:
                        return emitted
    finally:
        await consumer.stop()
    return emitted


async def _tail(args: argparse.Namespace, settings: Settings) -> int:
    spec = FOLLOWED[args.what]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    line = LINES[args.what]

    topic = args.topic or spec.name

    def emit(record: Record) -> None:
        if args.json:  # one object per prediction, whichever version wrote the batch
            shown = as_rows(record) if args.what == "predictions" else record
            # Strict JSON for any reader (jq refuses NaN): a value that is not a number is null.
            print(dumps(shown).decode(), flush=True)
        else:
            print(one_line(line(record)), flush=True)

    def ready(partitions: int) -> None:
        start = "the oldest retained record" if args.from_beginning else "the end"
        print(
            f"foresight tail: following {topic} ({partitions} partitions) from {start}; "
            "Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )

    return await follow(
        settings.kafka(),
        topic,
        spec.schema,
        emit,
        entity=args.entity,
        from_beginning=args.from_beginning,
        limit=args.limit,
        stop=stop,
        ready=ready,
        codec=codec_for(settings),
    )


def run_tail(args: argparse.Namespace, settings: Settings) -> int:
    """Follow until the limit, Ctrl-C or SIGTERM; exit 1 when the topic cannot be read."""
    if args.limit is not None and args.limit < 1:
        print(f"foresight tail: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_tail(args, settings))
    except TailError as error:
        print(f"foresight tail: {error}", file=sys.stderr)
        return 1
    except KafkaError as error:
        print(f"foresight tail: {settings.kafka().failure(error)}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tail`` command."""
    parser = subparsers.add_parser(
        "tail", help="follow the predictions or alerts topic, one line (or JSON) per record"
    )
    parser.add_argument("what", choices=sorted(FOLLOWED), help="which output topic to follow")
    parser.add_argument("--entity", help="only records whose entity matches this glob (web-*)")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start with the oldest retained record instead of the next new one",
    )
    parser.add_argument("--limit", type=int, help="stop after this many records")
    parser.add_argument("--topic", help="read this topic instead (default: predictions or alerts)")
    parser.add_argument("--json", action="store_true", help="print each record as a JSON line")
    parser.set_defaults(func=run_tail)
