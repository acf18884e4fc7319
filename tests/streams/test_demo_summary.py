"""The demo's summary counts predictions, and names the PredictionBatch records apart."""

from __future__ import annotations

import copy

import pytest

from connectors.clickhouse import QueryResult
from models.incident_report import match_alerts, match_workflow_alerts
from schemas.predictions import PredictionColumns
from streams import topics
from streams.commands.demo import (
    Console,
    Observed,
    _machine_summary,
    _observe,
    _print_clickhouse,
    _print_summary,
    _scored,
    _workflow_summary,
)
from tests.schemas.samples import SAMPLES


def test_predictions_are_counted_one_by_one_and_batches_apart() -> None:
    seen = Observed()
    batch = copy.deepcopy(SAMPLES["prediction_batch"])
    PredictionColumns.of(batch).add("ANOMALY", ("d", "1"), ["a", "b"], [0, 0], [1, 2], [0, 0])
    for _ in range(2):
        _observe(topics.PREDICTIONS.name, batch, seen, Console(quiet=True))
    assert seen.prediction_batches == 2
    assert seen.predictions == 2 * 3 > seen.prediction_batches


def test_the_summary_names_both_units(capsys: pytest.CaptureFixture[str]) -> None:
    summary = {
        "simulated_s": 5400.0,
        "wall_s": 63.2,
        "samples_produced": 86_400,
        "metric_batches_processed": 10_806,
        "agent_events_produced": 3_466,
        "prediction_batches": 12_527,
        "predictions": 364_113,
        "entities_predicted": 25,
        "latency_ms_p50": 28.0,
        "latency_ms_p99": 162.0,
        "alerts": 0,
    }
    _print_summary(summary, match_alerts([], []))
    assert "predictions     364,113 in 12,527 batches for 25 entities" in capsys.readouterr().out


def test_this_machine_is_reported_apart_with_its_own_alerts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = Observed(this_machine="vm")
    batch = copy.deepcopy(SAMPLES["prediction_batch"])
    batch["entity"] = "vm"
    columns = PredictionColumns.of(batch)
    columns.add("FAILURE_RISK", ("t", "1"), ["memory_used_fraction"], [0], [1], [0])
    columns.add("ANOMALY", ("d", "1"), ["cpu_used_fraction"], [0], [1], [0])
    _observe(topics.PREDICTIONS.name, batch, seen, Console(quiet=True))
    alert = {
        "entity": "vm",
        "status": "FIRING",
        "starts_at": 1,
        "rule": "failure_risk",
        "alert_id": "failure_risk/vm@1",
        "summary": "vm: filesystem_used_fraction on course to exhaustion",
    }
    seen.alerts.append(alert)
    report = _scored([], seen)
    assert report.false_alarms == []
    machine = _machine_summary(seen)
    assert machine["signals"] == {
        "cpu_percent": ["FORECAST"],  # the sample's own
        "cpu_used_fraction": ["ANOMALY"],
        "memory_used_fraction": ["FAILURE_RISK"],
    }
    assert machine["alerts"] == [alert["summary"]]
    _print_summary(
        {
            "simulated_s": 60.0,
            "wall_s": 1.0,
            "samples_produced": 1,
            "metric_batches_processed": 1,
            "agent_events_produced": 0,
            "prediction_batches": 2,
            "predictions": 2,
            "entities_predicted": 1,
            "latency_ms_p50": 1.0,
            "latency_ms_p99": 1.0,
            "alerts": 1,
            "this_machine": machine,
        },
        report,
    )
    out = capsys.readouterr().out
    assert "this machine    vm: 3 signals" in out
    assert "alert                  vm: filesystem_used_fraction" in out
    assert "0 false alarms" in out and "false alarm " not in out


def _alert(rule: str, entity: str, status: str = "FIRING", summary: str = "") -> dict[str, object]:
    return {"rule": rule, "entity": entity, "status": status, "starts_at": 1,
            "alert_id": f"{rule}/{entity}@{status}", "summary": summary or entity}  # fmt: skip


def test_workflow_alerts_are_scored_against_the_injected_patterns_not_the_incidents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = Observed()
    seen.alerts += [
        _alert("workflow_loop", "wf-42-00007"),  # caught
        _alert("workflow_rare_path", "wf-42-00007"),  # a loop is a rare path too
        _alert("workflow_stall", "wf-42-00009"),  # on a workflow with nothing injected
        _alert("workflow_precursor", "wf-42-00001"),  # during the lead-in: not judged
        _alert("workflow_advice", "release:has:lint", summary="releases with `lint` fail less"),
        _alert("workflow_advice", "release:build>test", summary="retracted"),
        _alert("workflow_advice", "release:build>test", "RESOLVED"),
        _alert("agent_failures", "wf-agent-03"),  # an agent's alert stays an incident matter
    ]
    judged = {"wf-42-00007": "loop", "wf-42-00008": "stall", "wf-42-00009": None}
    report = _scored([], seen)
    assert [a["rule"] for a in report.false_alarms] == ["agent_failures"]
    workflows = _workflow_summary(12, len(judged), match_workflow_alerts(judged, seen.alerts), seen)
    assert workflows["patterns"]["workflow_loop"] == {
        "injected": 1, "caught": 1, "alerted": 1, "false_alarms": 0
    }  # fmt: skip
    assert workflows["patterns"]["workflow_rare_path"]["false_alarms"] == 0
    assert workflows["patterns"]["workflow_stall"] == {
        "injected": 1, "caught": 0, "alerted": 1, "false_alarms": 1
    }  # fmt: skip
    assert workflows["patterns"]["workflow_precursor"]["alerted"] == 0
    assert workflows["advice"] == ["releases with `lint` fail less"]
    summary = {
        "simulated_s": 60.0, "wall_s": 1.0, "samples_produced": 1,
        "metric_batches_processed": 1, "agent_events_produced": 40, "prediction_batches": 2,
        "predictions": 2, "entities_predicted": 1, "latency_ms_p50": 1.0,
        "latency_ms_p99": 1.0, "alerts": len(seen.alerts), "workflows": workflows,
    }  # fmt: skip
    _print_summary(summary, report)
    out = capsys.readouterr().out
    assert "behind " not in out
    assert "workflows       12 started, 3 judged" in out
    assert "workflow_loop          1 of 1 injected caught, 0 false alarms" in out
    assert "workflow_stall         0 of 1 injected caught, 1 false alarms" in out
    assert "advice                 releases with `lint` fail less" in out


def test_a_summary_says_when_the_worker_was_still_behind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = {
        "simulated_s": 60.0, "wall_s": 1.0, "worker_caught_up": False, "samples_produced": 1,
        "metric_batches_processed": 1, "agent_events_produced": 0, "prediction_batches": 0,
        "predictions": 0, "entities_predicted": 0, "latency_ms_p50": 0.0,
        "latency_ms_p99": 0.0, "alerts": 0,
    }  # fmt: skip
    _print_summary(summary, match_alerts([], []))
    assert "behind          the worker had not taken in every record" in capsys.readouterr().out


def test_the_clickhouse_tables_say_when_the_sink_had_not_stored_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tables = {"predictions by kind": QueryResult(["kind", "predictions"], [])}
    _print_clickhouse(tables, 2_000, 18_096)
    out = capsys.readouterr().out
    assert "ClickHouse holds 2,000 of the run's 18,096 prediction batches" in out
    assert "ClickHouse: predictions by kind" in out and "(0 rows)" in out
    _print_clickhouse(tables, 18_096, 18_096)
    assert "holds" not in capsys.readouterr().out
