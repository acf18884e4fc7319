"""Settings: defaults, the YAML file, environment overrides, errors, and the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.setting_domains import Between
from streams.settings import Settings, load_settings, setting_fields, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.prediction_cache_ttl == 300
    assert settings.clickhouse_url == ""


def test_operator_names_are_declared() -> None:
    names = {f.metadata["env"] for f in setting_fields()}
    assert {
        "KAFKA_BOOTSTRAP_SERVERS",
        "FEATURE_STORE_URL",
        "MODEL_REGISTRY_URL",
        "PREDICTION_CACHE_TTL",
        "CLICKHOUSE_URL",
    } <= names


def test_yaml_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "foresight.yaml"
    config.write_text("prediction_cache_ttl: 60\nkafka_bootstrap_servers: k:1\n")
    settings = load_settings(environ={"PREDICTION_CACHE_TTL": "90"}, config_file=config)
    assert settings.prediction_cache_ttl == 90
    assert settings.kafka_bootstrap_servers == "k:1"


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PREDICTION_CACHE_TTL: prediction_cache_ttl must be int"):
        load_settings(environ={"PREDICTION_CACHE_TTL": "soon"})
    config = tmp_path / "foresight.yaml"
    config.write_text("kafka_brokers: x\n")
    with pytest.raises(ValueError, match="unknown settings \\['kafka_brokers'\\]"):
        load_settings(environ={}, config_file=config)
    with pytest.raises(FileNotFoundError):
        load_settings(environ={"FORESIGHT_CONFIG": str(tmp_path / "missing.yaml")})


def _numbers() -> list[tuple[str, Between]]:
    return [
        (f.metadata["env"], f.metadata["domain"])
        for f in setting_fields()
        if isinstance(f.metadata["domain"], Between)
    ]


def test_every_number_and_choice_declares_what_it_allows() -> None:
    undeclared = [
        f.metadata["env"]
        for f in setting_fields()
        if type(f.default) in (int, float) and f.metadata["domain"] is None
    ]
    assert undeclared == []


@pytest.mark.parametrize(("env", "domain"), _numbers(), ids=[e for e, _ in _numbers()])
def test_a_number_outside_its_domain_is_refused_naming_the_setting(
    env: str, domain: Between
) -> None:
    low, high = domain.low, domain.high
    outside = ["nan", "inf", "-inf"]
    inside = []
    if low is not None:
        outside.append(_text(low if domain.above else low - 1))
        inside += [] if domain.above else [_text(low)]
    if high is not None:
        outside.append(_text(high if domain.below else high + 1))
        inside += [] if domain.below else [_text(high)]
    for raw in outside:
        with pytest.raises(ValueError, match=f"^{env}: .* must be .*, got ") as refused:
            load_settings(environ={env: raw})
        assert raw in str(refused.value)
    for raw in inside:
        load_settings(environ={env: raw})


def _text(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@pytest.mark.parametrize(
    ("env", "bad", "good"),
    [
        ("FORESIGHT_LOG_LEVEL", "LOUD", "debug"),
        ("FORESIGHT_WORKER_OFFSET_RESET", "middle", "latest"),
        ("FORESIGHT_WORKER_STORE", "mysql://", "rocksdb://"),
        ("FEATURE_STORE_URL", "http://cache:6379", "rediss://cache:6380/1"),
        ("FEATURE_STORE_URL", "cache:6379", "unix:///run/redis.sock"),
        ("CLICKHOUSE_URL", "clickhouse:8123", "https://u:p@ch:8443/db"),
        ("KAFKA_CONNECT_URL", "", "https://connect:8083"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "SASL_PLAINTEXT"),
        ("FORESIGHT_WORKER_ID", "", "team-a.worker_2"),
        ("FORESIGHT_AUDIT_TOPIC", "audit trail", "ops.audit"),
        ("FORESIGHT_ENTITY_LABELS", "", "instance,host"),
        ("FORESIGHT_ENTITY_LABELS", "instance;host", "instance, host"),
    ],
)
def test_a_choice_or_url_outside_its_domain_is_refused(env: str, bad: str, good: str) -> None:
    with pytest.raises(ValueError, match=f"^{env}: .* must be .*, got {bad!r}"):
        load_settings(environ={env: bad})
    extra = {"KAFKA_SASL_USERNAME": "u"} if good.startswith("SASL") else {}
    if not extra:
        load_settings(environ={env: good})


def test_settings_made_in_code_are_held_to_the_same_domains() -> None:
    with pytest.raises(ValueError, match=r"^FORESIGHT_STEP_S must be above 0, got 0\.0$"):
        Settings(step_s=0.0)
    with pytest.raises(ValueError, match="FORESIGHT_API_PORT must be 1 to 65535"):
        Settings().replace(api_port=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("step_s: [\n", "is not YAML at line 2, column 1: expected the node content"),
        ("step_s: 1\n  bad: indent\n", "is not YAML at line 2, column 6: mapping values"),
        ("topic_partitions: 2.5\n", "topic_partitions must be int, got 2.5"),
        ("step_s: true\n", "step_s must be float, got True"),
        ("step_s: .nan\n", "step_s must be a number above 0, got nan"),
    ],
)
def test_a_yaml_file_that_does_not_fit_is_one_line_naming_where(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "foresight.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        load_settings(environ={}, config_file=config)
    assert "\n" not in str(refused.value)


def test_readme_lists_every_setting() -> None:
    assert settings_table() in README.read_text(), (
        "README's settings table is stale: paste `python -c 'from streams.settings import "
        "settings_table; print(settings_table())'`"
    )


@pytest.mark.parametrize("servers", ["", "kafka", "kafka:", "kafka:9092,", ":9092", "kafka:99999"])
def test_brokers_are_host_port_pairs(servers: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"KAFKA_BOOTSTRAP_SERVERS is {servers!r}; ")):
        load_settings(environ={"KAFKA_BOOTSTRAP_SERVERS": servers})
    load_settings(environ={"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092, [::1]:9093"})
