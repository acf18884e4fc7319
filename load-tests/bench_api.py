"""Benchmark: the intelligence API's predictions, single at a fixed rate and in batches.

Starts ``foresight api`` as its own process (a free port, a keys file of its own, rate limits
off, an embedded ClickHouse and a model registry in a temp folder, with a small failure-risk
model in production so that every answer carries its SHAP drivers), and seeds the online
state of ``--entities`` entities in Redis as the worker writes it (``FeatureStore``: each
entity's latest PredictionBatch, the latest that had forecasts, and its FeatureVector, from a
host of ``--metrics`` metrics stepped through the stream's own pipeline). Then measures:

* single: ``POST /v1/predict/performance`` at ``--rate`` requests/s (open loop: latency is
  counted from each request's scheduled send time) for ``--seconds``: p50/p95/p99 and errors;
* batch: ``POST /v1/predict/batch`` of ``--batch-size`` entities, ``--batch-concurrency``
  requests back to back for ``--seconds``: predictions/s and the p50/p99 of a request.

Each phase also reports the CPU time the server process spent in it (Linux' ``/proc``), per
request or per entity: on cores shared with other work, rates say who got the cores, and the
server's CPU per entity says what it costs.

    .venv/bin/python load-tests/bench_api.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from connectors.http.keys import READ, KeysFile
from connectors.redis_store import FeatureStore
from deploy.local.processes import free_port
from models.entity import EntityPipeline, ModelSet, step_many
from models.features import vector_names
from models.registry import ModelRegistry
from models.training import FAILURE_RISK, TrainingConfig, TrainingSet, train_failure_risk
from streams.commands.stack import create_topics
from streams.engine import pipeline_config
from streams.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
STEP_MS = 10_000
STEPS = 120  # 20 minutes of a host: forecasts and every window filled
GOALS = {"single_p95_ms": 50.0, "single_p99_ms": 100.0, "batch_predictions_per_s": 5000.0}
Record = dict[str, Any]


def host_state(metrics: int, start_ms: int) -> tuple[Record, Record, Record]:
    """A host's latest PredictionBatch, the latest one with forecasts, and its FeatureVector,
    stepped as the worker steps it: ``metrics`` used-of-capacity series, one of them leaking."""
    pipeline = EntityPipeline("template", ModelSet(pipeline_config(Settings(step_s=10.0))))
    names = ["memory_percent", *(f"metric_{m}_percent" for m in range(1, metrics))]
    rng = np.random.default_rng(1)
    capacities = np.full(metrics, 100.0)
    latest = forecast = features = None
    for k in range(STEPS):
        t = start_ms + k * STEP_MS
        values = np.concatenate([[50 + k * 0.1], 40 + rng.normal(0, 2, metrics - 1)])
        pipeline.add(t, names, values, capacities)
        features, latest, _ = step_many([pipeline], [t])[0]
        if "FORECAST" in latest["kinds"]:
            forecast = latest
    assert latest is not None and forecast is not None and features is not None
    return latest, forecast, features


def train_model(registry_url: str, features: Record) -> None:
    """A failure-risk model over three of the host's features, put in production."""
    names = [n for n in vector_names(features) if n.startswith("memory_percent:")][:3]
    rng = np.random.default_rng(7)
    x = rng.normal(50, 10, size=(800, len(names)))
    y = (x[:, 0] > 55).astype(np.int8)
    data = TrainingSet(x, y, np.arange(800) * STEP_MS, ["h"] * 800, names, 1800.0)
    model, reference, report = train_failure_risk(data, TrainingConfig(folds=2, rounds=20))
    registry = ModelRegistry(registry_url)
    update = registry.register_model(model, reference, report, since_ms=0, until_ms=8_000_000)
    registry.promote(FAILURE_RISK, update["version"])


async def seed(settings: Settings, entities: list[str], metrics: int) -> Record:
    """Every entity's online state in Redis; the template's FeatureVector."""
    now = int(time.time() * 1000)
    latest, forecast, features = host_state(metrics, now - STEPS * STEP_MS)
    store = FeatureStore(settings.feature_store_url, prediction_ttl_s=3600)
    try:
        for start in range(0, len(entities), 500):
            chunk = entities[start : start + 500]
            # The forecast batch first, so the latest is the one the predictions key keeps.
            await store.put_predictions(
                {**batch, "entity": e, "prediction_id": f"{e}@{batch['event_time']}"}
                for e in chunk
                for batch in (forecast, latest)
            )
            await store.put_features({**features, "entity": e} for e in chunk)
    finally:
        await store.close()
    return features


def start_api(folder: Path, key_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FORESIGHT_KEYS_FILE": str(key_file),
        "FORESIGHT_CREDENTIALS_FILE": str(folder / "credentials"),
        "FORESIGHT_API_PORT": str(port),
        "FORESIGHT_RATE_LIMIT_PER_KEY": "0",
        "FORESIGHT_RATE_LIMIT_PER_ADDRESS": "0",
        "FORESIGHT_CHDB_PATH": str(folder / "chdb"),
        "MODEL_REGISTRY_URL": f"file://{folder / 'models'}",
        "FORESIGHT_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "api"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 90
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            connection.getresponse().read()
            connection.close()
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit("`foresight api` did not start") from None
            time.sleep(0.2)


def latency(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"n": 0}
    ms = np.array(seconds) * 1000
    return {
        "n": len(ms),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)},
        "max_ms": round(float(ms.max()), 2),
    }


async def single(
    session: aiohttp.ClientSession, url: str, entities: list[str], rate: float, seconds: float
) -> Record:
    """``rate`` single predictions a second for ``seconds``, each at its scheduled time."""
    count = int(rate * seconds)
    took: list[float] = []
    errors: Counter[str] = Counter()
    began = time.perf_counter()

    async def one(i: int, scheduled: float) -> None:
        try:
            async with session.post(url, json={"entity": entities[i % len(entities)]}) as reply:
                body = await reply.json(loads=orjson.loads)
                if reply.status != 200 or not body["predictions"]:
                    errors[str(reply.status)] += 1
                    return
        except (TimeoutError, aiohttp.ClientError) as error:
            errors[type(error).__name__] += 1
            return
        took.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(count):
        scheduled = began + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return {
        "rate_per_s": rate,
        "requests": count,
        "achieved_per_s": round(len(took) / (time.perf_counter() - began), 1),
        **latency(took),
        "errors": dict(errors),
    }


async def batches(
    session: aiohttp.ClientSession,
    url: str,
    entities: list[str],
    size: int,
    concurrency: int,
    seconds: float,
) -> Record:
    """Batches of ``size`` entities, ``concurrency`` at a time back to back, for ``seconds``."""
    took: list[float] = []
    errors: Counter[str] = Counter()
    predicted = answered = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal predicted, answered, sent
        while time.perf_counter() < deadline:
            first = (sent * size) % len(entities)
            sent += 1
            items = [{"entity": entities[(first + j) % len(entities)]} for j in range(size)]
            started = time.perf_counter()
            try:
                async with session.post(url, json={"items": items}) as reply:
                    body = await reply.json(loads=orjson.loads)
                    if reply.status != 200:
                        errors[str(reply.status)] += 1
                        continue
            except (TimeoutError, aiohttp.ClientError) as error:
                errors[type(error).__name__] += 1
                continue
            took.append(time.perf_counter() - started)
            ok = [i["result"] for i in body["items"] if i["result"] and i["result"]["predictions"]]
            answered += len(ok)
            predicted += sum(len(r["predictions"]) for r in ok)
            errors["item"] += size - len(ok)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    if errors["item"] == 0:
        del errors["item"]
    return {
        "batch_size": size,
        "concurrency": concurrency,
        "requests": len(took),
        "entities": answered,
        "entities_per_s": round(answered / wall),
        "predictions_per_s": round(predicted / wall),
        **latency(took),
        "errors": dict(errors),
    }


def cpu_seconds(pid: int) -> float | None:
    """The CPU time (user and system) process ``pid`` has used; None without ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ms_per(pid: int, since: float | None, count: int) -> float | None:
    now = cpu_seconds(pid)
    if now is None or since is None or not count:
        return None
    return round((now - since) * 1000 / count, 3)


async def measure(
    port: int, pid: int, key: str, entities: list[str], args: argparse.Namespace
) -> Record:
    """Both phases, each on a session of its own (no connection left idle by the first,
    which the server may have closed, is reused by the second)."""
    base = f"http://127.0.0.1:{port}/v1/predict"
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=30)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=256)
        return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout)

    async with session() as client:
        await single(client, f"{base}/performance", entities, 50, 1.0)  # warm up
        began = cpu_seconds(pid)
        one = await single(client, f"{base}/performance", entities, args.rate, args.seconds)
        one["server_cpu_ms_per_request"] = cpu_ms_per(pid, began, one["requests"])
    async with session() as client:
        began = cpu_seconds(pid)
        many = await batches(
            client, f"{base}/batch", entities, args.batch_size, args.batch_concurrency,
            args.seconds,
        )  # fmt: skip
        many["server_cpu_ms_per_entity"] = cpu_ms_per(pid, began, many["entities"])
    return {"single": one, "batch": many}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=1000, help="entities seeded in Redis")
    parser.add_argument("--metrics", type=int, default=8, help="metrics per entity")
    parser.add_argument("--rate", type=float, default=200.0, help="single requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--batch-size", type=int, default=100, help="entities per batch")
    parser.add_argument("--batch-concurrency", type=int, default=1, help="batches in flight")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    settings = load_settings()
    create_topics(settings)  # the API reads the live feed's topics: a new stack has none yet
    run = uuid.uuid4().hex[:8]
    entities = [f"bench-api-{run}-{i}" for i in range(args.entities)]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as name:
        folder = Path(name)
        features = asyncio.run(seed(settings, entities, args.metrics))
        train_model(f"file://{folder / 'models'}", features)
        key_file = folder / "keys.json"
        key = KeysFile(key_file).create("bench", [READ])[1]
        server, port = start_api(folder, key_file)
        # The seeding and the training left this process a heap whose full collections
        # took 50-300 ms while it measured, counted as the server's latency: out of reach.
        gc.collect()
        gc.freeze()
        try:
            measured = asyncio.run(measure(port, server.pid, key, entities, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
    one, many = measured["single"], measured["batch"]
    result = {
        "entities": args.entities,
        "metrics": args.metrics,
        "seconds": args.seconds,
        **measured,
        "goals": {
            "single_p95_ms": {"goal": GOALS["single_p95_ms"], "met": _met(one, "p95_ms", True)},
            "single_p99_ms": {"goal": GOALS["single_p99_ms"], "met": _met(one, "p99_ms", True)},
            "batch_predictions_per_s": {
                "goal": GOALS["batch_predictions_per_s"],
                "met": many["entities_per_s"] >= GOALS["batch_predictions_per_s"],
            },
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    return 0


def _met(phase: Record, field: str, below: bool) -> bool:
    goal = GOALS[f"single_{field}"]
    return bool(phase["n"]) and not phase["errors"] and phase[field] <= goal


def table(result: Record) -> str:
    one, many = result["single"], result["batch"]
    goals = result["goals"]

    def mark(name: str) -> str:
        return "met" if goals[name]["met"] else "MISSED"

    rows = [
        f"intelligence API, {result['entities']} entities of {result['metrics']} metrics, "
        f"{result['seconds']:g} s per phase",
        "",
        f"{'phase':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'rate/s':>10}"
        f"{'server CPU ms':>15}  errors",
        f"{'single at ' + format(one['rate_per_s'], 'g') + '/s':<34}"
        f"{one.get('p50_ms', '-'):>9}{one.get('p95_ms', '-'):>9}{one.get('p99_ms', '-'):>9}"
        f"{one['achieved_per_s']:>10}{_cpu(one['server_cpu_ms_per_request'], 'request'):>15}"
        f"  {one['errors'] or 'none'}",
        f"{'batch of ' + str(many['batch_size']) + ' x' + str(many['concurrency']):<34}"
        f"{many.get('p50_ms', '-'):>9}{many.get('p95_ms', '-'):>9}{many.get('p99_ms', '-'):>9}"
        f"{many['entities_per_s']:>10}{_cpu(many['server_cpu_ms_per_entity'], 'entity'):>15}"
        f"  {many['errors'] or 'none'}",
        "",
        f"goals: single p95 <= {GOALS['single_p95_ms']:g} ms {mark('single_p95_ms')}, "
        f"p99 <= {GOALS['single_p99_ms']:g} ms {mark('single_p99_ms')}; batch >= "
        f"{GOALS['batch_predictions_per_s']:g} entity predictions/s "
        f"{mark('batch_predictions_per_s')} ({many['predictions_per_s']} prediction rows/s)",
    ]
    return "\n".join(rows)


def _cpu(ms: float | None, per: str) -> str:
    return "-" if ms is None else f"{ms:.2f}/{per}"


if __name__ == "__main__":
    sys.exit(main())
