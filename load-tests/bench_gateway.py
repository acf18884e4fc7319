"""Benchmark: Kafka-to-client delivery latency of the WebSocket gateway under fan-out.

Starts ``foresight gateway`` as its own process on fresh topics, opens ``--clients`` WebSocket
clients in a second process (each with its own filter: one entity, one entity and a kind, or a
glob over ten entities), plus ``--slow-clients`` that subscribe to everything and read one
message a second. The main process produces ``--rate`` PredictionBatch records a second over
``--entities`` entities for ``--seconds``. Delivery latency is the client's receive time minus
the record's ``emitted_at`` (set at produce time, same clock). Each client's received count is
checked against what its filter should get, so a starved client shows.

    .venv/bin/python load-tests/bench_gateway.py --clients 1000 --rate 2000 --seconds 30 --json
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from connectors.http.keys import READ, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from deploy.local.processes import free_port
from schemas.codec import Codec
from streams.settings import load_settings

API_KEY = "bench-key"


def client_filter(i: int, entities: int) -> dict[str, Any]:
    """Client ``i``'s own subscription."""
    entity = f"e-{i % entities:04d}"
    match i % 4:
        case 0:
            return {"topics": ["predictions"], "entity": entity}
        case 1:
            return {"topics": ["predictions"], "entity": entity, "kinds": ["ANOMALY"]}
        case 2:
            return {"topics": ["predictions"], "entity": f"e-{(i // 4) % (entities // 10):03d}?"}
        case _:
            return {"entity": entity, "kinds": ["FORECAST"], "min_severity": "CRITICAL"}


def expected(subscription: dict[str, Any], produced: Counter[str]) -> int:
    """Messages a subscription should receive, given the records produced per entity."""
    return sum(n for e, n in produced.items() if fnmatch.fnmatchcase(e, subscription["entity"]))


async def _run_clients(
    port: int, clients: int, slow: int, entities: int, ready: Event, stop: Event, out: Any
) -> None:
    latencies: list[float] = []
    counts = [0] * (clients + slow)

    async def fast(i: int, ws: ClientConnection) -> None:
        async for raw in ws:
            now_ms = time.time() * 1000
            message = json.loads(raw)
            if message["type"] == "prediction":
                counts[i] += 1
                latencies.append(now_ms - message["data"]["emitted_at"])

    async def slow_reader(i: int, ws: ClientConnection) -> None:
        while True:  # any message: the snapshot of every cached entity comes first
            await ws.recv()
            counts[i] += 1
            await asyncio.sleep(1.0)

    gate = asyncio.Semaphore(50)

    async def open_client(i: int) -> ClientConnection:
        request = client_filter(i, entities) if i < clients else {"topics": ["predictions"]}
        async with gate:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws?api_key={API_KEY}",
                compression=None,
                open_timeout=60,
                ping_interval=None,
            )
            await ws.send(json.dumps({"type": "subscribe", **request}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
            return ws

    sockets = await asyncio.gather(*(open_client(i) for i in range(clients + slow)))
    tasks = [
        asyncio.create_task(fast(i, ws) if i < clients else slow_reader(i, ws))
        for i, ws in enumerate(sockets)
    ]
    ready.set()
    await asyncio.to_thread(stop.wait)
    for task in tasks:
        task.cancel()
    out.put({"latencies_ms": latencies, "counts": counts})
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def client_process(
    port: int, clients: int, slow: int, entities: int, ready: Event, stop: Event, out: Any
) -> None:
    asyncio.run(_run_clients(port, clients, slow, entities, ready, stop, out))


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        loaded: dict[str, Any] = json.load(response)
        return loaded


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def produce(
    kafka: KafkaConfig, topic: str, rate: int, seconds: float, entities: int
) -> Counter[str]:
    codec = Codec()
    producer = kafka.producer(linger_ms=2)
    await producer.start()
    produced: Counter[str] = Counter()
    tick = 0.01
    per_tick = rate * tick
    start = time.monotonic()
    sent = 0
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed / tick * per_tick) + int(per_tick)
            while sent < due:
                entity = f"e-{sent % entities:04d}"
                now_ms = int(time.time() * 1000)
                batch = {
                    "prediction_id": f"{entity}@{now_ms}",
                    "entity": entity,
                    "event_time": now_ms,
                    "emitted_at": now_ms,
                    "latency_ms": 0.0,
                    "predictions": [
                        {
                            "metric": "cpu_percent",
                            "kind": kind,
                            "model": "bench",
                            "model_version": "1",
                            "horizon_s": h,
                            "value": 50.0,
                            "score": 0.1,
                            "lower": lo,
                            "upper": hi,
                        }
                        for kind, h, lo, hi in (
                            ("ANOMALY", 0, None, None),
                            ("FORECAST", 300, 40.0, 60.0),
                        )
                    ],
                }
                await producer.send(
                    topic, codec.encode("prediction_batch", batch), key=entity.encode()
                )
                produced[entity] += 1
                sent += 1
            await asyncio.sleep(tick)
        await producer.flush()
    finally:
        await producer.stop()
    return produced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients, each with a filter")
    parser.add_argument("--slow-clients", type=int, default=1, help="clients reading 1 msg/s")
    parser.add_argument("--rate", type=int, default=2000, help="predictions produced per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to produce")
    parser.add_argument("--entities", type=int, default=1000, help="entities predicted about")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    settings = load_settings()
    run = uuid.uuid4().hex[:8]
    topics = {
        "predictions": f"bench.gateway.predictions.{run}",
        "alerts": f"bench.gateway.alerts.{run}",
    }
    asyncio.run(
        ensure_topics(
            settings.kafka(),
            [TopicRequest(topics["predictions"], 6, {}), TopicRequest(topics["alerts"], 1, {})],
        )
    )
    port = free_port()
    keys = KeysFile(Path(tempfile.mkdtemp(prefix="bench-gateway-")) / "keys.json")
    keys.create("bench", [READ], key=API_KEY)
    env = {
        **os.environ,
        "FORESIGHT_KEYS_FILE": str(keys.path),
        "FORESIGHT_LOG_LEVEL": "WARNING",
        # Every client connects from this address with this key, all at once.
        "FORESIGHT_RATE_LIMIT_PER_KEY": "0",
        "FORESIGHT_RATE_LIMIT_PER_ADDRESS": "0",
    }
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "gateway",
            "--port",
            str(port),
            "--predictions-topic",
            topics["predictions"],
            "--alerts-topic",
            topics["alerts"],
        ],
        env=env,
    )
    context = mp.get_context("spawn")
    ready, stop, out = context.Event(), context.Event(), context.Queue()
    clients = context.Process(
        target=client_process,
        args=(port, args.clients, args.slow_clients, args.entities, ready, stop, out),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_json(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start; see its output above") from None
                time.sleep(0.2)
        clients.start()
        if not ready.wait(timeout=300):
            raise SystemExit("the clients did not all connect within 300 s")
        connected = get_json(f"http://127.0.0.1:{port}/health")["clients"]
        cpu_before, wall_before = cpu_seconds(gateway.pid), time.monotonic()
        produced = asyncio.run(
            produce(
                settings.kafka(),
                topics["predictions"],
                args.rate,
                args.seconds,
                args.entities,
            )
        )
        time.sleep(3.0)  # let the last records arrive
        gateway_cpu = (cpu_seconds(gateway.pid) - cpu_before) / (time.monotonic() - wall_before)
        health = get_json(f"http://127.0.0.1:{port}/health")
        stop.set()
        result = out.get(timeout=120)
        clients.join(timeout=60)
    finally:
        stop.set()
        if clients.is_alive():
            clients.terminate()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)

    latencies = np.array(result["latencies_ms"])
    ratios = [
        result["counts"][i] / want
        for i in range(args.clients)
        if (want := expected(client_filter(i, args.entities), produced))
    ]
    report = {
        "clients": args.clients,
        "slow_clients": args.slow_clients,
        "connected": connected,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "produced": sum(produced.values()),
        "delivered": int(latencies.size),
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 2),
            "p99": round(float(np.percentile(latencies, 99)), 2),
            "max": round(float(latencies.max()), 2),
        },
        "fast_clients_fully_served": sum(r >= 1.0 for r in ratios),
        "fast_clients_with_expectations": len(ratios),
        "worst_fast_client_ratio": round(min(ratios), 4),
        "slow_client_messages_read": result["counts"][args.clients :],
        "gateway_dropped_for_slow": health["dropped"],
        "gateway_cpu_cores": round(gateway_cpu, 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>32}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
