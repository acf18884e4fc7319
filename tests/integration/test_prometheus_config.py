"""The shipped ``deploy/prometheus`` configuration, run by a real Prometheus against a real
``foresight api``: the README's recipe for a Prometheus on the machine of the local stack
(targets pointed at the loopback), with the scrape and rule intervals shortened to a second.

The API is the one process started; every other job's target is a closed port, so the
"process down" rules have something to select. Prometheus must scrape the API, see the
prediction it answered, and evaluate every shipped rule without an error.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.http.keys import READ, KeysFile
from deploy.local.host_telemetry import Prometheus, program
from deploy.local.processes import free_port
from deploy.local.stack import wait_until
from streams.settings import Settings
from streams.worker_process import ServingProcess

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _readme_config(ports: dict[str, int]) -> dict[str, Any]:
    """``prometheus.yml`` as shipped, its targets on the loopback at ``ports`` by job (a
    closed port for the others) and its rule files where they are."""
    config: dict[str, Any] = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(CONFIG / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        port = ports.get(job["job_name"]) or free_port()
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    return config


@pytest.fixture(scope="module")
def api(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServingProcess, str]]:
    """``foresight api`` on a free port and a read key for it."""
    folder = tmp_path_factory.mktemp("prometheus-api")
    keys = KeysFile(folder / "keys.json")
    _, key = keys.create("reader", [READ])
    port = free_port()
    env = {"FORESIGHT_KEYS_FILE": str(keys.path), "FORESIGHT_API_PORT": str(port)}
    process = ServingProcess(["api"], folder / "api.log", env, stack_settings, port)
    process.start()
    try:
        wait_until("the API's /health", lambda: process.health() is not None, 90, process.log)
        yield process, key
    finally:
        process.stop()


def _rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules", timeout=5) as reply:
        groups = json.loads(reply.read())["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_shipped_config_scrapes_the_api_and_evaluates_every_rule(
    api: tuple[ServingProcess, str], tmp_path: Path
) -> None:
    process, key = api
    prometheus = Prometheus(
        program("prometheus"),
        tmp_path / "prometheus",
        _readme_config({"foresight-api": process.port}),
    )
    prometheus.start()
    try:
        prometheus.ready()
        wait_until(
            "the API scraped",
            lambda: bool(prometheus.query('up{job="foresight-api"} == 1')),
            60,
            prometheus.log,
        )

        now_ms = int(time.time() * 1000)
        body = {
            "entity": "prometheus-check",
            "window": [
                {
                    "metric": "cpu_percent",
                    "times": [now_ms - 10_000 * (60 - i) for i in range(60)],
                    "values": [40.0 + i % 7 for i in range(60)],
                }
            ],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{process.port}/v1/predict/performance",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.status == 200
        wait_until(
            "the prediction's latency in Prometheus",
            lambda: bool(
                prometheus.query(
                    'foresight_prediction_latency_seconds_count{job="foresight-api",'
                    'route="performance"} >= 1'
                )
            ),
            60,
            prometheus.log,
        )

        shipped = {
            rule["alert"]
            for group in yaml.safe_load((CONFIG / "foresight-rules.yml").read_text())["groups"]
            for rule in group["rules"]
        }

        def every_rule_evaluated() -> bool:
            rules = _rules(prometheus)
            return bool(rules) and all(r["health"] != "unknown" for r in rules)

        wait_until("every rule evaluated", every_rule_evaluated, 60, prometheus.log)
        evaluated = _rules(prometheus)
        assert {rule["name"] for rule in evaluated} == shipped
        failing = {
            rule["name"]: rule.get("lastError") for rule in evaluated if rule["health"] != "ok"
        }
        assert not failing, failing

        def down_jobs() -> set[str]:
            alerts = prometheus.query('ALERTS{alertname="ForesightProcessDown"}')
            return {alert["metric"]["job"] for alert in alerts}

        closed = {"foresight-sink", "foresight-gateway", "foresight-ingest"}
        wait_until(
            "the closed targets' down alerts pending",
            lambda: closed <= down_jobs(),
            60,
            prometheus.log,
        )
        assert "foresight-api" not in down_jobs()
    finally:
        prometheus.stop()
