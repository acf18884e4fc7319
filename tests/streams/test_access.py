"""Server keys from the settings: the first start's key, and no documented key beyond the
loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.http.app import is_loopback
from connectors.http.auth import Gatekeeper
from connectors.http.keys import READ, WRITE, KeysFile
from streams.access import StartRefusedError, audit_trail, gatekeeper, local_client_key
from streams.cli import main
from streams.settings import Settings


def _settings(tmp_path: Path, **changes: str) -> Settings:
    return Settings(
        keys_file=str(tmp_path / "keys.json"),
        credentials_file=str(tmp_path / "credentials"),
    ).replace(**changes)


def _gatekeeper(settings: Settings, server: str) -> Gatekeeper:
    """The server's gatekeeper, with an audit trail that is never started (no Kafka here)."""
    return gatekeeper(settings, server, audit_trail(settings, server))


def test_the_first_start_makes_a_key_prints_it_once_and_saves_it_for_clients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORESIGHT_API_KEY", raising=False)
    settings = _settings(tmp_path)
    gate = _gatekeeper(settings, "ingest")
    key = local_client_key(settings)
    assert key is not None and key in capsys.readouterr().err
    assert gate.admit("127.0.0.1", key, WRITE).admitted
    _gatekeeper(settings, "gateway")
    assert key not in capsys.readouterr().err  # shown once
    assert local_client_key(settings) == key


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.0.2.1", "foresight.example"])
def test_a_documented_key_is_refused_beyond_the_loopback(tmp_path: Path, host: str) -> None:
    KeysFile(tmp_path / "keys.json").create("legacy", [WRITE], key="dev-key")
    _gatekeeper(_settings(tmp_path), "ingest")  # the loopback: allowed
    with pytest.raises(StartRefusedError, match="example key from Foresight's documentation"):
        _gatekeeper(_settings(tmp_path, bind_host=host), "ingest")


def test_an_empty_or_broken_keys_file_refuses_to_start(tmp_path: Path) -> None:
    keys = KeysFile(tmp_path / "keys.json")
    keys.revoke(keys.create("only", [READ])[0].id)
    with pytest.raises(StartRefusedError, match="holds no key"):
        _gatekeeper(_settings(tmp_path), "gateway")
    keys.path.write_text("[]")
    with pytest.raises(StartRefusedError, match="not a Foresight keys file"):
        _gatekeeper(_settings(tmp_path), "gateway")


@pytest.mark.parametrize("command", [["ingest"], ["gateway"], ["sink", "clickhouse"]])
def test_every_server_refuses_to_start_with_a_documented_key_on_every_interface(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    KeysFile(tmp_path / "keys.json").create("legacy", [READ, WRITE], key="dev-key")
    monkeypatch.setenv("FORESIGHT_KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.setenv("FORESIGHT_BIND_HOST", "0.0.0.0")
    assert main(command) == 2
    assert "revoke it" in capsys.readouterr().err.lower()


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["", "0.0.0.0", "::", "10.1.2.3", "example.org"]))


def test_keys_commands_create_list_and_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORESIGHT_KEYS_FILE", str(tmp_path / "keys.json"))
    assert main(["keys", "create", "agents", "--roles", "write,read", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["roles"] == ["read", "write"] and created["key"].startswith("fsk_")
    assert main(["keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{k: created[k] for k in ("id", "name", "roles", "created")}]
    assert main(["keys", "list"]) == 0
    table = capsys.readouterr().out
    assert created["id"] in table and created["key"] not in table
    assert main(["keys", "create", "x", "--roles", "admin"]) == 1
    assert "unknown admin" in capsys.readouterr().err
    assert main(["keys", "revoke", created["id"]]) == 0
    assert main(["keys", "revoke", created["id"]]) == 1
    assert KeysFile(tmp_path / "keys.json").find(created["key"]) is None
