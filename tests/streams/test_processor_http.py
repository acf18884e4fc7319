"""The life every processor serving only /health and /metrics shares (`foresight quality run`,
`foresight retrain`): a loop that fails leaves the process up, its /health answering 503 with
the reason, until SIGTERM, then 1; a loop that cannot start raises; a port taken is 1."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.processes import free_port
from streams.processor_http import Processor, serve
from streams.settings import Settings


class Loop:
    """A processor's loop that fails at once: ``crashed`` says why when ``started``."""

    def __init__(self, started: bool) -> None:
        self.started = started
        self.crashed = ""

    async def run(self, stop: asyncio.Event) -> None:
        if self.started:
            self.crashed = "KafkaError: the fetch failed"
        raise RuntimeError("the fetch failed")

    def health(self) -> dict[str, Any]:
        return {"status": "crashed" if self.crashed else "ok", "crashed": self.crashed or None}

    def processor(self, port: int) -> Processor:
        return Processor(
            "foresight test", "test", "FORESIGHT_TEST_PORT", port, self.health, self.run,
            lambda: self.crashed,
        )  # fmt: skip


def _settings(tmp_path: Path) -> Settings:
    return Settings(keys_file=str(tmp_path / "keys.json"), bind_host="127.0.0.1")


async def test_a_failed_loop_serves_503_until_sigterm_then_exits_1(tmp_path: Path) -> None:
    loop, port = Loop(started=True), free_port()
    serving = asyncio.create_task(serve(loop.processor(port), _settings(tmp_path), "testing"))
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while True:
            try:
                reply = await client.get("/health")
                if reply.status_code == 503:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and not serving.done(), "no 503 on /health"
            await asyncio.sleep(0.05)
    assert reply.json()["crashed"] == "KafkaError: the fetch failed"
    assert not serving.done()  # up until stopped
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(serving, 30) == 1


async def test_a_loop_that_cannot_start_raises(tmp_path: Path) -> None:
    loop = Loop(started=False)
    with pytest.raises(RuntimeError, match="the fetch failed"):
        await serve(loop.processor(free_port()), _settings(tmp_path), "testing")


async def test_a_port_taken_is_said_with_its_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert await serve(Loop(started=True).processor(port), _settings(tmp_path), "x") == 1
    assert "Set FORESIGHT_TEST_PORT to a free port" in capsys.readouterr().err
