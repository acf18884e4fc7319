"""Benchmark: a legitimate client's latency while another address floods wrong keys.

Starts ``foresight gateway`` (on fresh topics) or ``foresight ingest`` as its own process,
with a keys file holding one legitimate key. The legitimate client, in this process from
127.0.0.1, times ``--probes`` authenticated requests ``--interval`` seconds apart (within the
default rate limits), each on a new connection (the gateway's read API
``/api/alerts/firing``; ingest's ``/api/v1/agent-events`` with an empty list, refused after
the key check so nothing is produced): first with the server quiet, then while a second
process floods wrong keys from 127.0.0.2 over ``--concurrency`` connections for at most
``--flood-seconds`` and ``--flood-requests``.
Reports p50 and p99 of each phase and their ratio, and the flood's rate and status codes.

``--source`` runs the server from another source tree (say, an export of an earlier commit,
to measure before and after a change); the legitimate key is given to it both as a keys file
and as ``FORESIGHT_API_KEYS``, so versions before the keys file work too.

    .venv/bin/python load-tests/bench_auth_flood.py --server gateway --json
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from connectors.http.keys import ROLES, KeysFile
from connectors.kafka_admin import TopicRequest, ensure_topics
from deploy.local.processes import free_port
from streams.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
FLOOD_ADDRESS = "127.0.0.2"  # another loopback address: the flood is not the prober
PATHS = {"gateway": "/api/alerts/firing", "ingest": "/api/v1/agent-events"}


def request(port: int, server: str, key: str) -> tuple[int, float]:
    """One request with ``key`` on a new connection: its status and seconds."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if server == "gateway":
            connection.request("GET", PATHS[server], headers={"X-API-Key": key})
        else:
            headers = {"X-API-Key": key, "Content-Type": "application/json"}
            connection.request("POST", PATHS[server], body=b"[]", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


async def _flood(
    port: int, server: str, args: argparse.Namespace, started: Event
) -> tuple[dict[str, int], float]:
    """Wrong keys until the count or the time runs out: the statuses and the seconds taken."""
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + args.flood_seconds
    sent = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency, local_addr=(FLOOD_ADDRESS, 0))
    method, body = ("GET", None) if server == "gateway" else ("POST", b"[]")
    url = f"http://127.0.0.1:{port}{PATHS[server]}"
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal sent
            while sent < args.flood_requests and time.monotonic() < deadline:
                sent += 1
                try:
                    async with session.request(
                        method, url, headers={"X-API-Key": f"wrong-{sent}"}, data=body
                    ) as reply:
                        await reply.read()
                        statuses[str(reply.status)] += 1
                except aiohttp.ClientError as error:
                    statuses[type(error).__name__] += 1
                started.set()

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return dict(statuses), time.monotonic() - began


def flood_process(
    port: int, server: str, args: argparse.Namespace, started: Event, out: Any
) -> None:
    out.put(asyncio.run(_flood(port, server, args, started)))


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def probe(
    port: int, server: str, key: str, count: int, interval: float, while_alive: Any = None
) -> list[float]:
    """``count`` legitimate requests, ``interval`` seconds apart, within the rate limits
    (fewer if ``while_alive`` stops being alive)."""
    expected = 200 if server == "gateway" else 400  # ingest: the key is good, the list empty
    latencies = []
    for _ in range(count):
        if while_alive is not None and not while_alive.is_alive():
            break
        status, seconds = request(port, server, key)
        if status != expected:
            raise SystemExit(f"the legitimate request got {status}, not {expected}")
        latencies.append(seconds)
        time.sleep(interval)
    return latencies


def start_server(server: str, source: Path, key_dir: Path, key: str) -> tuple[Any, int]:
    settings = load_settings()
    port = free_port()
    command = [sys.executable, "-m", "streams.cli", server]
    if server == "gateway":
        run = uuid.uuid4().hex[:8]
        topics = [f"bench.flood.predictions.{run}", f"bench.flood.alerts.{run}"]
        asyncio.run(ensure_topics(settings.kafka(), [TopicRequest(t, 1, {}) for t in topics]))
        command += ["--predictions-topic", topics[0], "--alerts-topic", topics[1]]
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "FORESIGHT_KEYS_FILE": str(key_dir / "keys.json"),
        "FORESIGHT_CREDENTIALS_FILE": str(key_dir / "credentials"),
        "FORESIGHT_API_KEYS": key,
        "FORESIGHT_LOG_LEVEL": "WARNING",
        f"FORESIGHT_{server.upper()}_PORT": str(port),
    }
    process = subprocess.Popen(command, cwd=source, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            connection.getresponse().read()
            connection.close()
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"`foresight {server}` did not start") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=sorted(PATHS), default="gateway")
    parser.add_argument("--probes", type=int, default=200, help="legitimate requests per phase")
    parser.add_argument(
        "--interval", type=float, default=0.02, help="seconds between legitimate requests"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="flood connections")
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--flood-requests", type=int, default=50_000)
    parser.add_argument("--source", type=Path, default=ROOT, help="source tree of the server")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as folder:
        key = KeysFile(Path(folder) / "keys.json").create("bench", ROLES)[1]
        server, port = start_server(args.server, args.source.resolve(), Path(folder), key)
        try:
            probe(port, args.server, key, 20, args.interval)  # warm up
            quiet = probe(port, args.server, key, args.probes, args.interval)
            context = mp.get_context("spawn")
            started, out = context.Event(), context.Queue()
            flood = context.Process(
                target=flood_process, args=(port, args.server, args, started, out)
            )
            flood.start()
            if not started.wait(timeout=30):
                raise SystemExit("the flood did not start")
            during = probe(port, args.server, key, args.probes, args.interval, flood)
            statuses, seconds = out.get(timeout=args.flood_seconds + 60)
            flood.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {
        "server": args.server,
        "source": str(args.source.resolve()),
        "quiet": percentiles(quiet),
        "during_flood": percentiles(during),
        "p50_ratio": round(percentiles(during)["p50_ms"] / percentiles(quiet)["p50_ms"], 1),
        "p99_ratio": round(percentiles(during)["p99_ms"] / percentiles(quiet)["p99_ms"], 1),
        "flood": {
            "requests": sum(statuses.values()),
            "per_s": round(sum(statuses.values()) / seconds),
            "statuses": statuses,
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        q, d = result["quiet"], result["during_flood"]
        print(
            f"{args.server}: legitimate p50 {q['p50_ms']} ms -> {d['p50_ms']} ms during the flood "
            f"(x{result['p50_ratio']}), p99 {q['p99_ms']} -> {d['p99_ms']} ms "
            f"(x{result['p99_ratio']}); flood {result['flood']['per_s']}/s, {statuses}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
