"""Settings: defaults, the YAML file, environment overrides, errors, and the README table."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import load_settings, setting_fields, settings_table

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


@pytest.mark.parametrize(
    "env",
    [
        {"FORESIGHT_WORKER_FETCH_WAIT_MS": "-5"},
        {"FORESIGHT_WORKER_IDLE_FETCH_WAIT_MS": "0"},
        {"FORESIGHT_WORKER_FETCH_MIN_BYTES": "0"},
        {"FORESIGHT_WORKER_PRODUCE_BATCH_BYTES": "0"},
    ],
)
def test_the_workers_fetches_and_sends_refuse_waits_and_sizes_kafka_has_no_use_for(
    env: dict[str, str],
) -> None:
    with pytest.raises(ValueError, match="FORESIGHT_WORKER_FETCH_WAIT_MS must be at least 0"):
        load_settings(environ=env)


@pytest.mark.parametrize("wait", ["-1", "nan"])
def test_the_journal_wait_refuses_what_is_not_a_wait(wait: str) -> None:
    with pytest.raises(ValueError, match="FORESIGHT_WORKER_JOURNAL_S must be 0 or more"):
        load_settings(environ={"FORESIGHT_WORKER_JOURNAL_S": wait})


def test_readme_lists_every_setting() -> None:
    assert settings_table() in README.read_text(), (
        "README's settings table is stale: paste `python -c 'from streams.settings import "
        "settings_table; print(settings_table())'`"
    )
