"""``foresight retrain``: the retrain controller, a long-running process.

Follows ``alerts``; a firing ``model_drift`` of the production failure-risk model trains a
candidate from ClickHouse history and registers it (workers then score it in shadow); once
enough of its outcomes are labelled, the paired promotion test promotes or refuses it
(:mod:`streams.retrain_controller`). Each step is a line on stdout (JSON with ``--json``).
Promoting and refusing need a key with the ``operate`` role, checked at start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

from streams.access import audit_trail
from streams.operations import OperatorRefusedError, operator
from streams.retrain_controller import RetrainController, Step, run
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
        controller = RetrainController(settings, audit)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await run(controller, report, stop)

        asyncio.run(main())
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retrain``."""
    retrain = subparsers.add_parser(
        "retrain",
        help="the retrain controller: drift alerts -> candidate -> shadow -> tested promotion",
    )
    retrain.add_argument("--json", action="store_true", help="one JSON object per step")
    retrain.set_defaults(func=_retrain)
