"""What the worker's /health knows of its agents."""

from __future__ import annotations

import pytest

from streams.app import WorkerHealth


def test_a_crashed_agent_is_unhealthy_until_it_does_good_work_again() -> None:
    health = WorkerHealth()
    with pytest.raises(RuntimeError), health.running("metrics"):
        raise RuntimeError("broker gone")
    assert health.crashed == {"metrics": "RuntimeError: broker gone"}
    with health.running("labels"):
        pass
    assert "metrics" in health.crashed
    with health.running("metrics"):
        pass
    assert health.crashed == {}
