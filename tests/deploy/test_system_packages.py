"""A fresh machine: `make test` and `make demo` install their own system packages, CI adds none.

``deploy/local/system-packages`` is the one installer (the Makefile and the local stack call
it); ``.ci/run`` is the README's test command and nothing else, so every CI run checks that
`make test` works on a machine where nothing was installed by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.local.stack import SYSTEM_PACKAGES, LocalStack, StackError, endpoints

_MAKE_ENVIRONMENT = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
ROOT = Path(__file__).resolve().parents[2]
STACK_NEEDS = {"python3.11", "python3.11-venv", "java", "javac", "mvn", "redis-server"}
REAL_CLIENTS = {"prometheus-node-exporter", "prometheus", "promtool", "prometheus-alertmanager"}
EVERY_NEED = STACK_NEEDS | {"chromium", "kcat"} | REAL_CLIENTS


def _commands(script: Path) -> list[str]:
    """The script's command lines: no comments, no blank lines, no shebang."""
    lines = (line.strip() for line in script.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _system_packages(*needs: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(SYSTEM_PACKAGES), *needs],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(path)},
        check=False,
    )


def _bin_with(tmp_path: Path, *commands: str) -> Path:
    """A PATH folder holding bash and a stub executable for each of ``commands``."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    for command in commands:
        (folder / command).write_text("#!/bin/sh\nexit 0\n")
        (folder / command).chmod(0o755)
    return folder


def test_ci_runs_make_test_and_installs_nothing_itself() -> None:
    commands = _commands(ROOT / ".ci" / "run")
    installers = re.compile(r"\b(apt|apt-get|dpkg|pip|pip3|curl|wget|system-packages)\b")
    assert not [c for c in commands if installers.search(c)], commands
    assert commands[-1] == "make test"
    others = [c for c in commands[:-1] if not c.startswith(("set ", "cd ", "trap "))]
    assert others == [], f".ci/run does more than the README's `make test`: {others}"


@pytest.mark.parametrize(
    ("target", "needs"),
    [
        ("test", EVERY_NEED),
        ("demo", STACK_NEEDS),
        ("install", {"python3.11", "python3.11-venv"}),
    ],
)
def test_make_targets_install_their_system_packages_first(target: str, needs: set[str]) -> None:
    # Run as a user would, not as a sub-make: `make test` runs this test, and a nested make
    # reads its parent's flags and announces the directory it enters.
    outside = {k: v for k, v in os.environ.items() if k not in _MAKE_ENVIRONMENT}
    dry_run = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True,
        env=outside,
    ).stdout.splitlines()  # fmt: skip
    first = dry_run[0].split()
    assert first[0] == "deploy/local/system-packages", dry_run[:3]
    assert set(first[1:]) == needs


def test_every_need_has_a_package_and_a_reason() -> None:
    listed = subprocess.run(
        [str(SYSTEM_PACKAGES), "--list"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rows = [line.split(maxsplit=2) for line in listed]
    assert {need for need, _, _ in rows} == EVERY_NEED
    assert all(package and reason for _, package, reason in rows)


def test_present_needs_install_nothing_and_say_nothing(tmp_path: Path) -> None:
    result = _system_packages("java", "mvn", path=_bin_with(tmp_path, "java", "mvn"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_without_apt_it_names_each_missing_package_and_why(tmp_path: Path) -> None:
    result = _system_packages("java", "mvn", "chromium", path=_bin_with(tmp_path, "java"))
    assert result.returncode == 1
    assert "maven (resolves the Kafka jars" in result.stderr
    assert "chromium (the live page's browser test)" in result.stderr
    assert "openjdk" not in result.stderr  # java is there
    assert "sudo apt-get install maven chromium" in result.stderr


def test_an_unknown_need_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    result = _system_packages("kafka", path=_bin_with(tmp_path))
    assert result.returncode == 2
    assert "unknown need 'kafka'" in result.stderr
    assert "redis-server" in result.stderr


def test_the_stack_installs_through_the_same_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(_bin_with(tmp_path, "java")))
    where = endpoints("127.0.0.1:9092", "http://127.0.0.1:8083", "redis://127.0.0.1:6379/0", "", "")
    stack = LocalStack(tmp_path / "stack", where, progress=lambda line: None)
    with pytest.raises(StackError, match=r"maven \(resolves the Kafka jars"):
        stack.classpath()


def test_two_needs_of_one_package_name_it_once(tmp_path: Path) -> None:
    result = _system_packages("prometheus", "promtool", path=_bin_with(tmp_path))
    assert result.returncode == 1
    assert "sudo apt-get install prometheus` (or your system's equivalent)" in result.stderr
    assert result.stderr.count("  prometheus (") == 1
