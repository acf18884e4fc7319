"""``foresight bench NAME``: run a benchmark of ``load-tests/`` (a source checkout's).

Each benchmark is a script that also runs on its own (``python load-tests/bench_gateway.py``).
Here it is imported as a real module under its file's name, with ``load-tests/`` on
``sys.path``: the processes a benchmark spawns with multiprocessing get the parent's
``sys.path`` and import it by that name to find their target functions, which they could not
do for a script run anonymously by ``runpy``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load-tests"
BENCHMARKS = {
    "pipeline": "bench_pipeline",
    "clickhouse-sink": "bench_clickhouse_sink",
    "gateway": "bench_gateway",
    "redis-read": "bench_redis_read",
    "early-warning": "bench_early_warning",
    "auth-flood": "bench_auth_flood",
    "routing": "bench_routing",
    "engine": "bench_engine",
    "entity-anomaly": "bench_entity_anomaly",
    "api": "bench_api",
    "ensemble": "bench_ensemble",
    "workflows": "bench_workflows",
    "quality": "bench_quality",
    "decode": "bench_decode",
    "online-failure": "bench_online_failure",
    "agent-failures": "bench_agent_failures",
}


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    module_name = BENCHMARKS[args.name]
    script = LOAD_TESTS / f"{module_name}.py"
    if not script.is_file():
        print(f"foresight bench: {script} not found: benchmarks run from a source checkout")
        return 2
    if str(LOAD_TESTS) not in sys.path:
        sys.path.insert(0, str(LOAD_TESTS))
    benchmark = importlib.import_module(module_name)
    sys.argv = [f"foresight bench {args.name}", *args.rest]  # the name its --help shows
    code: int = benchmark.main(args.rest)  # each benchmark parses its own options
    return code


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="run a benchmark from load-tests/ (raw baseline measured in the same run)"
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    parser.set_defaults(func=_bench)
