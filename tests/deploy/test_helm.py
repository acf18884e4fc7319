"""The Helm chart (deploy/helm/foresight) in every profile: it renders, every object is valid
for Kubernetes and its operator, and it runs what the code expects (images, commands, ports,
settings, topics, connectors), with only the architecture's network flows."""

from __future__ import annotations

import base64
import json
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.alert_payloads import TARGETS
from connectors.alert_sinks import CONFIG_DIR, sink_config
from connectors.http.keys import KEY_PREFIX, OPERATE, KeysFile
from connectors.kafka_connect import secrets_text
from deploy.local.stack import KAFKA_VERSION
from streams.cli import build_parser
from streams.commands.stack import topic_requests
from streams.settings import Settings, load_settings, setting_fields
from streams.topics import ALERTS, METRICS
from tests.deploy.kube import CHART, KUBE_VERSIONS, ROOT, Object, RenderError, crd_schemas
from tests.deploy.kube import problems as schema_problems
from tests.deploy.kube import render as helm_template

PROFILES = {"small": CHART / "profiles" / "small.yaml", "large": CHART / "profiles" / "large.yaml"}
PASSWORD = "pw-for-the-test"
PII_KEY = "0123456789abcdef" * 4 + "\n"
ALERT_URLS = {
    "webhook": "https://hooks.example.com/foresight?token=a\\b",
    "slack": "https://hooks.slack.com/services/T000/B000/XXXX",
    "pagerduty": "https://events.pagerduty.com/v2/enqueue",
    "alertmanager": "http://alertmanager.monitoring:9093/api/v2/alerts",
    "teams": "https://example.webhook.office.com/webhookb2/T3AMS",
}
ROUTING_KEY = "R0UT1NGKEY"
SMTP = {
    "host": "smtp.example.com",
    "port": "587",
    "security": "starttls",
    "username": "foresight",
    "password": "SMTP-PA55WORD",
    "from": "Foresight <alerts@example.com>",
    "to": "oncall@example.com, ops@example.com",
}
# Secrets of its own an install names: the API keys, the PII hash secret, the operate key.
KEYS_AND_PII = "apiKeys.existingSecret=k,pii.existingSecret=p,operateKey.existingSecret=o"
FORESIGHT_PROCESSES = {"worker", "ingest", "gateway", "api", "sink", "quality", "retrain"}
# The port each process serves /health and /metrics on (its command after `foresight`).
PORT_SETTING = {
    "worker": "worker_port",
    "ingest": "ingest_port",
    "gateway": "gateway_port",
    "api": "api_port",
    "sink clickhouse": "sink_metrics_port",
    "quality run": "quality_port",
    "retrain": "retrain_port",
}
# The README's architecture: which services each process talks to.
FLOWS = {
    "worker": {"kafka", "redis"},
    "ingest": {"kafka"},
    "gateway": {"kafka", "redis"},
    "api": {"kafka", "redis", "clickhouse"},
    "sink": {"kafka", "clickhouse"},
    "quality": {"kafka", "redis"},  # snapshots in, forecasts and alerts out; the forecast cache
    "retrain": {"kafka", "clickhouse"},  # alerts in, model updates out; history; registry: a volume
}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    KeysFile(path).create("prometheus", ["write"])
    return path


@pytest.fixture(scope="module")
def operate_key(keys_file: Path) -> str:
    """The retrain controller's key, in the keys file with the operate role."""
    return KeysFile(keys_file).create("retrain", [OPERATE])[1]


@pytest.fixture(scope="module")
def install(keys_file: Path, operate_key: str) -> Path:
    """The values every install gives: the keys file, the retrain controller's operate key,
    the PII hash secret, the ClickHouse password, and an endpoint for every alert target."""
    alerts: dict[str, Any] = {t: {"url": u} for t, u in ALERT_URLS.items()}
    alerts["pagerduty"]["routingKey"] = ROUTING_KEY
    alerts["email"] = {**SMTP, "port": int(SMTP["port"])}
    values = {
        "apiKeys": {"keysFile": keys_file.read_text()},
        "operateKey": {"key": operate_key},
        "pii": {"keyFile": PII_KEY},
        "clickhouse": {"password": PASSWORD},
        "connect": {"alerts": alerts},
    }
    path = keys_file.with_name("install.yaml")
    path.write_text(yaml.safe_dump(values))
    return path


def render(
    install: Path, profile: str, *args: str, kube_version: str = KUBE_VERSIONS[-1]
) -> list[Object]:
    return helm_template(
        "-f", str(PROFILES[profile]), "-f", str(install), *args, kube_version=kube_version
    )


@pytest.fixture(scope="module", params=sorted(PROFILES))
def profile(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def objects(install: Path, profile: str) -> list[Object]:
    return render(install, profile)


def _one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def _component(obj: Object) -> str:
    component: str = obj["metadata"]["labels"]["app.kubernetes.io/component"]
    return component


def _workloads(objects: list[Object]) -> dict[str, Object]:
    """The Foresight processes' Deployments and StatefulSet, by component."""
    return {
        _component(o): o
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet") and _component(o) in FORESIGHT_PROCESSES
    }


def _container(workload: Object) -> Object:
    containers: list[Object] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _settings(objects: list[Object]) -> Settings:
    """The settings the processes load from the chart's ConfigMap."""
    return load_settings(environ=_one(objects, "ConfigMap")["data"], config_file=None)


def _command(workload: Object) -> str:
    return " ".join(_container(workload)["command"][1:])


# -- It renders, and Kubernetes and the operators would take every object -------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_for_kubernetes_and_its_operator(
    install: Path, profile: str, kube_version: str
) -> None:
    crds = crd_schemas()
    objects = render(install, profile, kube_version=kube_version)
    found = [p for o in objects for p in schema_problems(o, kube_version, crds)]
    assert not found, "\n".join(found)
    kinds = {(o["apiVersion"], o["kind"]) for o in objects}
    assert set(crds) <= kinds  # every operator's schema was used


def test_with_services_of_your_own_every_object_is_still_valid(install: Path) -> None:
    """Kafka, Redis and ClickHouse elsewhere: no Strimzi Kafka or StatefulSets for them, and
    the processes' policies let them out to those services' ports."""
    objects = render(
        install,
        "small",
        "--set",
        "kafka.enabled=false,redis.enabled=false,clickhouse.enabled=false",
        "--set",
        "clickhouse.existingSecret=my-clickhouse,redis.urlSecret=my-redis",
        "--set",
        "settings.KAFKA_BOOTSTRAP_SERVERS=kafka.example.com:9092",
    )
    crds = crd_schemas()
    found = [p for o in objects for p in schema_problems(o, KUBE_VERSIONS[-1], crds)]
    assert not found, "\n".join(found)
    assert not [o for o in objects if o["kind"] in ("Kafka", "KafkaNodePool")]
    assert set(_workloads(objects)) == FORESIGHT_PROCESSES
    assert _settings(objects).kafka_bootstrap_servers == "kafka.example.com:9092"
    env = {e["name"]: e for e in _container(_workloads(objects)["gateway"])["env"]}
    assert env["FEATURE_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-redis",
        "key": "url",
    }
    sink = _one(objects, "NetworkPolicy", "foresight-sink")
    assert {"ports": [{"port": 8123}, {"port": 8443}]} in sink["spec"]["egress"]


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["--set", "clickhouse.password=x,pii.existingSecret=p"], "apiKeys: give the keys file"),
        (
            ["--set", "apiKeys.existingSecret=k,clickhouse.password=x,operateKey.existingSecret=o"],
            "pii: give the secret",
        ),
        (
            ["--set", "apiKeys.existingSecret=k,clickhouse.password=x,pii.existingSecret=p"],
            "operateKey: give the key the retrain controller presents",
        ),
        (
            ["--set", KEYS_AND_PII],
            "clickhouse: give the password",
        ),
        (
            ["--set", f"{KEYS_AND_PII},clickhouse.enabled=false"],
            "name the Secret whose key `url` is your server's CLICKHOUSE_URL",
        ),
    ],
)
def test_an_install_without_its_secrets_is_refused_with_what_to_give(
    values: list[str], words: str
) -> None:
    with pytest.raises(RenderError, match=words):
        helm_template(*values)


# -- The processes: images, commands, settings, ports, probes, resources ----------------------


def test_foresight_runs_its_own_image_at_the_package_version(objects: list[Object]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    images = {_container(w)["image"] for w in _workloads(objects).values()}
    assert images == {f"foresight:{version}"}


def test_infrastructure_is_the_versions_the_project_runs(objects: list[Object]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert _one(objects, "Kafka")["spec"]["kafka"]["version"] == KAFKA_VERSION
    assert _one(objects, "KafkaConnect")["spec"]["version"] == KAFKA_VERSION
    stateful = {_component(o): _container(o) for o in objects if o["kind"] == "StatefulSet"}
    assert stateful["clickhouse"]["image"] == compose["clickhouse"]["image"]
    assert stateful["redis"]["image"] == compose["redis"]["image"]
    dockerfile = (ROOT / "deploy" / "helm" / "connect.Dockerfile").read_text()
    base = next(line for line in dockerfile.splitlines() if line.startswith("FROM quay.io"))
    assert base.endswith(f"-kafka-{KAFKA_VERSION}")


def test_every_command_is_one_the_cli_takes(objects: list[Object]) -> None:
    parser = build_parser()
    commands = {_command(w): w for w in _workloads(objects).values()}
    assert set(commands) == set(PORT_SETTING)
    for command in commands:
        assert parser.parse_args(shlex.split(command)).func is not None


def test_every_process_gets_every_setting_and_secrets_only_where_needed(
    objects: list[Object],
) -> None:
    config_map = _one(objects, "ConfigMap")
    expected = {f.metadata["env"] for f in setting_fields()}
    assert set(config_map["data"]) == expected - {"CLICKHOUSE_URL"}
    for component, workload in _workloads(objects).items():
        container = _container(workload)
        assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])}
        reads_clickhouse = component in ("sink", "api", "retrain")  # history, to show and train
        expected = {"CLICKHOUSE_URL"} if reads_clickhouse else set()
        presents_operate = component == "retrain"  # checked at start: it promotes and refuses
        assert set(env) == expected | ({"FORESIGHT_API_KEY"} if presents_operate else set())
    url = _container(_workloads(objects)["sink"])["env"][0]["valueFrom"]["secretKeyRef"]
    secret = _one(objects, "Secret", url["name"])
    assert secret["stringData"][url["key"]] == (
        f"http://foresight:{PASSWORD}@foresight-clickhouse:8123/default"
    )
    settings = _settings(objects)
    assert settings.bind_host == "0.0.0.0"
    assert settings.kafka_bootstrap_servers == "foresight-kafka-bootstrap:9092"
    assert settings.feature_store_url == "redis://foresight-redis:6379/0"
    assert settings.kafka_connect_url == "http://foresight-connect-api:8083"


def test_no_secret_is_in_a_config_map(
    objects: list[Object], keys_file: Path, operate_key: str
) -> None:
    settings = json.dumps(_one(objects, "ConfigMap")["data"])
    secrets = [SMTP["password"], SMTP["to"], *ALERT_URLS.values(), keys_file.read_text()]
    secrets.append(operate_key)
    for secret in [PASSWORD, ROUTING_KEY, PII_KEY, *secrets]:
        assert secret not in settings


def test_ports_probes_and_services_are_the_settings(objects: list[Object]) -> None:
    settings = _settings(objects)
    services = {_component(o): o for o in objects if o["kind"] == "Service"}
    for component, workload in _workloads(objects).items():
        port = getattr(settings, PORT_SETTING[_command(workload)])
        container = _container(workload)
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        probes = [container[p] for p in ("readinessProbe", "livenessProbe")]
        assert all(p["httpGet"] == {"path": "/health", "port": "http"} for p in probes)
        assert services[component]["spec"]["ports"] == [
            {"name": "http", "port": port, "targetPort": "http"}
        ]
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


# The files processes read from Secrets: volume, the setting of the path, the Secret and its key,
# and the processes that read it (the worker and the quality processor serve /health and
# /metrics only: no keys).
SECRET_FILES = {
    "api-keys": (
        "keys_file",
        "foresight-api-keys",
        "keys.json",
        {"ingest", "gateway", "api", "sink", "retrain"},
    ),
    "pii-key": ("pii_key_file", "foresight-pii", "pii.key", {"ingest"}),
}


def test_secret_files_are_mounted_read_only_where_the_settings_say(
    objects: list[Object], keys_file: Path
) -> None:
    stored = _one(objects, "Secret", "foresight-api-keys")["data"]["keys.json"]
    assert json.loads(base64.b64decode(stored)) == json.loads(keys_file.read_text())
    assert KEY_PREFIX not in keys_file.read_text()  # hashes only
    stored = _one(objects, "Secret", "foresight-pii")["data"]["pii.key"]
    assert base64.b64decode(stored).decode() == PII_KEY
    settings = _settings(objects)
    for component, workload in _workloads(objects).items():
        mounts = {m["name"]: m for m in _container(workload)["volumeMounts"]}
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        for volume, (setting, secret, key, readers) in SECRET_FILES.items():
            if component not in readers:
                assert volume not in mounts, component
                continue
            path = Path(getattr(settings, setting))
            assert mounts[volume] == {
                "name": volume,
                "mountPath": str(path.parent),
                "readOnly": True,
            }
            assert volumes[volume]["secret"] == {
                "secretName": secret,
                "items": [{"key": key, "path": path.name}],
            }


# -- Workers: state on volumes, standbys, disruption budget, autoscaling on lag ----------------


def test_workers_keep_state_on_their_own_volumes(objects: list[Object], profile: str) -> None:
    settings = _settings(objects)
    workers = _workloads(objects)["worker"]
    (claim,) = workers["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in _container(workers)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == settings.worker_data_dir
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert settings.worker_store == "rocksdb://"
    assert settings.worker_standby_replicas == {"small": 0, "large": 1}[profile]
    budget = _one(objects, "PodDisruptionBudget", workers["metadata"]["name"])
    assert budget["spec"]["selector"] == workers["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_the_workers_the_api_and_the_retrain_controller_read_one_model_registry(
    objects: list[Object], profile: str
) -> None:
    """The API scores with the models the workers serve, and promotes them; the retrain
    controller registers candidates the workers shadow: with a shared registry (the large
    profile) all three mount its claim where MODEL_REGISTRY_URL points."""
    path = _settings(objects).model_registry_url.removeprefix("file://")
    volumes = []
    for component in ("worker", "api", "retrain"):
        workload = _workloads(objects)[component]
        mounts = {m["name"]: m["mountPath"] for m in _container(workload)["volumeMounts"]}
        assert mounts["models"] == path, component
        (volume,) = [v for v in workload["spec"]["template"]["spec"]["volumes"]
                     if v["name"] == "models"]  # fmt: skip
        volumes.append(volume)
    assert volumes[0] == volumes[1] == volumes[2]
    shared = {"persistentVolumeClaim": {"claimName": "foresight-models"}}
    assert {k: v for k, v in volumes[0].items() if k != "name"} == (
        shared if profile == "large" else {"emptyDir": {}}
    )


def test_one_retrain_controller_and_never_two_at_once(
    objects: list[Object], operate_key: str
) -> None:
    """Two controllers would act on the same drift and train twice: exactly one replica in
    every profile, replaced by stopping the old pod first (Recreate), and no disruption budget
    that would block it. Its operate key comes from a Secret of its own."""
    retrain = _workloads(objects)["retrain"]
    assert retrain["kind"] == "Deployment"
    assert retrain["spec"]["replicas"] == 1
    assert retrain["spec"]["strategy"] == {"type": "Recreate"}
    assert not [
        o for o in objects if o["kind"] == "PodDisruptionBudget" and _component(o) == "retrain"
    ]
    assert all(
        "strategy" not in w["spec"] for c, w in _workloads(objects).items() if c != "retrain"
    )
    (env,) = [e for e in _container(retrain)["env"] if e["name"] == "FORESIGHT_API_KEY"]
    ref = env["valueFrom"]["secretKeyRef"]
    assert _one(objects, "Secret", ref["name"])["stringData"][ref["key"]] == operate_key


def test_workers_scale_on_consumer_lag_up_to_the_partitions(objects: list[Object]) -> None:
    settings = _settings(objects)
    workers = _workloads(objects)["worker"]
    scaled = _one(objects, "ScaledObject")
    assert "replicas" not in workers["spec"]  # KEDA's to set
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": workers["metadata"]["name"],
    }
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap_servers
    assert trigger["metadata"]["consumerGroup"] == settings.worker_id
    assert trigger["metadata"]["topic"] == METRICS.name
    assert trigger["metadata"]["offsetResetPolicy"] == settings.worker_offset_reset
    topics = {o["spec"]["topicName"]: o for o in objects if o["kind"] == "KafkaTopic"}
    partitions = topics[METRICS.name]["spec"]["partitions"]
    assert scaled["spec"]["maxReplicaCount"] == partitions == METRICS.partition_count(settings)
    assert scaled["spec"]["minReplicaCount"] <= partitions


# -- Kafka, topics and Connect -----------------------------------------------------------------


def test_topics_are_the_code_s_with_the_same_layout(objects: list[Object]) -> None:
    settings = _settings(objects)
    replicas = _one(objects, "Kafka")["spec"]["kafka"]["config"]["default.replication.factor"]
    rendered = {
        o["spec"]["topicName"]: (
            o["spec"]["partitions"],
            o["spec"]["config"],
            o["spec"]["replicas"],
        )
        for o in objects
        if o["kind"] == "KafkaTopic"
    }
    expected = {t.name: (t.partitions, dict(t.config), replicas) for t in topic_requests(settings)}
    dead_letters = {
        json.loads((CONFIG_DIR / t.connector_file).read_text())["config"][
            "errors.deadletterqueue.topic.name"
        ]
        for t in TARGETS.values()
    }
    for name in dead_letters:  # `foresight connect apply` makes it as it makes `alerts`
        expected[name] = (ALERTS.partition_count(settings), ALERTS.config(settings), replicas)
    assert rendered == expected


def test_kafka_runs_in_kraft_mode_on_node_pools(objects: list[Object], profile: str) -> None:
    kafka = _one(objects, "Kafka")
    assert kafka["metadata"]["annotations"] == {
        "strimzi.io/node-pools": "enabled",
        "strimzi.io/kraft": "enabled",
    }
    pools = [o for o in objects if o["kind"] == "KafkaNodePool"]
    roles = {
        role: sum(p["spec"]["replicas"] for p in pools if role in p["spec"]["roles"])
        for role in ("controller", "broker")
    }
    assert (
        roles
        == {"small": {"controller": 1, "broker": 1}, "large": {"controller": 3, "broker": 3}}[
            profile
        ]
    )
    assert all(
        p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools
    )
    assert kafka["spec"]["kafka"]["config"]["default.replication.factor"] <= roles["broker"]


def test_connect_runs_the_http_sink_and_reads_secrets_from_its_mount_only(
    objects: list[Object],
) -> None:
    connect = _one(objects, "KafkaConnect")
    config = connect["spec"]["config"]
    docker = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "docker" / "connect-distributed.properties")
        .read_text()
        .splitlines()
        if line and not line.startswith("#")
    )
    shared = ("group.id", "config.storage.topic", "offset.storage.topic", "status.storage.topic")
    assert {k: config[k] for k in shared} == {k: docker[k] for k in shared}
    assert config["config.providers"] == "file"
    assert config["config.providers.file.class"] == docker["config.providers.file.class"]
    secrets_path = config["config.providers.file.param.allowed.paths"]
    (mount,) = connect["spec"]["template"]["connectContainer"]["volumeMounts"]
    assert mount == {"name": "alert-targets", "mountPath": secrets_path, "readOnly": True}
    assert connect["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    dockerfile = (ROOT / "deploy" / "helm" / "connect.Dockerfile").read_text()
    assert "connectors/kafka-connect/http-sink" in dockerfile
    assert "connectors/kafka-connect/smtp-sink" in dockerfile
    assert "/opt/kafka/plugins/foresight-smtp-sink/" in dockerfile


def test_a_connector_per_alert_target_is_the_code_s_config(objects: list[Object]) -> None:
    connect = _one(objects, "KafkaConnect")
    secrets_dir = Path(connect["spec"]["config"]["config.providers.file.param.allowed.paths"])
    volume = connect["spec"]["template"]["pod"]["volumes"][0]["secret"]["secretName"]
    secret = _one(objects, "Secret", volume)["stringData"]
    connectors = {o["metadata"]["name"]: o for o in objects if o["kind"] == "KafkaConnector"}
    assert len(connectors) == len(TARGETS)
    for target in TARGETS:
        sink = sink_config(
            target,
            ALERT_URLS.get(target, ""),
            secrets_dir=secrets_dir,
            routing_key=ROUTING_KEY if target == "pagerduty" else "",
            smtp=SMTP if target == "email" else None,
        )
        spec = connectors[sink.name]["spec"]
        assert (
            connectors[sink.name]["metadata"]["labels"]["strimzi.io/cluster"]
            == connect["metadata"]["name"]
        )
        config = {
            **sink.config,
            "connector.class": spec["class"],
            "tasks.max": str(spec["tasksMax"]),
        }
        assert {
            **spec["config"],
            "connector.class": spec["class"],
            "tasks.max": str(spec["tasksMax"]),
        } == config
        assert secret[sink.secrets_file.name] == secrets_text(sink.secrets)


def test_the_chart_s_connector_configs_are_the_code_s() -> None:
    for target in TARGETS.values():
        linked = CHART / "files" / "kafka-connect" / target.connector_file
        assert linked.resolve() == (CONFIG_DIR / target.connector_file).resolve()


def test_no_alert_target_no_connector() -> None:
    objects = helm_template("--set", f"{KEYS_AND_PII},clickhouse.password={PASSWORD}")
    assert not [o for o in objects if o["kind"] == "KafkaConnector"]
    assert "stringData" not in _one(objects, "Secret", "foresight-alert-targets")


# -- Ingress, network policies, monitoring ---------------------------------------------------


def test_ingest_the_gateway_and_the_api_are_reached_over_tls(objects: list[Object]) -> None:
    ingresses = {_component(o): o for o in objects if o["kind"] == "Ingress"}
    assert set(ingresses) == {"ingest", "gateway", "api"}
    for component, ingress in ingresses.items():
        (rule,) = ingress["spec"]["rules"]
        (tls,) = ingress["spec"]["tls"]
        assert tls["hosts"] == [rule["host"]] and tls["secretName"]
        (path,) = rule["http"]["paths"]
        assert path["path"] == "/" and path["pathType"] == "Prefix"  # /ws and /api with it
        assert path["backend"]["service"] == {
            "name": f"foresight-{component}",
            "port": {"name": "http"},
        }
    for websockets in ("gateway", "api"):  # the live feed, GraphQL subscriptions
        timeouts = ingresses[websockets]["metadata"]["annotations"]
        assert int(timeouts["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    for large_bodies in ("ingest", "api"):  # remote_write, batches of windows
        annotations = ingresses[large_bodies]["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"


def _peer_components(peers: list[Object]) -> set[str]:
    """The components of this release a list of NetworkPolicy peers names."""
    found: set[str] = set()
    for peer in peers:
        labels = peer.get("podSelector", {}).get("matchLabels", {})
        if "app.kubernetes.io/component" in labels:
            found.add(labels["app.kubernetes.io/component"])
        for expression in peer.get("podSelector", {}).get("matchExpressions", []):
            if expression["key"] == "app.kubernetes.io/component":
                found.update(expression["values"])
        if labels.get("strimzi.io/kind") in ("Kafka", "KafkaConnect"):
            found.add(labels["strimzi.io/kind"].lower())
    return found


def _egress(policy: Object) -> Iterator[tuple[str, set[int]]]:
    for rule in policy["spec"]["egress"]:
        ports = {p["port"] for p in rule["ports"]}
        if ports == {53}:
            continue
        services = _peer_components(rule.get("to", []))
        yield (services.pop() if services else "anywhere"), ports


def test_network_policies_allow_only_the_architecture_s_flows(objects: list[Object]) -> None:
    policies = {
        o["metadata"]["name"].removeprefix("foresight-"): o
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }
    assert set(policies) == FORESIGHT_PROCESSES | {"redis", "clickhouse", "connect"}
    ports = {"kafka": {9092}, "redis": {6379}, "clickhouse": {8123}}
    for process, services in FLOWS.items():
        policy = policies[process]
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert dict(_egress(policy)) == {s: ports[s] for s in services}, process
        (ingress,) = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"port": "http"}]
        assert not _peer_components(ingress["from"])  # Prometheus, the Ingress controller
    for service in ("redis", "clickhouse"):
        (ingress,) = policies[service]["spec"]["ingress"]
        users = {p for p, services in FLOWS.items() if service in services}
        assert _peer_components(ingress["from"]) == users
        assert list(_egress(policies[service])) == []
    listener = _one(objects, "Kafka")["spec"]["kafka"]["listeners"][0]
    assert _peer_components(listener["networkPolicyPeers"]) == set(FLOWS) | {"kafkaconnect"}
    assert any("namespaceSelector" in p for p in listener["networkPolicyPeers"])  # KEDA
    assert dict(_egress(policies["connect"])) == {"kafka": {9092}, "anywhere": {443}}


def test_prometheus_scrapes_every_process(objects: list[Object]) -> None:
    monitor = _one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {
        _component(o)
        for o in objects
        if o["kind"] == "Service" and selector.items() <= o["metadata"]["labels"].items()
    }
    assert scraped == FORESIGHT_PROCESSES
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    headless = _one(objects, "Service", "foresight-worker")
    assert headless["spec"]["clusterIP"] == "None"  # every worker pod is a target
