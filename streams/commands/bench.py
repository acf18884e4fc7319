"""``foresight bench pipeline``: run a benchmark of ``load-tests/`` (a source checkout's)."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load-tests"
BENCHMARKS = {
    "pipeline": "bench_pipeline.py",
    "clickhouse-sink": "bench_clickhouse_sink.py",
    "gateway": "bench_gateway.py",
    "redis-read": "bench_redis_read.py",
    "early-warning": "bench_early_warning.py",
    "auth-flood": "bench_auth_flood.py",
}


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    script = LOAD_TESTS / BENCHMARKS[args.name]
    if not script.is_file():
        print(f"foresight bench: {script} not found: benchmarks run from a source checkout")
        return 2
    sys.argv = [str(script), *args.rest]  # each benchmark parses its own options
    namespace = runpy.run_path(str(script))
    code: int | None = namespace["main"]()
    return code or 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="run a benchmark from load-tests/ (raw baseline measured in the same run)"
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    parser.set_defaults(func=_bench)
