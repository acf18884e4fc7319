"""The closed retraining loop on the real stack: drift, alert, retrain, shadow, test, decision.

A worker, a ClickHouse sink (its own chdb folder) and ``foresight retrain`` run as processes on
a private Kafka broker (started for the test, like the fault tests'): on the shared one, other
tests' workers write failure_risk predictions of their own registries' versions 1 and 2, which
a comparison of this registry's versions 1 and 2 would count. This test plays the hosts: six
of them live in ten-minute cycles of event time, memory calm, then hot for the last two
minutes, then a FAILURE label, so a step is positive exactly when it is hot (the horizon is
two minutes).

1. History A (memory calm 40, hot 80) reaches ClickHouse; version 1 is trained from it with
   the same library the controller uses, and promoted.
2. Drift B: the hosts run hotter (cpu 20 -> 50) and fail higher: memory calm 78, hot 98.
   Version 1 (which learned "memory near 80 fails") now alarms on calm steps. The worker's
   feature drift raises ``model_drift``; the controller trains version 2 on the history (where
   cpu tells the two regimes apart), the worker scores it in shadow, and after enough
   labelled outcomes the paired test finds it better: promoted.
3. Drift C: cpu moves on to 90, memory as in B. Version 2's features leave its training
   distribution (which also held regime A), the controller trains version 3, and the test
   finds it no better (it cannot be much: version 2 already predicts these failures):
   refused and archived. ``foresight models compare`` prints the same test.

Event time runs from three hours ago, so every step's horizon has passed when it is compared.
The promotion margin (``FORESIGHT_PROMOTION_MIN_GAIN``, 0.01 of Brier score) keeps two
equally right models from being told apart by noise a few hundred steps deep.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.http.keys import OPERATE, READ, KeysFile
from connectors.kafka_admin import ensure_topics
from connectors.kafka_clients import KafkaConfig
from deploy.local.processes import free_port
from models.registry import ModelRegistry
from models.training import FAILURE_RISK, TrainingConfig
from streams import topics
from streams.commands.sql import query_table
from streams.commands.stack import local_stack, topic_requests
from streams.operations import publish_updates
from streams.retraining import train_candidate
from streams.settings import Settings
from streams.worker_process import ForesightProcess, RetrainProcess, WorkerProcess
from tests.integration.kafka_io import broker_port, produce

pytestmark = pytest.mark.integration

HOSTS = 6
STEP_MS = 10_000
CYCLE_STEPS = 60  # ten minutes
HOT_STEPS = 12  # the last two minutes of a cycle: the horizon before its failure
HORIZON_S = 120
SINK_TOPICS = (topics.FEATURES.name, topics.PREDICTIONS.name, topics.LABELS.name)


class Hosts:
    """The hosts' telemetry and failures, cycle after cycle, in event time."""

    def __init__(self, run: str, start_ms: int) -> None:
        self.names = [f"retrain-{run}-{i}" for i in range(HOSTS)]
        self.t_ms = start_ms
        self.rng = np.random.default_rng(7)

    def cycles(
        self, count: int, calm: float, hot: float, cpu: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        batches, labels = [], []
        for _ in range(count):
            for k in range(CYCLE_STEPS):
                level = hot if k >= CYCLE_STEPS - HOT_STEPS else calm
                for entity in self.names:
                    values = [level + self.rng.normal(0, 2), cpu + self.rng.normal(0, 2)]
                    batches.append({
                        "entity": entity, "event_time": self.t_ms + k * STEP_MS, "labels": {},
                        "names": ["memory_percent", "cpu_percent"], "values": values,
                        "source": "test",
                    })  # fmt: skip
            self.t_ms += CYCLE_STEPS * STEP_MS
            labels += [
                {"entity": e, "kind": "FAILURE", "incident_type": "oom", "start_time": self.t_ms}
                for e in self.names
            ]
        return batches, labels

    async def send(
        self, kafka: KafkaConfig, count: int, calm: float, hot: float, cpu: float
    ) -> int:
        """Produce ``count`` cycles; returns the newest event time sent."""
        batches, labels = self.cycles(count, calm, hot, cpu)
        await produce(kafka, topics.METRICS, "entity", batches)
        await produce(kafka, topics.LABELS, "entity", labels)
        return self.t_ms


def _wait(what: str, condition: Callable[[], Any], timeout_s: float, *logs: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs)
            raise AssertionError(f"{what}: not within {timeout_s} s\n{tails}")
        time.sleep(0.5)


def _foresight(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _steps(log: Path) -> list[dict[str, Any]]:
    """The controller's ``--json`` lines."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def _event(log: Path, event: str, **match: Any) -> Callable[[], dict[str, Any] | None]:
    def find() -> dict[str, Any] | None:
        return next(
            (s for s in _steps(log)
             if s["event"] == event and all(s.get(k) == v for k, v in match.items())),
            None,
        )  # fmt: skip

    return find


def _stored(settings: Settings, table: str, entities: list[str]) -> int:
    names = ", ".join(f"'{e}'" for e in entities)
    rows = query_table(f"SELECT count() AS n FROM {table} WHERE entity IN ({names})", settings)
    return int(rows["n"][0].as_py())


async def _until_decided(
    hosts: Hosts, kafka: KafkaConfig, log: Path, candidate: str, cpu: float
) -> dict[str, Any]:
    """Send a cycle of drifted telemetry (with its labels) at a time until the controller
    promotes or refuses ``candidate``; its step."""
    deadline = time.monotonic() + 150
    while True:
        await hosts.send(kafka, 1, calm=78, hot=98, cpu=cpu)
        polled = time.monotonic() + 8
        while time.monotonic() < polled:
            for event in ("promoted", "refused"):
                found = _event(log, event, candidate=candidate)()
                if found:
                    return found
            await asyncio.sleep(0.5)
        assert time.monotonic() < deadline and hosts.t_ms < time.time() * 1000, (
            f"no decision on version {candidate}: {_steps(log)[-5:]}"
        )


@pytest.fixture
def private_kafka(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A Kafka broker of this test's own, with Foresight's topics (Redis stays the stack's)."""
    settings = stack_settings.replace(
        kafka_bootstrap_servers=f"127.0.0.1:{broker_port()}",
        stack_dir=str(tmp_path / "stack"),
        topic_partitions=2,
    )
    stack = local_stack(settings, quiet=True)
    try:
        stack.up(180, services=("kafka",))
        asyncio.run(ensure_topics(settings.kafka(), topic_requests(settings)))
        yield settings
    finally:
        stack.stop("kafka")


async def test_drift_retrains_shadows_tests_then_promotes_a_better_and_refuses_an_equal(
    private_kafka: Settings, tmp_path: Path, unique: str
) -> None:
    kafka = private_kafka.kafka()
    key = KeysFile(tmp_path / "keys.json").create("retrain-test", [OPERATE, READ])[1]
    (tmp_path / "credentials").write_text(key)
    sql_port = free_port()
    registry_url = f"file://{tmp_path / 'registry'}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": private_kafka.kafka_bootstrap_servers,
        "FORESIGHT_STACK_DIR": private_kafka.stack_dir,
        "FORESIGHT_TOPIC_PARTITIONS": str(private_kafka.topic_partitions),
        "MODEL_REGISTRY_URL": registry_url,
        "FORESIGHT_KEYS_FILE": str(tmp_path / "keys.json"),
        "FORESIGHT_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "FORESIGHT_API_KEY": key,
        "FORESIGHT_CHDB_PATH": str(tmp_path / "chdb"),
        "FORESIGHT_SINK_SQL_PORT": str(sql_port),
        "FORESIGHT_SINK_METRICS_PORT": str(free_port()),
        "FORESIGHT_SINK_BATCH_SECONDS": "0.3",
        "FORESIGHT_FAILURE_HORIZON_S": str(HORIZON_S),
        "FORESIGHT_DRIFT_CHECK_S": "2",
        "FORESIGHT_DRIFT_WINDOW": "200",
        "FORESIGHT_RETRAIN_COOLDOWN_S": "5",
        "FORESIGHT_RETRAIN_HISTORY_S": "14400",
        "FORESIGHT_RETRAIN_FOLDS": "3",
        "FORESIGHT_RETRAIN_SEARCH_TRIALS": "2",
        "FORESIGHT_RETRAIN_CHECK_S": "2",
        "FORESIGHT_PROMOTION_MIN_OUTCOMES": "300",
        "FORESIGHT_PROMOTION_MIN_GAIN": "0.01",
    }
    settings = private_kafka.replace(
        model_registry_url=registry_url,
        chdb_path=str(tmp_path / "chdb"),
        sink_sql_port=sql_port,
        credentials_file=str(tmp_path / "credentials"),
        failure_horizon_s=float(HORIZON_S),
    )
    sink_log, worker_log, loop_log = (tmp_path / f"{n}.log" for n in ("sink", "worker", "retrain"))
    sink = ForesightProcess(["sink", "clickhouse", "--topics", *SINK_TOPICS], sink_log, env).start()
    worker = WorkerProcess(private_kafka, f"test-retrain-{unique}", worker_log, **env).start()
    controller = RetrainProcess(private_kafka, topics.ALERTS.name, loop_log, **env).start()
    logs = (loop_log, worker_log, sink_log)
    hosts = Hosts(unique, int(time.time() * 1000) // 60_000 * 60_000 - 3 * 3_600_000)
    try:
        await worker.ready()
        await asyncio.to_thread(_wait, "the controller to follow alerts",
                                _event(loop_log, "following"), 60, *logs)  # fmt: skip

        # 1. History A, version 1 trained on it and promoted.
        until_ms = await hosts.send(kafka, 6, calm=40, hot=80, cpu=20)
        expected = 6 * CYCLE_STEPS * HOSTS
        await asyncio.to_thread(
            _wait, "history A in ClickHouse",
            lambda: _stored(settings, "features", hosts.names) >= expected - 2 * HOSTS, 90, *logs,
        )  # fmt: skip
        v1 = await asyncio.to_thread(
            train_candidate, settings, until_ms - 3_600_000, until_ms, HORIZON_S,
            TrainingConfig(folds=3, rounds=50),
        )  # fmt: skip
        registry = ModelRegistry(registry_url)
        promoted = registry.promote(FAILURE_RISK, v1.update["version"])
        assert await asyncio.to_thread(publish_updates, settings, [v1.update, *promoted]) is None
        assert v1.report["cv"]["mean"]["model"]["roc_auc"] > 0.9

        # 2. Drift B: the worker's feature drift fires, a candidate is trained and shadowed,
        # and once enough outcomes are labelled, promoted.
        await asyncio.to_thread(
            _wait, "the worker to serve version 1",
            lambda: "failure_risk v1" in worker_log.read_text(), 60, *logs,
        )  # fmt: skip
        await hosts.send(kafka, 3, calm=78, hot=98, cpu=50)
        drift = await asyncio.to_thread(
            _wait, "a drift of version 1", _event(loop_log, "drift", version="1"), 90, *logs
        )
        registered = await asyncio.to_thread(
            _wait, "version 2 trained", _event(loop_log, "registered", version="2"), 120, *logs
        )
        decision = await _until_decided(hosts, kafka, loop_log, "2", cpu=50)
        assert decision["event"] == "promoted", decision
        test = decision["test"]
        assert test["test"] == "paired_bootstrap_brier" and test["p_value"] < 0.05
        assert test["steps"] >= 300 and test["entities"] == HOSTS and test["positives"] > 0
        assert test["effect"] > 0.01 and test["candidate_brier"] < test["production_brier"]
        assert registry.production(FAILURE_RISK).version == "2"  # type: ignore[union-attr]
        assert registry.show(FAILURE_RISK, "2").decision["p_value"] == test["p_value"]

        # 3. Drift C: cpu moves; version 3 is no better than version 2, and refused.
        await hosts.send(kafka, 1, calm=78, hot=98, cpu=90)
        await asyncio.to_thread(
            _wait, "a drift of version 2", _event(loop_log, "drift", version="2"), 90, *logs
        )
        await asyncio.to_thread(
            _wait, "version 3 trained", _event(loop_log, "registered", version="3"), 120, *logs
        )
        refusal = await _until_decided(hosts, kafka, loop_log, "3", cpu=90)
        assert refusal["event"] == "refused", refusal
        assert refusal["test"]["p_value"] >= 0.05 and refusal["steps"] >= 300
        assert registry.show(FAILURE_RISK, "3").stage == "archived"
        assert registry.production(FAILURE_RISK).version == "2"  # type: ignore[union-attr]
        compared = await asyncio.to_thread(
            _foresight, env, "models", "compare", FAILURE_RISK, "--champion", "2",
            "--challenger", "3", "--json",
        )  # fmt: skip
        assert compared.returncode == 0, compared.stderr
        retest = json.loads(compared.stdout)["test"]
        assert retest["test"] == "paired_bootstrap_brier" and not retest["promote"]
        assert retest["steps"] >= refusal["steps"]
        shown = await asyncio.to_thread(
            _foresight, env, "models", "compare", FAILURE_RISK, "--champion", "1",
            "--challenger", "2",
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "test: paired_bootstrap_brier over" in shown.stdout
        assert "verdict: promote" in shown.stdout
        assert controller.metric('foresight_retrain_decisions_total{decision="promoted"}') == 1
        assert controller.metric('foresight_retrain_decisions_total{decision="refused"}') == 1
        assert controller.metric('foresight_retrains_total{outcome="registered"}') >= 2
        health = controller.health()
        assert health is not None and health["status"] == "ok" and health["production"] == "2"
        print(json.dumps({"drift": drift, "registered": registered, "promoted": decision,
                          "refused": refusal}, indent=1))  # fmt: skip
        print(shown.stdout)
    finally:
        for process in (controller, worker, sink):
            process.stop()
