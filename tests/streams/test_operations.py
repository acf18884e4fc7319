"""Model and connector changes need the operate role, and leave an audit event either way.

No service here: the audit trails are never started (their events stay pending, to be read),
and Kafka and Connect are addresses where nothing listens.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.alert_sinks import sink_config
from connectors.audit import AuditTrail
from connectors.http.keys import OPERATE, READ, WRITE, KeysFile
from connectors.kafka_clients import KafkaConfig
from models.registry import ModelRegistry, RegistryError
from models.traffic import TrafficSplit
from streams.cli import main
from streams.operations import (
    OperatorRefusedError,
    apply_alert_connectors,
    promote_model,
    rollback_model,
    split_model,
)
from streams.settings import Settings
from tests.models.test_registry import _register

NOWHERE = "127.0.0.1:1"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("FORESIGHT_API_KEY", raising=False)
    return Settings(
        kafka_bootstrap_servers=NOWHERE,
        kafka_connect_url=f"http://{NOWHERE}",
        model_registry_url=f"file://{tmp_path}/models",
        keys_file=str(tmp_path / "keys.json"),
        credentials_file=str(tmp_path / "credentials"),
        stack_dir=str(tmp_path / "stack"),
    )


def _trail() -> AuditTrail:
    return AuditTrail(KafkaConfig(NOWHERE), "audit", "cli", origin="ada@test")


def _registry_with_two_versions(settings: Settings) -> ModelRegistry:
    registry = ModelRegistry(settings.model_registry_url)
    _register(registry, seed=0)
    _register(registry, seed=1)
    registry.promote("failure_risk", "1")
    return registry


def test_promote_with_an_operate_key_changes_the_registry_and_records_who(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = _registry_with_two_versions(settings)
    ops, key = KeysFile(settings.keys_file).create("ops", [OPERATE])
    monkeypatch.setenv("FORESIGHT_API_KEY", key)
    trail = _trail()
    change = promote_model(settings, trail, "failure_risk", "2")
    assert [u["action"] for u in change.updates] == ["ARCHIVED", "PROMOTED"]
    assert change.problem is not None and "could not produce to models.updates" in change.problem
    assert registry.show("failure_risk").version == "2"
    (event,) = trail.pending()
    assert (event["action"], event["target"], event["outcome"]) == (
        "model.promote",
        "failure_risk 2",
        "SUCCEEDED",
    )
    assert (event["key_id"], event["key_name"], event["origin"]) == (ops.id, "ops", "ada@test")
    assert event["details"]["updates"] == "ARCHIVED failure_risk 1, PROMOTED failure_risk 2"
    assert event["details"]["published"].startswith("no: could not produce")


def test_an_a_b_split_changes_the_registry_records_who_and_prints_the_arms(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _registry_with_two_versions(settings)
    ops, key = KeysFile(settings.keys_file).create("ops", [OPERATE])
    monkeypatch.setenv("FORESIGHT_API_KEY", key)
    trail = _trail()
    change = split_model(settings, trail, "failure_risk", TrafficSplit({"2": 20.0}))
    assert [(u["action"], u["version"], u["metrics"]) for u in change.updates] == [
        ("SPLIT", "2", {"traffic_percent": 20.0})
    ]
    assert registry.split("failure_risk").shares == {"2": 20.0}
    (event,) = trail.pending()
    assert (event["action"], event["target"], event["outcome"], event["key_id"]) == (
        "model.split", "failure_risk 2=20%", "SUCCEEDED", ops.id,
    )  # fmt: skip
    monkeypatch.setenv("MODEL_REGISTRY_URL", settings.model_registry_url)
    assert main(["models", "split", "failure_risk"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "failure_risk version    2 (candidate): 20%",
        "failure_risk version    1 (production): 80%",
    ]
    assert main(["models", "split", "failure_risk", "2=120"]) == 1
    assert "at most 100" in capsys.readouterr().err


def test_a_failed_rollback_is_recorded_as_failed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _registry_with_two_versions(settings)
    monkeypatch.setenv(
        "FORESIGHT_API_KEY", KeysFile(settings.keys_file).create("ops", [OPERATE])[1]
    )
    trail = _trail()
    with pytest.raises(RegistryError):
        rollback_model(settings, trail, "failure_risk")  # nothing was in production before
    (event,) = trail.pending()
    assert (event["action"], event["outcome"]) == ("model.rollback", "FAILED")
    assert event["details"]["error"]


@pytest.mark.parametrize(
    ("roles", "given", "reason"),
    [
        (None, None, "no API key: set FORESIGHT_API_KEY"),
        ([OPERATE], "fsk_revoked", "is not in the keys file"),
        ([READ, WRITE], "own", "has the roles read, write; model.promote needs the operate role"),
    ],
)
def test_promote_without_the_operate_role_is_refused_recorded_and_changes_nothing(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    roles: list[str] | None,
    given: str | None,
    reason: str,
) -> None:
    registry = _registry_with_two_versions(settings)
    entry = None
    if roles is not None:
        entry, key = KeysFile(settings.keys_file).create("someone", roles)
        monkeypatch.setenv("FORESIGHT_API_KEY", key if given == "own" else str(given))
    trail = _trail()
    with pytest.raises(OperatorRefusedError, match=re.escape(reason)) as refused:
        promote_model(settings, trail, "failure_risk", "2")
    assert "foresight keys create NAME --roles operate" in str(refused.value)
    assert registry.show("failure_risk").version == "1"
    (event,) = trail.pending()
    assert (event["action"], event["target"], event["outcome"]) == (
        "model.promote",
        "failure_risk 2",
        "REFUSED",
    )
    assert event["key_id"] == (entry.id if given == "own" and entry else "")
    assert reason in event["details"]["reason"]


def test_the_credentials_file_is_the_key_when_no_variable_is_set(settings: Settings) -> None:
    _registry_with_two_versions(settings)
    Path(settings.credentials_file).write_text(
        KeysFile(settings.keys_file).create("local", [READ])[1] + "\n"
    )
    with pytest.raises(OperatorRefusedError, match=r"key k\w+ \(local\) has the roles read"):
        rollback_model(settings, _trail(), "failure_risk")


def test_a_broken_keys_file_refuses(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    Path(settings.keys_file).write_text("[]")
    monkeypatch.setenv("FORESIGHT_API_KEY", "fsk_x")
    with pytest.raises(OperatorRefusedError, match="not a Foresight keys file"):
        rollback_model(settings, _trail(), "failure_risk")


def test_connect_apply_without_the_operate_role_never_reaches_connect(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, key = KeysFile(settings.keys_file).create("dashboards", [READ])
    monkeypatch.setenv("FORESIGHT_API_KEY", key)
    sink = sink_config(
        "slack",
        "https://hooks.slack.com/services/T0/B0/SECRET",
        secrets_dir=Path(settings.stack_dir),
    )
    trail = _trail()
    with pytest.raises(OperatorRefusedError, match=r"connect\.apply needs the operate role"):
        apply_alert_connectors(settings, trail, [sink], timeout_s=1.0)
    assert not sink.secrets_file.exists()
    (event,) = trail.pending()
    assert (event["action"], event["target"], event["outcome"], event["key_id"]) == (
        "connect.apply",
        "foresight-alerts-slack",
        "REFUSED",
        reader.id,
    )
    assert "SECRET" not in str(event)


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "promote", "failure_risk", "2"],
        ["models", "rollback", "failure_risk"],
        ["models", "split", "failure_risk", "2=20"],
        ["connect", "apply", "--webhook-url", "https://hooks.example.com/x"],
        ["connect", "remove", "webhook"],
    ],
)
def test_the_commands_say_why_they_refuse(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    _registry_with_two_versions(settings)
    for name, value in {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_CONNECT_URL": settings.kafka_connect_url,
        "MODEL_REGISTRY_URL": settings.model_registry_url,
        "FORESIGHT_KEYS_FILE": settings.keys_file,
        "FORESIGHT_STACK_DIR": settings.stack_dir,
        "FORESIGHT_API_KEY": KeysFile(settings.keys_file).create("agents", [WRITE])[1],
    }.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "has the roles write" in err and "needs the operate role" in err
    assert ModelRegistry(settings.model_registry_url).show("failure_risk").version == "1"
