"""docker-compose.yml runs the same stack: every service, port and setting the code expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploy.local.stack import KAFKA_VERSION, connect_secrets_dir
from streams.settings import Settings, setting_fields

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _properties(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """``{path in the container: source}`` of a service's volumes."""
    return {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}


def _ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in service.get("ports", [])}


def test_only_what_a_user_reaches_is_published() -> None:
    """Ingestion, the gateway, the API and Grafana; the rest answers on the compose network
    only."""
    services = _compose()["services"]
    published = {name: _ports(s) for name, s in services.items() if s.get("ports")}
    settings = Settings()
    assert published == {
        "foresight-ingest": {settings.ingest_port},
        "foresight-gateway": {settings.gateway_port},
        "foresight-api": {settings.api_port},
        "grafana": {3000},
    }


def test_no_service_runs_with_a_password_anyone_can_read() -> None:
    services = _compose()["services"]
    grafana, clickhouse = services["grafana"]["environment"], services["clickhouse"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert clickhouse["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD:?")
    assert "CLICKHOUSE_SKIP_USER_SETUP" not in clickhouse
    url = services["foresight-sink"]["environment"]["CLICKHOUSE_URL"]
    assert url.startswith(f"http://{clickhouse['CLICKHOUSE_USER']}:${{CLICKHOUSE_PASSWORD:?")
    assert not {"FORESIGHT_API_KEY", "FORESIGHT_API_KEYS"} & set(
        services["foresight-ingest"]["environment"]
    )


def test_infrastructure_images() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["connect"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["redis"]["image"].startswith("redis:")


def test_connect_worker_has_the_http_sink_on_its_plugin_path() -> None:
    mounts = _mounts(_compose()["services"]["connect"])
    config = ROOT / mounts["/etc/foresight/connect-distributed.properties"].lstrip("./")
    properties = _properties(config)
    assert properties["bootstrap.servers"] == "kafka:9092"
    assert any(target.startswith(properties["plugin.path"]) for target in mounts)
    assert "connectors/kafka-connect/http-sink" in " ".join(mounts.values())
    assert "connectors/kafka-connect/smtp-sink/target/plugin" in " ".join(mounts.values())


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
        # Every process shares the keys file, in the volume every one of them mounts.
        assert service["environment"]["FORESIGHT_KEYS_FILE"].startswith("/var/lib/foresight/")
        assert "foresight-data:/var/lib/foresight" in service["volumes"]


def test_connect_worker_reads_the_secrets_foresight_writes() -> None:
    services = _compose()["services"]
    mounts = _mounts(services["connect"])
    worker = _properties(
        ROOT / mounts["/etc/foresight/connect-distributed.properties"].lstrip("./")
    )
    stack_dir = services["foresight-worker"]["environment"]["FORESIGHT_STACK_DIR"]
    secrets = str(connect_secrets_dir(Path(stack_dir)))
    assert worker["config.providers"] == "file"
    assert worker["config.providers.file.class"].endswith(".FileConfigProvider")
    assert worker["config.providers.file.param.allowed.paths"] == secrets
    assert f"connect-secrets:{secrets}:ro" in services["connect"]["volumes"]
    ours = [s for name, s in services.items() if name.startswith("foresight-")]
    assert all(_mounts(s)[secrets] == "connect-secrets" for s in ours)


def test_local_worker_reads_secrets_only_from_the_stack_folder() -> None:
    worker = _properties(ROOT / "deploy" / "local" / "connect.properties")
    assert worker["config.providers"] == "file"
    assert worker["config.providers.file.class"].endswith(".FileConfigProvider")
    assert worker["config.providers.file.param.allowed.paths"] == "${secrets_dir}"


def test_prometheus_scrapes_services_compose_runs() -> None:
    """Every scrape target of deploy/prometheus is a service of this file (the quality
    processor's and the retrain controller's too), running the Foresight process its job is
    named after."""
    services = _compose()["services"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for target in (t for static in job["static_configs"] for t in static["targets"]):
            host = target.rsplit(":", 1)[0]
            assert host == job["job_name"] and host in services, target
    assert services["foresight-quality"]["command"] == ["foresight", "quality", "run"]
    assert services["foresight-retrain"]["command"] == ["foresight", "retrain"]
