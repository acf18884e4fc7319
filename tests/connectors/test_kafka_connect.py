"""Connector secrets files: private, escaped for Java's Properties, referenced by path."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from connectors.kafka_connect import secret_reference, write_secrets


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_file_is_private(tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets" / "sink.properties"
    write_secrets(secrets_file, {"url": "https://hooks.example.com/T0K3N"})
    assert _mode(secrets_file) == 0o600
    assert _mode(secrets_file.parent) == 0o700
    assert "url=https://hooks.example.com/T0K3N\n" in secrets_file.read_text()
    assert [p.name for p in secrets_file.parent.iterdir()] == ["sink.properties"]


def test_secrets_are_escaped_for_java_properties(tmp_path: Path) -> None:
    secrets_file = tmp_path / "sink.properties"
    write_secrets(secrets_file, {"routing_key": " a\\b\nc=d:#é"})
    assert secrets_file.read_text(encoding="utf-8").splitlines()[-1] == (
        "routing_key=\\ a\\\\b\\nc=d:#é"
    )


def test_write_secrets_tells_when_they_changed(tmp_path: Path) -> None:
    secrets_file = tmp_path / "sink.properties"
    assert write_secrets(secrets_file, {"url": "http://a/1"}) is False
    assert write_secrets(secrets_file, {"url": "http://a/1"}) is False
    assert write_secrets(secrets_file, {"url": "http://a/2"}) is True


def test_reference_names_the_file_and_key(tmp_path: Path) -> None:
    assert secret_reference(tmp_path / "s.properties", "url") == (
        f"${{file:{tmp_path}/s.properties:url}}"
    )


def test_reference_refuses_a_path_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="FORESIGHT_STACK_DIR"):
        secret_reference(Path("/srv/c:/s.properties"), "url")
