"""The live page in a real headless Chromium, driven over the Chrome DevTools Protocol.

Needs Debian's ``chromium`` (``apt-get install -y chromium``); no Selenium or Playwright.
A PredictionBatch produced to Kafka must show up on the page with its entity and value; the
chart opens on the recent past and the near forecast, and the horizon picker widens it; an
entity with a firing CRITICAL alert is marked critical and listed first.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from schemas.predictions import PredictionColumns
from streams.settings import Settings
from tests.connectors.test_gateway import KEY, alert, prediction, running_gateway

pytestmark = pytest.mark.integration

SCREENSHOT = Path("/tmp/foresight-live.png")


@contextmanager
def chromium() -> Iterator[int]:
    """A headless Chromium with remote debugging; yields its DevTools port."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("no chromium on PATH: install it with `apt-get install -y chromium`")
    # Chromium's helper processes may still write to the profile as the browser exits.
    with tempfile.TemporaryDirectory(
        prefix="foresight-chromium-", ignore_cleanup_errors=True
    ) as profile:
        process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1440,900",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (active.exists() and active.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chromium did not open its DevTools port (exit {process.poll()})")
                time.sleep(0.05)
            yield int(active.read_text().splitlines()[0])
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class DevTools:
    """The few CDP calls the test needs, on one page target."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            reply = json.loads(await self._ws.recv())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 30) -> Any:
        """Evaluate ``expression`` until it is truthy; fail with what the page shows."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        body = await self.evaluate("document.body.innerText")
        pytest.fail(f"page never satisfied {expression!r}; it shows:\n{body}")


@asynccontextmanager
async def page(devtools_port: int) -> AsyncIterator[DevTools]:
    def targets() -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list") as response:
            loaded: list[dict[str, Any]] = json.load(response)
            return loaded

    pages = [t for t in await asyncio.to_thread(targets) if t["type"] == "page"]
    async with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
        yield DevTools(ws)


MINUTE = 60_000
LISTED = "[...document.querySelectorAll('#entity-list li')]"


def _explained(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` again, columnar, with a failure risk and what drove it."""
    columns = PredictionColumns()
    for p in batch["predictions"]:
        columns.add(p["kind"], (p["model"], p["model_version"]), [p["metric"]], [p["horizon_s"]],
                    [p["value"]], [p["score"]])  # fmt: skip
    at = columns.add("FAILURE_RISK", ("failure_risk", "2"), ["entity"], [1800], [0.8], [0.8])
    columns.explain(at, [("memory_percent:15m:slope", 0.31), ("cpu_percent", -0.05)])
    return {**batch, **columns.record()}


CHART_RANGE = "['from', 'to'].map(k => Number(document.getElementById('value-chart').dataset[k]))"


async def test_a_produced_prediction_appears_on_the_live_page(
    stack_settings: Settings, unique: str
) -> None:
    entity, calm, warned = f"web-{unique}", f"aaa-{unique}", f"mid-{unique}"
    async with running_gateway(stack_settings, unique) as (gateway, produce):
        with chromium() as devtools_port:
            async with page(devtools_port) as browser:
                url = f"http://127.0.0.1:{gateway.port}/?api_key={KEY}&entity={entity}"
                await browser.call("Page.enable")
                await browser.call("Page.navigate", url=url)
                await browser.wait_for("document.getElementById('status').textContent === 'live'")
                await produce("alert", alert(entity, "CRITICAL", labels={"region": "eu"}))
                await produce("alert", alert(warned, "WARNING"))
                await produce("prediction_batch", prediction(calm))
                for step in range(6):  # a short history, so the chart has lines to draw
                    batch = prediction(entity, value=70.0 + step * 0.65)
                    batch["event_time"] += step * 10_000
                    await produce("prediction_batch", batch)
                now = batch["event_time"]
                await produce("prediction_batch", _explained(batch))
                shown = await browser.wait_for(
                    f"{LISTED}.some(li => li.dataset.entity === {json.dumps(calm)})"
                    " && document.getElementById('prediction-rows').innerText.includes('73.25')"
                    " && document.getElementById('prediction-rows').innerText.includes("
                    "'memory_percent slope over 15 m +0.31, cpu_percent -0.05')"
                    " && document.getElementById('entity-title').textContent"
                    " && document.getElementById('firing-list').innerText"
                )
                assert entity in shown
                listed = await browser.evaluate(
                    f"{LISTED}.map(li => [li.dataset.entity, li.dataset.severity,"
                    " (li.querySelector('.severity-marker') || {}).textContent || ''])"
                )
                opened_on = await browser.evaluate(CHART_RANGE)
                shot = await browser.call("Page.captureScreenshot", format="png")
                await asyncio.to_thread(SCREENSHOT.write_bytes, base64.b64decode(shot["data"]))
                await browser.evaluate(
                    """document.querySelector('#horizon [data-view="1h"]').click()"""
                )
                widened = await browser.wait_for(
                    f"(r => r[1] === {now + 60 * MINUTE} && r)({CHART_RANGE})"
                )
                await browser.evaluate(
                    "(s => { s.value = 'CRITICAL'; s.dispatchEvent(new Event('change')); })"
                    "(document.getElementById('severity-filter'))"
                )
                critical_only = await browser.evaluate(f"{LISTED}.map(li => li.dataset.entity)")

    # The worst firing severity first, whatever the names; entities without alerts after.
    assert listed[:2] == [[entity, "CRITICAL", "critical"], [warned, "WARNING", "warning"]]
    assert [calm, "none", ""] in listed
    assert critical_only == [entity]
    # The chart opens on the last 15 minutes and the 5 minutes ahead, not the 24 h forecast.
    assert opened_on == [now - 15 * MINUTE, now + 5 * MINUTE]
    assert widened == [now - 60 * MINUTE, now + 60 * MINUTE]
