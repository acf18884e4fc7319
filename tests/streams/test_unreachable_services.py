"""A command started with no Kafka, or no ClickHouse at CLICKHOUSE_URL, says so in one line
and exits 1: no traceback, no finaliser's "Unclosed AIOKafkaProducer" and no HTTP client's
retries after the reason, and no password from the URL.

Run as a user runs them, in a process of their own, with the service's address where nothing
listens and every server's port free.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.processes import free_port

NOWHERE = "127.0.0.1:1"
PORTS = (
    "FORESIGHT_API_PORT",
    "FORESIGHT_GATEWAY_PORT",
    "FORESIGHT_INGEST_PORT",
    "FORESIGHT_RETRAIN_PORT",
    "FORESIGHT_QUALITY_PORT",
)


def _run(command: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *command],
        env={
            **os.environ,
            "FORESIGHT_STACK_DIR": str(tmp_path / "stack"),
            "FORESIGHT_CHDB_PATH": str(tmp_path / "chdb"),
            "FORESIGHT_CONFIG": "",
            **{name: str(free_port()) for name in PORTS},
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [["simulate", "--duration", "60"], ["ingest"], ["gateway"], ["api"], ["quality", "run"]],
    ids=lambda command: command[0],
)
def test_a_command_without_kafka_says_so_in_one_line(command: list[str], tmp_path: Path) -> None:
    done = _run(command, tmp_path, KAFKA_BOOTSTRAP_SERVERS=NOWHERE)
    assert done.returncode == 1, done.stderr
    reason = (
        f"nothing answers as Kafka at {NOWHERE} (PLAINTEXT) ([Errno 111] Connect call failed "
        "('127.0.0.1', 1)); is Kafka up (foresight stack status)?"
    )
    name = " ".join(word for word in command if word.isalpha())
    said = rf"^foresight {name}: (cannot start: |cannot go on: )?{re.escape(reason)}"
    assert re.search(said, done.stderr, re.MULTILINE), done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["sql", "SELECT 1"],
        ["train", "failure_risk", "--since", "2026-12-01", "--until", "2026-12-02"],
    ],
    ids=lambda command: command[0],
)
def test_a_command_without_its_clickhouse_server_says_so_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    done = _run(command, tmp_path, CLICKHOUSE_URL="http://ada:s3cret@127.0.0.1:1/telemetry")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].endswith(
        "nothing answers as ClickHouse at http://127.0.0.1:1/telemetry ([Errno 111] Connection "
        "refused); check CLICKHOUSE_URL"
    ), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "s3cret" not in done.stderr
