"""``foresight quality``: code-quality snapshots from git history, and their forecasts.

* ``foresight quality backfill REPO``: measure every first-parent commit of a git repository
  (:mod:`connectors.git_quality`), oldest first; print a line per commit (``--json``: the
  snapshots as JSON lines), write them to a file (``--output``), and/or produce them to
  ``telemetry.code-quality`` (``--produce``). Progress goes to stderr.
* ``foresight quality run``: the quality processor (:mod:`streams.quality`) until SIGINT or
  SIGTERM, serving ``/health`` and ``/metrics`` on ``FORESIGHT_QUALITY_PORT``. When its
  consumer fails it stays up, ``/health`` answering 503 with the reason, until stopped (a
  liveness probe restarts it), and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from aiokafka.errors import KafkaError

from connectors.git_quality import GitError, backfill
from connectors.kafka_producer import RecordProducer
from schemas.quality import SCHEMA
from streams.codecs import codec_for
from streams.processor_http import Processor, serve
from streams.quality import QualityRunner, quality_config, quality_group
from streams.setting_domains import Between, option
from streams.settings import Settings
from streams.topics import QUALITY

Record = dict[str, Any]


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _line(snapshot: Record) -> str:
    """One commit's snapshot, for a person."""
    lines, tests = snapshot["lines"], snapshot["test_lines"]
    ratio = f"{tests / lines:.2f}" if lines else "-"
    lint = "-" if snapshot["lint_warnings"] is None else str(snapshot["lint_warnings"])
    return (
        f"{snapshot['commit'][:10]}  {_day(snapshot['event_time'])}  {lines:>7}  "
        f"{snapshot['mean_complexity']:>5.2f}  {snapshot['max_complexity']:>4.0f}  "
        f"{snapshot['test_count']:>6}  {ratio:>5}  {lint:>5}  "
        f"{100 * (snapshot['duplication'] or 0.0):>5.1f}%  "
        f"+{snapshot['churn_added']}/-{snapshot['churn_deleted']}"
    )


HEADER = (
    f"{'commit':10}  {'time (UTC)':16}  {'lines':>7}  {'cc':>5}  {'max':>4}  {'tests':>6}  "
    f"{'t/c':>5}  {'lint':>5}  {'dup':>6}  churn"
)


def _progress(every: int) -> Any:
    def report(done: int, total: int, snapshot: Record) -> None:
        if done == total or done % every == 0:
            print(
                f"quality backfill: {done}/{total} commits ({snapshot['commit'][:10]}, "
                f"{_day(snapshot['event_time'])})",
                file=sys.stderr,
                flush=True,
            )

    return report


async def _produce(settings: Settings, snapshots: Iterable[Record], out: Any) -> int:
    """Produce every snapshot to telemetry.code-quality, keyed by repository."""
    producer = RecordProducer(settings.kafka(), codec_for(settings))
    await producer.start()
    count = 0
    try:
        for snapshot in snapshots:
            await producer.send(QUALITY.name, snapshot["repository"], SCHEMA, snapshot)
            out(snapshot)
            count += 1
    finally:
        await producer.stop()
    return count


def _run_backfill(args: argparse.Namespace, settings: Settings) -> int:
    repo = Path(args.repo)
    try:
        snapshots = backfill(
            repo,
            args.name,
            ref=args.ref,
            since=args.since,
            max_commits=args.max_commits,
            lint=not args.no_lint,
            progress=_progress(args.progress_every),
        )
    except GitError as error:  # before the header, and before --output is created
        print(f"foresight quality backfill: {error}", file=sys.stderr)
        return 2
    written: TextIO | None = open(args.output, "w") if args.output else None  # noqa: SIM115
    first: Record | None = None
    last: Record | None = None

    def out(snapshot: Record) -> None:
        nonlocal first, last
        first = first or snapshot
        last = snapshot
        if written is not None:
            written.write(json.dumps(snapshot) + "\n")
        if args.json:
            print(json.dumps(snapshot), flush=True)
        elif not args.quiet:
            print(_line(snapshot), flush=True)

    if not args.json and not args.quiet:
        print(HEADER)
    try:
        if args.produce:
            count = asyncio.run(_produce(settings, snapshots, out))
        else:
            count = 0
            for snapshot in snapshots:
                out(snapshot)
                count += 1
    except GitError as error:
        print(f"foresight quality backfill: {error}", file=sys.stderr)
        return 2
    except KafkaError as error:
        print(
            f"foresight quality backfill: Kafka at {settings.kafka_bootstrap_servers} refused "
            f"the snapshots ({error!r}); is it up?",
            file=sys.stderr,
        )
        return 1
    finally:
        if written is not None:
            written.close()
    where = [f"written to {args.output}"] * bool(args.output)
    where += [f"produced to {QUALITY.name}"] * args.produce
    span = (
        f" from {_day(first['event_time'])} to {_day(last['event_time'])}" if first and last else ""
    )
    name = last["repository"] if last else repo.name
    print(
        f"quality backfill: {count} snapshots of {name}{span}"
        + (f", {' and '.join(where)}" if where else ""),
        file=sys.stderr,
    )
    return 0


async def _serve(settings: Settings, topic: str) -> int:
    runner = QualityRunner(settings, codec_for(settings), topic)
    processor = Processor(
        "foresight quality run",
        "Foresight quality",
        "FORESIGHT_QUALITY_PORT",
        settings.quality_port,
        runner.health,
        runner.run,
        lambda: runner.progress.crashed,
    )
    doing = (
        f"consuming {topic} as group {quality_group(settings)} from {settings.kafka().describe()}"
    )
    return await serve(processor, settings, doing)


def _run_processor(args: argparse.Namespace, settings: Settings) -> int:
    try:
        quality_config(settings)
    except ValueError as error:
        print(f"foresight quality run: bad settings: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(settings, args.topic))
    except KafkaError as error:
        print(
            f"foresight quality run: cannot go on: {settings.kafka().failure(error)}",
            file=sys.stderr,
        )
        return 1


def register(subparsers: Any) -> None:
    """Add ``quality backfill`` and ``quality run``."""
    parser = subparsers.add_parser(
        "quality", help="code-quality snapshots from git history, forecasts and debt alerts"
    )
    commands = parser.add_subparsers(dest="quality_command", required=True, metavar="ACTION")
    fill = commands.add_parser(
        "backfill", help="measure a git repository's history into code-quality snapshots"
    )
    fill.add_argument("repo", help="a git repository (a work tree or a bare repository)")
    fill.add_argument("--name", help="the repository's name (default: its folder's name)")
    fill.add_argument("--ref", default="HEAD", help="the branch or commit to walk (HEAD)")
    fill.add_argument("--since", help="only commits after this date (as git log --since)")
    fill.add_argument(
        "--max-commits", type=option(Between(1), int), help="only the newest N commits"
    )
    fill.add_argument("--no-lint", action="store_true", help="leave lint warnings unmeasured")
    fill.add_argument("--output", help="also write the snapshots to this file, as JSON lines")
    fill.add_argument("--produce", action="store_true", help=f"also produce them to {QUALITY.name}")
    fill.add_argument("--json", action="store_true", help="print the snapshots as JSON lines")
    fill.add_argument("--quiet", action="store_true", help="print only the summary")
    fill.add_argument(
        "--progress-every",
        type=option(Between(1), int),
        default=25,
        help="report progress every N commits (25)",
    )
    fill.set_defaults(func=_run_backfill)
    run = commands.add_parser(
        "run", help="forecast each repository's quality and raise debt alerts (a processor)"
    )
    run.add_argument(
        "--topic",
        default=QUALITY.name,
        help=f"the topic of snapshots to consume (default: {QUALITY.name})",
    )
    run.set_defaults(func=_run_processor)
