"""Every ``foresight bench`` benchmark completes a tiny run and prints its ``--json`` result.

Each runs as a user runs it, ``foresight bench NAME ... --json`` in its own process, so a
benchmark whose spawned processes cannot import it (as under ``runpy``) fails here. All but
early-warning, online-failure, agent-failures, routing, engine, entity-anomaly, workflows,
quality and decode need the local stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.commands.bench import BENCHMARKS
from streams.settings import Settings

FORESIGHT = Path(sys.executable).parent / "foresight"
TINY = {
    "early-warning": ["--seeds", "1", "--hosts", "2", "--duration-s", "900", "--quiet-s", "300"],
    "routing": ["--seeds", "1", "--agents", "3", "--duration-s", "600"],
    "online-failure": ["--seeds", "1", "--hosts", "3", "--hours", "2"],
    "agent-failures": ["--seeds", "1", "--hours", "2", "--burst-min", "10"],
    "redis-read": ["--entities", "10", "--reads", "50", "--concurrency", "4"],
    "clickhouse-sink": ["--records", "200", "--samples", "10", "--partitions", "1"],
    "gateway": ["--clients", "8", "--slow-clients", "1", "--rate", "50", "--seconds", "2"],
    "auth-flood": [
        *("--server", "ingest", "--probes", "20", "--concurrency", "4"),
        *("--flood-seconds", "2", "--flood-requests", "400"),
    ],
    "engine": ["--entities", "5", "--metrics", "4", "--seconds", "30", "--warmup-s", "10"],
    "ensemble": ["--seeds", "1", "--hosts", "3", "--hours", "2", "--folds", "2"],
    "entity-anomaly": [
        *("--tune", "0", "--seeds", "1", "--hosts", "3"),
        *("--duration-s", "14400", "--warmup-s", "3600"),
    ],
    "api": [
        *("--entities", "20", "--rate", "20", "--seconds", "1"),
        *("--batch-size", "10", "--batch-concurrency", "2"),
    ],
    "workflows": ["--seeds", "1", "--workflows", "400", "--warmup", "100"],
    "quality": ["--max-commits", "30", "--no-lint"],
    "decode": ["--samples", "4", "--metrics", "2", "--records", "20", "--repeats", "1"],
    "pipeline": [
        *("--entities", "20", "--metrics", "5", "--records", "400"),
        *("--rates", "200", "--fixed-metrics", "5", "--seconds", "2", "--warmup-s", "1"),
    ],
}


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def bench(name: str, *extra: str) -> dict[str, Any]:
    """``foresight bench NAME`` with its tiny options (and ``extra``) and ``--json``; its
    parsed stdout."""
    run = subprocess.run(
        [str(FORESIGHT), "bench", name, *TINY[name], *extra, "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, f"exit {run.returncode}:\n{run.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(run.stdout, parse_constant=_refuse)
    return result


def test_every_benchmark_has_a_tiny_run_here() -> None:
    assert set(TINY) == set(BENCHMARKS)


def test_early_warning() -> None:
    result = bench("early-warning")
    assert result["seeds"] == 1
    assert 0.0 <= result["warned_share"] <= 1.0


def test_online_failure() -> None:
    result = bench("online-failure")
    (run,) = result["runs"]
    assert run["failures"] == 4  # a memory leak and a disk fill each simulated hour
    assert 0.0 < run["positive_share"] < 1.0 and 0.0 <= run["auc_pr"] <= 1.0
    for key in ("brier", "healthy_median", "healthy_max", "drifter_median"):
        assert 0.0 <= run[key] <= 1.0, key
    assert result["median"]["before_failure_median"] == run["before_failure_median"]


def test_agent_failures() -> None:
    result = bench("agent-failures")
    assert [(r["burst_min"], r["rule"]) for r in result["results"]] == [
        (10.0, "agent_failures"), (10.0, "recent_rate_40")
    ]  # fmt: skip
    for r in result["results"]:
        assert r["bursts"] == 2 and 0 <= r["caught"] <= 2 and r["false_alarms"] >= 0


def test_routing() -> None:
    result = bench("routing")
    assert (result["seeds"], result["agents"]) == (1, 3)
    policies = result["policies"]
    assert set(policies) == {
        "random", "round-robin", "greedy", "river-ts", "learned", "learned-fifo", "oracle"
    }  # fmt: skip
    assert policies["oracle"]["regret_s"] == 0.0
    assert all(p["mean_s"] > 0 for p in policies.values())
    assert result["decision_us"]["decisions"] > 0
    assert set(result["goals"]) == {"mean_vs_round_robin", "regret_vs_random", "shift_off_degraded"}


def test_engine() -> None:
    result = bench("engine")
    assert result["measured"]["records"] == 5 * 20
    assert result["series"] == 5 * 4
    assert result["measured"]["predictions"] > 0
    assert result["state_bytes_per_series"] > 0
    held = result["memory"]
    assert 0 < held["model_states"] <= held["model_states_allocated"] and held["windows"] > 0
    assert result["memory_bytes_per_series"] > 0 and result["rss_after_warmup_bytes"] > 0


def test_engine_serving_a_failure_model() -> None:
    result = bench("engine", "--failure-model")
    assert result["setup"]["failure_model"] is True
    assert result["measured"]["predictions"] > 0


def test_ensemble() -> None:
    result = bench("ensemble")
    assert result["setup"]["seeds"] == 1 and result["rows"] > 0
    assert {c["fold"] for c in result["cells"]} == {1, 2}
    for cell in result["cells"]:
        assert set(cell) >= {"xgboost", "mlp", "ensemble"}
        assert 0.0 <= cell["ensemble"]["brier"] <= 1.0


def test_entity_anomaly() -> None:
    result = bench("entity-anomaly")
    assert (result["tune_seeds"], result["seeds"], result["hosts"]) == ([0], [1], 3)
    for label in ("contenders", "with_awkward_metrics"):
        contenders = result[label]
        assert set(contenders) == {"entity", "entity_independent", "max_per_metric", "rolling_z"}
        for r in contenders.values():
            assert 0.0 <= r["auc_pr"] <= 1.0
            assert 0 <= r["caught"] <= r["incidents"] > 0
    small = result["small_hosts"]
    assert {r["should_alert"] for r in small.values()} == {True, False}
    for r in small.values():
        assert len(r["alerts"]) == len(r["minutes_at_threshold"]) == 1
        assert 0 <= r["minutes_at_threshold"][0] <= 60


def test_quality() -> None:
    result = bench("quality")
    (repository,) = result["repositories"]
    assert repository["commits"] == 30 and repository["processor_snapshots_per_s"] > 0
    assert set(repository["forecasters"]) == {"commit", "seasonal"}
    one_ahead = repository["forecasters"]["commit"]["1"]
    assert one_ahead["metrics"] > 0 and 0.0 <= one_ahead["coverage"] <= 1.0


def test_decode() -> None:
    result = bench("decode")
    assert set(result["records"]) == {
        "metric_batch_4",
        "prediction_batch_latest",
        "prediction_batch_forecast",
        "feature_vector",
    }
    for measured in result["records"].values():
        assert set(measured["us_per_record"]) == {"fastavro", "compiled", "codec"}
        assert min(measured["us_per_record"].values()) > 0


@pytest.mark.integration
def test_redis_read(stack_settings: Settings) -> None:
    result = bench("redis-read")
    assert (result["entities"], result["reads"]) == (10, 50)
    assert result["sequential"]["reads_per_s"] > 0
    assert result["concurrent_4"]["reads_per_s"] > 0


@pytest.mark.integration
def test_clickhouse_sink(stack_settings: Settings) -> None:
    result = bench("clickhouse-sink")
    assert result["rows"] == 2000
    assert result["sink_rows_per_s"] > 0
    assert result["raw_insert_rows_per_s"] > 0


@pytest.mark.integration
def test_gateway(stack_settings: Settings) -> None:
    result = bench("gateway")
    assert result["connected"] == 9
    assert result["produced"] > 0
    assert result["delivered"] > 0


@pytest.mark.integration
def test_pipeline(stack_settings: Settings) -> None:
    result = bench("pipeline")
    assert result["raw_passthrough"]["records"] == 400
    assert result["pipeline_max"]["complete"] is True
    assert [r["rate_samples_per_s"] for r in result["fixed_rates"]] == [200.0]


@pytest.mark.integration
def test_auth_flood(stack_settings: Settings) -> None:
    result = bench("auth-flood")
    assert result["server"] == "ingest"
    assert result["flood"]["requests"] > 0
    assert set(result["flood"]["statuses"]) <= {"401", "429"}
    assert result["quiet"]["p50_ms"] > 0


@pytest.mark.integration
def test_api(stack_settings: Settings) -> None:
    result = bench("api")
    single, batch = result["single"], result["batch"]
    assert (single["requests"], single["n"], single["errors"]) == (20, 20, {})
    assert single["p50_ms"] > 0
    assert batch["requests"] > 0 and batch["errors"] == {}
    assert batch["entities_per_s"] > 0 and batch["predictions_per_s"] > batch["entities_per_s"]
    assert set(result["goals"]) == {"single_p95_ms", "single_p99_ms", "batch_predictions_per_s"}


def test_workflows() -> None:
    result = bench("workflows")
    assert (result["seeds"], result["workflows_per_seed"]) == (1, 400)
    assert set(result["patterns"]) == {
        "workflow_rare_path", "workflow_loop", "workflow_stall", "workflow_precursor"
    }  # fmt: skip
    for row in result["patterns"].values():
        assert row["precision"] is None or 0.0 <= row["precision"] <= 1.0
        assert row["found"] <= row["injected"]
