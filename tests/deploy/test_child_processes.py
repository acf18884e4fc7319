"""A run's child processes end with the run, even when the run is killed outright."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deploy.local.processes import ChildProcess

# The parent-death signal is Linux's; elsewhere children start without it.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux's prctl(PR_SET_PDEATHSIG)")


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` has ended, or ends within ``timeout_s`` (looked at least once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # ended; its parent (init now) has yet to reap it
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_child_gets_sigterm_when_the_run_that_started_it_is_killed(tmp_path: Path) -> None:
    # The run: starts a child that writes its pid and notes the SIGTERM it gets, then waits.
    child = textwrap.dedent(
        f"""
        import os, signal, sys, time
        def stopped(*_):
            open({str(tmp_path / "stopped")!r}, "w").write("SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stopped)
        open({str(tmp_path / "child.pid")!r}, "w").write(str(os.getpid()))
        time.sleep(120)
        """
    )
    run = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from deploy.local.processes import ChildProcess
        log = Path({str(tmp_path / "child.log")!r})
        ChildProcess([sys.executable, "-c", {child!r}], log).start()
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", run], cwd=Path(__file__).parents[2])
    pid_file = tmp_path / "child.pid"
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            assert parent.poll() is None, "the run ended before its child started"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(pid, 10), "the child outlived the run that started it"
        assert (tmp_path / "stopped").read_text() == "SIGTERM"
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid_file.exists() and pid_file.read_text() and not _gone(int(pid_file.read_text()), 0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_child_stops_as_asked_and_keeps_its_pid(tmp_path: Path) -> None:
    """The wrapper execs the program: the pid the run holds is the program's own."""
    child = ChildProcess(
        [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
        tmp_path / "child.log",
    ).start()
    assert child.process is not None
    deadline = time.monotonic() + 30
    while not (tmp_path / "child.log").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert int((tmp_path / "child.log").read_text()) == child.process.pid
    child.stop()
    assert not child.alive()
