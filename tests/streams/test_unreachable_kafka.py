"""A command started with no Kafka says so in one line and exits 1: no traceback, and no
finaliser's "Unclosed AIOKafkaProducer" after the reason.

Run as a user runs them, in a process of their own, with KAFKA_BOOTSTRAP_SERVERS where
nothing listens and every server's port free.
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


@pytest.mark.parametrize(
    "command",
    [["simulate", "--duration", "60"], ["ingest"], ["gateway"], ["api"], ["quality", "run"]],
    ids=lambda command: command[0],
)
def test_a_command_without_kafka_says_so_in_one_line(command: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": NOWHERE,
        "FORESIGHT_STACK_DIR": str(tmp_path / "stack"),
        "FORESIGHT_CHDB_PATH": str(tmp_path / "chdb"),
        "FORESIGHT_CONFIG": "",
        **{name: str(free_port()) for name in PORTS},
    }
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    reason = (
        f"nothing answers as Kafka at {NOWHERE} (PLAINTEXT) ([Errno 111] Connect call failed "
        "('127.0.0.1', 1)); is Kafka up (foresight stack status)?"
    )
    name = " ".join(word for word in command if word.isalpha())
    said = rf"^foresight {name}: (cannot start: |cannot go on: )?{re.escape(reason)}"
    assert re.search(said, done.stderr, re.MULTILINE), done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr, done.stderr
