"""Benchmark: decoding the hot records, fastavro against the compiled reader, CPU µs a record.

The worker decodes a MetricBatch per scrape of each entity; the intelligence API decodes three
records per entity it answers for (its latest PredictionBatch, the latest with forecasts, its
FeatureVector). Each is made as they are made (MetricBatches of ``--samples`` samples as the
engine benchmark's, the API's records from a host of ``--metrics`` metrics stepped through the
stream's pipeline), encoded once, then decoded ``--records`` times by each reader, in turn,
``--repeats`` times; the median CPU time (this process') per record of each reader:

* ``fastavro``: ``fastavro.schemaless_reader`` from a ``BytesIO``, as ``Codec.decode`` did;
* ``compiled``: :func:`schemas.avro_reader.compile_reader`'s reader on the bytes;
* ``codec``: ``Codec.decode``, framing included, as every consumer calls it.

    .venv/bin/python load-tests/bench_decode.py --json
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np
from bench_api import host_state

from schemas.avro_reader import compile_reader
from schemas.codec import Codec, current_schema

START_MS = 1_767_225_600_000


def metric_batch(samples: int) -> dict[str, Any]:
    """A MetricBatch as the engine benchmark feeds it."""
    rng = np.random.default_rng(0)
    return {
        "entity": "bench-00001",
        "event_time": START_MS,
        "labels": {"bench": "engine"},
        "names": [f"metric_{i:03d}" for i in range(samples)],
        "values": rng.uniform(10, 90, samples).tolist(),
        "source": "bench",
    }


def records(samples: list[int], metrics: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """The records measured, by label: (schema name, record)."""
    latest, forecast, features = host_state(metrics, START_MS)
    made = {f"metric_batch_{n}": ("metric_batch", metric_batch(n)) for n in samples}
    made["prediction_batch_latest"] = ("prediction_batch", latest)
    made["prediction_batch_forecast"] = ("prediction_batch", forecast)
    made["feature_vector"] = ("feature_vector", features)
    return made


def _cpu_us(decode: Callable[[], Any], count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        decode()
    return (time.process_time() - start) / count * 1e6


def measure(name: str, record: dict[str, Any], count: int, repeats: int) -> dict[str, Any]:
    """One record's decoding by each reader: median CPU µs a record and the ratios."""
    codec = Codec()
    data = codec.encode(name, record)
    schema = current_schema(name)
    start = 2 + data[1] + 2  # Foresight's framing: magic, name length, name, version
    compiled = compile_reader(schema.raw)

    def with_fastavro() -> Any:
        buffer = io.BytesIO(data)
        buffer.seek(start)
        return fastavro.schemaless_reader(buffer, schema.parsed, None)

    readers: dict[str, Callable[[], Any]] = {
        "fastavro": with_fastavro,
        "compiled": lambda: compiled(data, start),
        "codec": lambda: codec.decode(data),
    }
    runs: dict[str, list[float]] = {label: [] for label in readers}
    for _ in range(repeats):
        for label, decode in readers.items():
            runs[label].append(_cpu_us(decode, count))
    us = {label: round(statistics.median(times), 2) for label, times in runs.items()}
    return {
        "schema": name,
        "bytes": len(data),
        "us_per_record": us,
        "fastavro_over_compiled": round(us["fastavro"] / us["compiled"], 2),
        "fastavro_over_codec": round(us["fastavro"] / us["codec"], 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    measured = {
        label: measure(name, record, args.records, args.repeats)
        for label, (name, record) in records(args.samples, args.metrics).items()
    }
    api = [measured[k] for k in ("prediction_batch_latest", "prediction_batch_forecast")]
    api.append(measured["feature_vector"])
    return {
        "setup": {"records": args.records, "repeats": args.repeats, "metrics": args.metrics},
        "records": measured,
        # What the API's batch path decodes per entity: its three records.
        "api_entity_us": {
            reader: round(sum(m["us_per_record"][reader] for m in api), 1)
            for reader in ("fastavro", "compiled", "codec")
        },
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{'CPU µs a record (median)':<28}{'bytes':>7}{'fastavro':>10}{'compiled':>10}"
          f"{'codec':>8}{'ratio':>7}")  # fmt: skip
    for label, m in result["records"].items():
        us = m["us_per_record"]
        print(
            f"{label:<28}{m['bytes']:>7,}{us['fastavro']:>10.1f}{us['compiled']:>10.1f}"
            f"{us['codec']:>8.1f}{m['fastavro_over_compiled']:>7.1f}"
        )
    api = result["api_entity_us"]
    print(
        f"{'an API entity (3 records)':<28}{'':>7}{api['fastavro']:>10.1f}{api['compiled']:>10.1f}"
        f"{api['codec']:>8.1f}{api['fastavro'] / api['compiled']:>7.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="foresight bench decode", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[20, 50], help="MetricBatch sizes"
    )
    parser.add_argument("--metrics", type=int, default=8, help="metrics of the API's host")
    parser.add_argument("--records", type=int, default=2000, help="decodes per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per reader")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
