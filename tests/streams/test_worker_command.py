"""``foresight worker`` refuses a rules file it cannot use, before touching Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli import main


def test_a_bad_signal_rules_file_stops_the_worker_with_the_place_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("profiles: [{name: mine, signals: [{record: cpu, expr: 'rate(x[5m])'}]}]")
    monkeypatch.setenv("FORESIGHT_SIGNAL_RULES", str(rules))
    assert main(["worker"]) == 2
    error = capsys.readouterr().err
    assert f"{rules} profiles[0] (mine) signals[0] (cpu): expr: rate() is not needed" in error
