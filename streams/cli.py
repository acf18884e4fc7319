"""The ``foresight`` command line: one entry point, one module per command group.

Each module in :mod:`streams.commands` exposes ``register(subparsers)``, which adds its
sub-command(s) and sets ``func`` on the parser: a callable taking the parsed arguments and the
settings, returning the exit code. Every command that reports accepts ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence

from connectors.kafka_clients import KafkaRefusedError
from connectors.schema_registry import RegistryError
from streams import commands
from streams.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command module's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="foresight",
        description="Foresight: predictions and alerts from operations telemetry on Kafka.",
    )
    parser.add_argument("--config", help="YAML settings file (default: ./foresight.yaml)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config_file=args.config)
    except (ValueError, FileNotFoundError) as error:
        print(f"foresight: bad settings: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Client libraries narrate every rebalance at INFO; the commands say what matters.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.root.level))
    # ClickHouse's HTTP client retries and logs each failed connection before the one error
    # the command reports.
    for narrator in ("urllib3.connectionpool", "clickhouse_connect.driver._backend.http_sync"):
        logging.getLogger(narrator).setLevel(max(logging.ERROR, logging.root.level))
    try:
        code: int = args.func(args, settings)
    except RegistryError as error:  # refused a schema, or none answers at SCHEMA_REGISTRY_URL
        print(f"foresight {args.command}: {error}", file=sys.stderr)
        return 1
    except KafkaRefusedError as error:  # a client could not start; its message says why
        print(f"foresight {args.command}: {error.args[0]}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        # Python flushes stdout again on its way out; pointed at nothing, that stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
