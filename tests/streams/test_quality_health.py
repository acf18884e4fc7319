"""What the quality processor's /health says, through the HTTP stack every server shares:
503 while it waits for partitions, while the group moves them and once its consumer failed;
200 with each partition's offsets, lag and replay otherwise."""

from __future__ import annotations

from pathlib import Path

from aiokafka import TopicPartition

from schemas.codec import Codec
from streams.quality import QualityRunner
from streams.settings import Settings
from tests.streams.open_health import get_health

TOPIC = "test.quality.health"
TP = TopicPartition(TOPIC, 0)


async def test_health_follows_the_consumer_from_start_to_crash(tmp_path: Path) -> None:
    settings = Settings(keys_file=str(tmp_path / "keys.json"), worker_id="q")
    runner = QualityRunner(settings, Codec(), TOPIC)
    progress = runner.progress
    try:
        code, body = await get_health(runner.health, settings)
        assert (code, body["status"], body["partitions"]) == (503, "starting", 0)

        progress.assigned = {TP}
        progress.replay_until[TP] = 5
        progress.consumed[TP] = 2
        progress.lag[TP] = 7
        code, body = await get_health(runner.health, settings)
        assert (code, body["status"], body["crashed"]) == (200, "ok", None)
        assert body["group"] == "q-quality" and body["topic"] == TOPIC
        assert body["consumed"] == {f"{TOPIC}:0": 2} and body["lag"] == {f"{TOPIC}:0": 7}
        assert body["replaying"] == {f"{TOPIC}:0": 5}  # offsets 3 and 4 are still to replay

        progress.revoked({TP})
        code, body = await get_health(runner.health, settings)
        assert (code, body["status"]) == (503, "rebalancing")

        progress.rebalancing = False
        progress.consumed[TP] = 4
        code, body = await get_health(runner.health, settings)
        assert (code, body["consumed"], body["replaying"]) == (200, {f"{TOPIC}:0": 4}, {})

        runner.redis.failed(ConnectionError("refused"))
        code, body = await get_health(runner.health, settings)
        assert (code, body["status"], set(body["down"])) == (200, "degraded", {"redis"})

        progress.crashed = "KafkaTimeoutError: the producer timed out"
        code, body = await get_health(runner.health, settings)
        assert (code, body["status"]) == (503, "crashed")
        assert body["crashed"] == "KafkaTimeoutError: the producer timed out"
    finally:
        await runner.cache.close()
    assert not (tmp_path / "keys.json").exists()  # open doors only: no keys file is made
