"""``foresight retrain``: the retrain controller, a long-running process.

Follows ``alerts``; a firing ``model_drift`` of the production failure-risk model trains a
candidate from ClickHouse history and registers it (workers then score it in shadow); once
enough of its outcomes are labelled, the paired promotion test promotes or refuses it
(:mod:`streams.retrain_controller`). Each step is a line on stdout (JSON with ``--json``).
Promoting and refusing need a key with the ``operate`` role, checked at start.

It serves ``/health`` and ``/metrics`` on ``FORESIGHT_RETRAIN_PORT``. When its loop fails it
stays up, ``/health`` answering 503 with the reason, until stopped (a liveness probe restarts
it), and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from aiokafka.errors import KafkaError

from streams import topics
from streams.access import audit_trail
from streams.operations import OperatorRefusedError, operator
from streams.processor_http import Processor, serve
from streams.retrain_controller import RetrainController, RetrainRunner, Step
from streams.settings import Settings


def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    def report(step: Step) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {"at": at, "event": step.event, **step.detail}
        print(json.dumps(record) if args.json else f"{at} {step.line()}", flush=True)

    with audit_trail(settings, "retrain") as audit:
        try:
            operator(settings, "model.retrain", "failure_risk", audit)
        except OperatorRefusedError as error:
            print(f"foresight retrain: {error}", file=sys.stderr)
            return 2
        runner = RetrainRunner(RetrainController(settings, audit), report, args.topic)
        processor = Processor(
            "foresight retrain",
            "Foresight retrain",
            "FORESIGHT_RETRAIN_PORT",
            settings.retrain_port,
            runner.health,
            runner.run,
            lambda: runner.progress.crashed,
        )
        doing = (
            f"following {args.topic} on {settings.kafka().describe()} for drifts of "
            f"{runner.controller.model}"
        )
        try:
            return asyncio.run(serve(processor, settings, doing))
        except KafkaError as error:
            print(
                f"foresight retrain: cannot go on: {settings.kafka().failure(error)}",
                file=sys.stderr,
            )
            return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retrain``."""
    retrain = subparsers.add_parser(
        "retrain",
        help="the retrain controller: drift alerts -> candidate -> shadow -> tested promotion",
    )
    retrain.add_argument("--json", action="store_true", help="one JSON object per step")
    retrain.add_argument(
        "--topic",
        default=topics.ALERTS.name,
        help=f"the topic of alerts to follow, with as many partitions as {topics.ALERTS.name} "
        f"(default: {topics.ALERTS.name})",
    )
    retrain.set_defaults(func=_retrain)
