"""``foresight quality backfill``: a line per commit for a person, JSON lines for a script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.cli import main
from tests.connectors.test_git_quality import repo

__all__ = ["repo"]  # the fixture: a three-commit repository


def test_json_lines_on_stdout_and_the_summary_on_stderr(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = tmp_path / "shop.jsonl"
    code = main(["quality", "backfill", str(repo), "--json", "--no-lint",
                 "--output", str(written), "--progress-every", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    snapshots = [json.loads(line) for line in out.splitlines()]
    assert [s["test_count"] for s in snapshots] == [0, 2, 2]
    assert written.read_text() == out
    assert "quality backfill: 2/3 commits" in err
    assert err.splitlines()[-1].startswith(
        f"quality backfill: 3 snapshots of shop from 2023-11-14 22:13 to 2023-11-16 22:13, "
        f"written to {written}"
    )


def test_a_table_for_a_person_and_git_s_refusal_in_words(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["quality", "backfill", str(repo), "--no-lint"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["commit", "time", "(UTC)"] and len(lines) == 4
    written = tmp_path / "snapshots.jsonl"
    assert main(["quality", "backfill", str(tmp_path), "--output", str(written)]) == 2
    refused = capsys.readouterr()
    assert "not a git repository" in refused.err
    assert refused.out == "" and not written.exists()  # no table header, no empty file


def test_the_processor_refuses_settings_that_cannot_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORESIGHT_QUALITY_FALLING_COMMITS", "1")
    assert main(["quality", "run"]) == 2
    assert "falling_commits (1)" in capsys.readouterr().err
