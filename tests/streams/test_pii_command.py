"""``foresight pii rules | hash``, and an ingest that refuses a rules file it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.pii import Scrubber, load_secret, shipped_rules
from streams.cli import main


@pytest.fixture
def pii_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FORESIGHT_PII_KEY_FILE", str(tmp_path / "pii.key"))
    monkeypatch.setenv("FORESIGHT_KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.setenv("FORESIGHT_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return tmp_path


def test_rules_lists_a_files_rules_then_the_shipped_ones(
    pii_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pii", "rules", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == [
        r.name for r in shipped_rules()
    ]
    rules = pii_env / "pii.yaml"
    rules.write_text("rules: [{name: customers, key: customer, action: hash}]\nshipped: [ipv4]\n")
    monkeypatch.setenv("FORESIGHT_PII_RULES", str(rules))
    assert main(["pii", "rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["customers", "hash"], ["ipv4", "hash"]]
    assert "key 'customer'" in lines[0]


def test_hash_prints_the_token_ingest_would_give_and_never_makes_a_secret(
    pii_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pii", "hash", "10.0.0.5"]) == 2
    assert "no PII hash secret" in capsys.readouterr().err
    assert not (pii_env / "pii.key").exists()
    secret = load_secret(pii_env / "pii.key")  # as the first ingest makes it
    assert main(["pii", "hash", "10.0.0.5", "ada@example.com", "--json"]) == 0
    scrubber = Scrubber(shipped_rules(), secret)
    assert json.loads(capsys.readouterr().out) == {
        "10.0.0.5": scrubber.token("10.0.0.5"),
        "ada@example.com": scrubber.token("ada@example.com"),
    }


def test_ingest_refuses_to_start_with_a_rules_file_it_cannot_use(
    pii_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = pii_env / "pii.yaml"
    rules.write_text("rules: [{name: phones, value_regex: '[0-9', action: redact}]\n")
    monkeypatch.setenv("FORESIGHT_PII_RULES", str(rules))
    assert main(["ingest"]) == 2
    err = capsys.readouterr().err
    assert str(rules) in err and "(phones)" in err and "not a regular expression" in err
