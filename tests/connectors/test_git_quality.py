"""Code-quality snapshots from a git history made here, commit by commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from connectors.git_quality import GitError, backfill, find_ruff, history, is_test
from schemas.codec import Codec
from schemas.quality import snapshot_problems

APP = """import os


def price(amount, vip):
    if vip:
        return amount * 0.9
    return amount
"""
TESTS = """from app import price


def test_vip():
    assert price(10, True) == 9


def test_plain():
    assert price(10, False) == 10
"""
BLOCK = """    total = 0
    for item in items:
        if item.ok:
            total += item.price
        elif item.free:
            total += 0
    return total
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _commit(repo: Path, files: dict[str, str], when: int) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    env = f"{when} +0000"
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-qm", f"at {when}"],
        check=True,
        env={"GIT_AUTHOR_DATE": env, "GIT_COMMITTER_DATE": env, "HOME": str(repo),
             "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Three commits: an app, then its tests, then two functions sharing a block."""
    repo = tmp_path / "shop"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, {"app.py": APP, "README.md": "shop\n"}, 1_700_000_000)
    _commit(repo, {"tests/test_app.py": TESTS}, 1_700_086_400)
    twice = APP + "\n\ndef cart(items):\n" + BLOCK + "\n\ndef basket(items):\n" + BLOCK
    _commit(repo, {"app.py": twice}, 1_700_172_800)
    return repo


def test_each_commit_is_measured_in_order(repo: Path) -> None:
    snapshots = list(backfill(repo))
    assert [s["event_time"] for s in snapshots] == [1_700_000_000_000, 1_700_086_400_000,
                                                     1_700_172_800_000]  # fmt: skip
    first, second, third = snapshots
    assert first["repository"] == "shop" and first["source"] == "foresight-backfill"
    assert (first["files"], first["lines"], first["functions"]) == (1, 5, 1)
    assert (first["mean_complexity"], first["max_complexity"]) == (2.0, 2.0)
    assert (first["test_files"], first["test_count"], first["duplication"]) == (0, 0, 0.0)
    assert (first["churn_added"], first["churn_deleted"], first["churn_files"]) == (8, 0, 2)
    assert (second["test_files"], second["test_count"], second["test_lines"]) == (1, 2, 5)
    assert second["lines"] == first["lines"] and second["churn_files"] == 1
    assert third["functions"] == 3 and third["max_complexity"] == 4.0
    assert third["mean_complexity"] == pytest.approx(10 / 3)
    # 21 kept lines make 16 windows of 6; the 7-line block holds 2, each met twice.
    assert third["duplication"] == 4 / 16
    assert third["coverage"] is None


def test_lint_warnings_are_counted_with_ruff_or_left_unmeasured(repo: Path) -> None:
    linted = [s["lint_warnings"] for s in backfill(repo)]
    if find_ruff() is None:
        assert linted == [None] * 3
    else:
        assert linted == [1, 1, 1]  # app.py's unused import, F401
    assert [s["lint_warnings"] for s in backfill(repo, lint=False)] == [None] * 3


def test_every_snapshot_passes_the_rules_and_fits_the_schema(repo: Path) -> None:
    codec = Codec()
    for snapshot in backfill(repo, "acme/shop"):
        assert snapshot_problems(snapshot, snapshot["event_time"], 0) == []
        assert codec.decode(codec.encode("code_quality_snapshot", snapshot))[1] == snapshot


def test_the_newest_commits_and_a_progress_report(repo: Path) -> None:
    seen: list[tuple[int, int]] = []
    snapshots = list(backfill(repo, max_commits=2, progress=lambda d, t, s: seen.append((d, t))))
    assert len(snapshots) == 2 and snapshots[0]["test_count"] == 2
    assert seen == [(1, 2), (2, 2)]
    since = history(repo, since="@1700050000")
    assert [c.time_ms for c in since] == [1_700_086_400_000, 1_700_172_800_000]


def test_a_folder_that_is_not_a_repository_says_so(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository"):
        backfill(tmp_path)  # at the call, before any snapshot is asked for


@pytest.mark.parametrize(
    ("path", "test"),
    [("tests/test_a.py", True), ("pkg/test/x.py", True), ("a_test.py", True),
     ("conftest.py", True), ("src/testing.py", False), ("src/app.py", False)],
)  # fmt: skip
def test_tests_are_known_by_place_and_name(path: str, test: bool) -> None:
    assert is_test(path) is test
