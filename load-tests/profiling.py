"""A py-spy profile of a running process, for the benchmarks' ``--profile`` options."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path


class Profile:
    """py-spy sampling process ``pid`` into ``path`` (raw collapsed stacks, for flamegraphs
    and ``sort | uniq``) until :meth:`stop`; nothing happens when py-spy is not installed."""

    def __init__(self, pid: int, path: str) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.process: subprocess.Popen[bytes] | None = None
        if not Path(spy).exists():
            print("py-spy is not installed (pip install py-spy): no profile", file=sys.stderr)
            return
        command = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", path]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its file on an interrupt
            self.process.wait()
