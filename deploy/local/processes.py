"""Child processes of a run: one program in its own process group, logging to a file.

The demo, the benchmarks and the integration tests start Foresight's commands this way
(:class:`streams.worker_process.ForesightProcess`), and the real clients beside them
(node_exporter, Prometheus, Alertmanager: :mod:`deploy.local.host_telemetry`), each on a
free port.

A child lives no longer than the run that started it. Its own process group keeps a Ctrl-C
at the terminal from reaching it before the run stops it in order; but a run that is killed
(SIGKILL, the OOM killer, a SIGTERM with no handler) cannot stop anything, and its workers
would go on consuming, in the group of the next run on the same Kafka. So on Linux each child
starts under ``setpriv --pdeathsig TERM``: the kernel sends it SIGTERM (a graceful stop) when
the thread that started it ends. Children started from another thread than the main one, or
where there is no ``setpriv`` (util-linux), start without it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Self


def free_port(beside: int = 0) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now; with ``beside``, one whose
    ``port + beside`` is free too (a Kafka broker's controller listens there)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not beside:
            return port
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + beside))
            except OSError:
                continue
        return port


class ChildProcess:
    """``argv`` in its own process group, its output appended to ``log``; ``env`` adds to
    this process's environment."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                _dies_with_parent(self.argv),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL after 30 s."""
        if not self.alive():
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill9()


def _dies_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when the calling thread ends (see the module doc).

    The kernel ties the signal to the thread that forks, not the process: a child started
    from a worker thread would be stopped when that thread ends, so only the main thread's
    children get it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]
