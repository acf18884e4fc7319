"""The worker's Kafka consumer fetches with the wait its settings give, not Faust's 1.5 s (see
``streams.transport``: a busy partition's records waited that long behind a fetch for the
worker's idle topics)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from streams.app import create_app
from streams.settings import Settings
from streams.transport import KafkaTransport


@pytest.mark.parametrize("wait_ms", [None, 7, 1500])
async def test_the_workers_consumer_fetches_with_the_wait_of_its_settings(
    wait_ms: int | None, tmp_path: Path
) -> None:
    settings = Settings(worker_data_dir=str(tmp_path / "data"))
    if wait_ms is not None:
        settings = replace(settings, worker_fetch_wait_ms=wait_ms)
    app = create_app(settings)
    assert isinstance(app.transport, KafkaTransport)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
    assert consumer._fetch_max_wait_ms == settings.worker_fetch_wait_ms
