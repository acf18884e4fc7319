"""``foresight worker``: the Faust app it builds from the settings, and a rules file it refuses
before touching Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app import create_app
from streams.cli import main
from streams.settings import Settings


def test_a_bad_signal_rules_file_stops_the_worker_with_the_place_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("profiles: [{name: mine, signals: [{record: cpu, expr: 'rate(x[5m])'}]}]")
    monkeypatch.setenv("FORESIGHT_SIGNAL_RULES", str(rules))
    assert main(["worker"]) == 2
    error = capsys.readouterr().err
    assert f"{rules} profiles[0] (mine) signals[0] (cpu): expr: rate() is not needed" in error


@pytest.mark.parametrize("standbys", [0, 2])
def test_the_worker_keeps_as_many_standby_replicas_as_the_setting_says(
    tmp_path: Path, standbys: int
) -> None:
    settings = Settings(worker_data_dir=str(tmp_path), worker_standby_replicas=standbys)
    assert create_app(settings).conf.table_standby_replicas == standbys
