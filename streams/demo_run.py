"""What a running ``foresight demo`` tells ``foresight status``: its worker's port and group,
and its ingest's port.

The demo's worker has a consumer group and a web port of its own (``foresight-demo-<n>``, a
free port), and so has the ingest this machine's Prometheus writes to, so ``foresight status``
looking at the configured ones would call them stopped, and report the lag of a group nobody
reads with, while the demo runs. The demo
writes this small file into the stack folder while it runs and removes it after; a file left
by a demo that was killed names a process that is gone, and is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "demo-run.json"


@dataclass(frozen=True)
class DemoRun:
    """A running demo: its process, its worker's web port and consumer group, and its
    ingest's port (None while it has none: it starts after the worker, or not at all).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> DemoRun(os.getpid(), 41234, "foresight-demo-1").write(folder)
    >>> DemoRun.read(folder)  # doctest: +ELLIPSIS
    DemoRun(pid=..., worker_port=41234, worker_group='foresight-demo-1', ingest_port=None)
    >>> DemoRun.remove(folder); DemoRun.read(folder) is None
    True
    """

    pid: int
    worker_port: int
    worker_group: str
    ingest_port: int | None = None

    def write(self, stack_dir: str | Path) -> None:
        path = Path(stack_dir) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))

    @staticmethod
    def remove(stack_dir: str | Path) -> None:
        (Path(stack_dir) / FILE).unlink(missing_ok=True)

    @staticmethod
    def read(stack_dir: str | Path) -> DemoRun | None:
        """The demo running now, or None: no file, one that does not parse, or one whose
        process is gone."""
        try:
            run = DemoRun(**json.loads((Path(stack_dir) / FILE).read_text()))
            os.kill(run.pid, 0)  # signal 0: is it alive? (raises when it is not)
        except (OSError, ValueError, TypeError):
            return None
        return run
