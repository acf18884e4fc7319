"""docker-compose.yml runs the same stack: every service, port and setting the code expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploy.local.stack import KAFKA_VERSION
from streams.settings import setting_fields

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in service.get("ports", [])}


def test_infrastructure_services_and_ports() -> None:
    services = _compose()["services"]
    assert 9092 in _ports(services["kafka"])
    assert 8083 in _ports(services["connect"])
    assert 6379 in _ports(services["redis"])
    assert 8123 in _ports(services["clickhouse"])
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["connect"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["redis"]["image"].startswith("redis:")


def test_connect_worker_has_the_http_sink_on_its_plugin_path() -> None:
    connect = _compose()["services"]["connect"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in connect["volumes"]}
    config = ROOT / mounts["/etc/foresight/connect-distributed.properties"].lstrip("./")
    properties = dict(
        line.split("=", 1)
        for line in config.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert properties["bootstrap.servers"] == "kafka:9092"
    assert any(target.startswith(properties["plugin.path"]) for target in mounts)
    assert "connectors/kafka-connect/http-sink" in " ".join(mounts.values())


def test_every_foresight_process_gets_every_setting() -> None:
    services = _compose()["services"]
    ours = {name: s for name, s in services.items() if name.startswith("foresight-")}
    assert {"foresight-worker", "foresight-topics", "foresight-simulator"} <= set(ours)
    expected = {f.metadata["env"] for f in setting_fields()}
    for name, service in ours.items():
        assert expected <= set(service["environment"]), name
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert service["environment"]["FEATURE_STORE_URL"].startswith("redis://redis:6379")
        assert service["environment"]["CLICKHOUSE_URL"].startswith("http://")
        assert "clickhouse:8123" in service["environment"]["CLICKHOUSE_URL"]
