"""``foresight simulate``: realistic telemetry with incidents, produced to Kafka.

Event time can run faster than wall time (``--speed``): a replay of the past hour at speed 60
takes a minute. By default the run ends at the present moment, so its timestamps pass the
worker's checks (not in the future, not older than retention).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from connectors.kafka_producer import RecordProducer
from streams import topics
from streams.codecs import codec_for
from streams.setting_domains import Between, option
from streams.settings import Settings
from streams.simulation import (
    Incident,
    SimEvent,
    Simulation,
    SimulationConfig,
    csv_series,
    default_incidents,
    utc_offset_ms,
)

SCHEMA_OF = {t.name: t.schema for t in topics.ALL_TOPICS}


async def play(
    settings: Settings,
    events: Iterable[SimEvent],
    speed: float,
    progress: Callable[[Counter[str], float], None] | None = None,
    stop: asyncio.Event | None = None,
) -> Counter[str]:
    """Produce ``events`` to Kafka, pacing event time at ``speed`` x wall time (0: no pacing).

    Returns the count of records produced per topic, plus ``samples`` for metric samples.
    """
    producer = RecordProducer(settings.kafka(), codec_for(settings))
    await producer.start()
    counts: Counter[str] = Counter()
    started = time.monotonic()
    first_ms: int | None = None
    last_report = started
    try:
        for topic, key, record in events:
            if stop is not None and stop.is_set():
                break
            t_ms: int = record.get("event_time") or record["start_time"]
            if first_ms is None:
                first_ms = t_ms
            if speed > 0:
                ahead = (t_ms - first_ms) / 1000 / speed - (time.monotonic() - started)
                if ahead > 0.002:
                    await producer.flush()
                    await asyncio.sleep(ahead)
            await producer.send(topic, key, SCHEMA_OF[topic], record)
            counts[topic] += 1
            if topic == topics.METRICS.name:
                counts["samples"] += len(record["values"])
            now = time.monotonic()
            if progress is not None and now - last_report >= 1.0:
                last_report = now
                progress(counts, now - started)
        await producer.flush()
    finally:
        await producer.stop()
    return counts


def simulation_from_args(args: argparse.Namespace) -> tuple[Simulation, float]:
    """The simulation the arguments describe and its duration in simulated seconds."""
    duration_s = args.duration
    end_ms = int(time.time() * 1000) if args.start is None else args.start + int(duration_s * 1000)
    # The fleet's time zone: its clock reads --local-end-hour at the end.
    local = 0 if args.local_end_hour is None else utc_offset_ms(args.local_end_hour, end_ms)
    incidents: tuple[Incident, ...] = ()
    if args.incidents:
        # The default schedule spread over the time after the quiet lead-in, so the models
        # have learned each host's normal before anything goes wrong.
        span = duration_s - args.quiet_s
        if span <= 0:
            raise ValueError(f"--quiet-s {args.quiet_s} leaves no time for incidents")
        incidents = tuple(
            dataclasses.replace(i, start_s=i.start_s + args.quiet_s)
            for i in default_incidents(args.hosts, args.agents, span_s=min(span, 3600.0))
        )
    config = SimulationConfig(
        hosts=args.hosts,
        agents=args.agents,
        seed=args.seed,
        scrape_interval_s=args.interval,
        start_ms=end_ms - int(duration_s * 1000),
        incidents=incidents,
        workflows_per_min=args.workflows_per_min,
        utc_offset_ms=local,
    )
    return Simulation(config), duration_s


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    def report(counts: Counter[str], elapsed: float) -> None:
        if not args.json:
            print(
                f"  {elapsed:6.1f}s  {counts['samples']:>10,} samples  "
                f"{counts[topics.AGENT_EVENTS.name]:>7,} agent events  "
                f"{counts[topics.LABELS.name]:>3} labels  "
                f"({counts['samples'] / max(elapsed, 1e-9):,.0f} samples/s)",
                file=sys.stderr,
                flush=True,
            )

    if args.csv:
        try:
            events: Iterable[SimEvent] = csv_series(Path(args.csv), args.entity, args.metric)
        except (OSError, ValueError) as error:
            print(f"foresight simulate: {error}", file=sys.stderr)
            return 2
        duration: float | None = None  # a replayed file spans what it spans
    else:
        try:
            simulation, duration = simulation_from_args(args)
        except ValueError as error:
            print(f"foresight simulate: {error}", file=sys.stderr)
            return 2
        events = simulation.events(duration)
    started = time.monotonic()
    counts = asyncio.run(play(settings, events, args.speed, report))
    summary: dict[str, Any] = {
        "records": {k: v for k, v in counts.items() if k != "samples"},
        "samples": counts["samples"],
        "simulated_s": duration,
        "wall_s": round(time.monotonic() - started, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"produced {counts['samples']:,} metric samples in "
            f"{counts[topics.METRICS.name]:,} batches, "
            f"{counts[topics.AGENT_EVENTS.name]:,} agent events and "
            f"{counts[topics.LABELS.name]} labels in {summary['wall_s']}s"
        )
    return 0


def add_simulation_arguments(
    parser: argparse.ArgumentParser,
    duration: float,
    speed: float = 60.0,
    quiet_s: float = 0.0,
    local_end_hour: float | None = None,
) -> None:
    """The arguments that describe a simulation (shared by ``simulate`` and ``demo``)."""
    parser.add_argument("--hosts", type=int, default=20, help="hosts to simulate (default 20)")
    parser.add_argument("--agents", type=int, default=5, help="agents to simulate (default 5)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--interval",
        type=float,
        default=10.0,
        help="scrape interval in simulated seconds (default 10)",
    )
    parser.add_argument(
        "--duration",
        type=option(Between(0, above=True)),
        default=duration,
        help=f"simulated seconds (default {duration:.0f})",
    )
    parser.add_argument(
        "--speed",
        type=option(Between(0)),
        default=speed,
        help=f"simulated seconds per wall second, 0: as fast as possible (default {speed:g})",
    )
    parser.add_argument(
        "--quiet-s",
        type=float,
        default=quiet_s,
        help=f"simulated seconds of normal operation before the first incident "
        f"(default {quiet_s:g})",
    )
    parser.add_argument(
        "--start",
        type=int,
        default=None,
        help="event time of the first scrape (epoch ms); default: end now",
    )
    parser.add_argument(
        "--local-end-hour",
        type=float,
        default=local_end_hour,
        help="the hour (0 to 24) the hosts' local clock reads at the end of the simulated "
        "span; their business hours follow it "
        + ("(default: UTC)" if local_end_hour is None else f"(default {local_end_hour:g})"),
    )
    parser.add_argument(
        "--workflows-per-min",
        type=float,
        default=10.0,
        help="workflows (agent tasks with a workflow_id, a few with an injected rare path, "
        "loop, stall or precursor error) starting per simulated minute, 0: none (default 10)",
    )
    parser.add_argument(
        "--no-incidents",
        dest="incidents",
        action="store_false",
        help="a healthy fleet: inject no incidents",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("simulate", help="produce realistic telemetry to Kafka")
    add_simulation_arguments(parser, duration=3600.0)
    parser.add_argument("--csv", help="replay a CSV (timestamp,value) as one metric instead")
    parser.add_argument("--entity", default="csv-1", help="entity of the CSV series")
    parser.add_argument("--metric", default="value", help="metric name of the CSV series")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=_simulate)
