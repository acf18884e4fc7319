"""Waiting for a processor started as a process of its own (:class:`ServingProcess`) to say
on /health that it is ready and has read its partition to a given offset."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streams.worker_process import ServingProcess


async def ready(
    process: ServingProcess, consumed: int = -1, timeout_s: float = 60
) -> dict[str, Any]:
    """The process's /health once it says ready (200: ``ok`` or ``degraded``) and has
    consumed its one partition up to offset ``consumed`` (its outputs, counted, before that)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.alive(), (
            f"`foresight {' '.join(process.argv[3:])}` exited; see {process.log}"
        )
        health = await asyncio.to_thread(process.health)
        if health is not None and health["status"] in ("ok", "degraded"):
            (offset,) = health["consumed"].values()
            if offset >= consumed:
                return health
        assert time.monotonic() < deadline, f"not ready in {timeout_s:.0f} s: {health}"
        await asyncio.sleep(0.2)
