"""`stack up` is idempotent and `stack down` stops exactly what it started.

Runs a second, throw-away stack on other ports in a temporary folder, so the session's stack
used by the other integration tests is untouched.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from deploy.local.processes import free_port
from deploy.local.stack import CONTROLLER_PORT_OFFSET, StackError
from streams.commands.stack import local_stack
from streams.settings import load_settings

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_twice_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    settings = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port(beside=CONTROLLER_PORT_OFFSET)}",
        kafka_connect_url=f"http://127.0.0.1:{free_port()}",
        feature_store_url=f"redis://127.0.0.1:{free_port()}/0",
        schema_registry_port=free_port(),
        stack_dir=str(tmp_path / "stack"),
        chdb_path=str(tmp_path / "stack" / "chdb"),
    )
    stack = local_stack(settings, quiet=True)
    try:
        first = stack.up(timeout=180)
        assert all(s.healthy for s in first), first
        pids = dict(stack.managed_pids())
        assert set(pids) == {"kafka", "connect", "schema-registry", "redis"}

        again = stack.up(timeout=60)
        assert all(s.healthy for s in again)
        assert dict(stack.managed_pids()) == pids, "a second `up` must not start anything new"
    finally:  # whatever failed, this test leaves no process behind
        stopped = stack.down(wipe=True)
    assert sorted(stopped) == ["connect", "kafka", "redis", "schema-registry"]
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert not any(s.healthy for s in stack.status() if s.name != "clickhouse")
    assert not (tmp_path / "stack" / "kafka").exists()
    assert not (tmp_path / "stack" / "schema-registry").exists()


def test_a_kafka_that_cannot_start_fails_up_at_once_with_its_log(tmp_path: Path) -> None:
    """Its controller port taken, the broker exits at start: ``up`` says so with the end of
    Kafka's log as soon as the process is gone, not after waiting out its timeout."""
    port = free_port(beside=CONTROLLER_PORT_OFFSET)
    settings = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        stack_dir=str(tmp_path / "stack"),
        chdb_path=str(tmp_path / "stack" / "chdb"),
    )
    stack = local_stack(settings, quiet=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + CONTROLLER_PORT_OFFSET))
        taken.listen()
        started = time.monotonic()
        try:
            with pytest.raises(StackError, match="Kafka exited before it answered") as error:
                stack.up(timeout=600, services=("kafka",))
        finally:
            stack.down(wipe=True)
    assert time.monotonic() - started < 300, "up waited for the timeout, not for the exit"
    assert "Address already in use" in str(error.value), str(error.value)
