"""`stack up` is idempotent and `stack down` stops exactly what it started.

Runs a second, throw-away stack on other ports in a temporary folder, so the session's stack
used by the other integration tests is untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
        kafka_bootstrap_servers="127.0.0.1:29092",
        kafka_connect_url="http://127.0.0.1:28083",
        feature_store_url="redis://127.0.0.1:26379/0",
        stack_dir=str(tmp_path / "stack"),
        chdb_path=str(tmp_path / "stack" / "chdb"),
    )
    stack = local_stack(settings, quiet=True)
    first = stack.up(timeout=180)
    assert all(s.healthy for s in first), first
    pids = dict(stack.managed_pids())
    assert set(pids) == {"kafka", "connect", "redis"}

    again = stack.up(timeout=60)
    assert all(s.healthy for s in again)
    assert dict(stack.managed_pids()) == pids, "a second `up` must not start anything new"

    assert sorted(stack.down(wipe=True)) == ["connect", "kafka", "redis"]
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert not any(s.healthy for s in stack.status() if s.name != "clickhouse")
    assert not (tmp_path / "stack" / "kafka").exists()
