"""One valid record of every schema, for codec and compatibility tests."""

from __future__ import annotations

from typing import Any

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms

SAMPLES: dict[str, dict[str, Any]] = {
    "metric_batch": {
        "entity": "web-1",
        "event_time": T0,
        "labels": {"region": "eu"},
        "names": ["cpu_percent", "memory_percent"],
        "values": [12.5, 40.0],
        "source": "test",
        "kinds": ["GAUGE", "UNKNOWN"],
        "ended": ['http_requests_total{code="503"}'],
    },
    "agent_event": {
        "agent": "agent-01",
        "task_id": "t-1",
        "task_type": "triage",
        "phase": "FAILED",
        "event_time": T0,
        "duration_ms": 1200.0,
        "cost": 0.3,
        "error_class": "timeout",
        "labels": {},
    },
    "label": {
        "entity": "web-1",
        "kind": "FAILURE",
        "incident_type": "memory_leak",
        "start_time": T0,
        "end_time": None,
        "metric": "memory_percent",
        "description": "OOM",
    },
    "dead_letter": {
        "topic": "telemetry.metrics",
        "partition": 3,
        "offset": 42,
        "key": b"web-1",
        "value": b"\x00garbage",
        "reason": "unknown framing byte",
        "error_kind": "undecodable",
        "event_time": T0,
    },
    "feature_vector": {
        "entity": "web-1",
        "event_time": T0,
        "names": [],
        "values": [float(i) for i in range(44)],
        "feature_set": "abc",
        "metrics": ["cpu_percent"],
    },
    "prediction_batch": {
        "prediction_id": "web-1@1767225600000",
        "entity": "web-1",
        "event_time": T0,
        "emitted_at": T0 + 5,
        "latency_ms": 5.0,
        "predictions": [],
        "metrics": ["cpu_percent"],
        "models": ["seasonal"],
        "model_versions": ["1"],
        "kinds": ["FORECAST"],
        "metric_index": [0],
        "model_index": [0],
        "horizons_s": [300],
        "values": [13.0],
        "scores": [0.1],
        "lowers": [10.0],
        "uppers": [16.0],
    },
    "alert": {
        "dedup_key": "anomaly/web-1",
        "alert_id": "anomaly/web-1@1767225600000",
        "status": "FIRING",
        "severity": "WARNING",
        "rule": "anomaly",
        "entity": "web-1",
        "summary": "cpu anomalous",
        "value": 0.97,
        "labels": {"metric": "cpu_percent"},
        "starts_at": T0,
        "ends_at": None,
        "event_time": T0,
    },
    "routing_decision": {
        "task_type": "triage",
        "task_id": "t-9",
        "agent": "agent-02",
        "expected_duration_ms": 900.0,
        "success_probability": 0.97,
        "alternatives": [
            {"agent": "agent-01", "expected_duration_ms": 1500.0, "success_probability": 0.9}
        ],
        "model": "duration",
        "model_version": "1",
        "event_time": T0,
    },
    "model_update": {
        "model": "failure_risk",
        "version": "3",
        "action": "PROMOTED",
        "stage": "production",
        "uri": "file:///models/failure_risk/3",
        "content_hash": "ab" * 32,
        "feature_hash": "cd",
        "metrics": {"auc": 0.91},
        "event_time": T0,
    },
    "audit_event": {
        "event_id": "0f" * 16,
        "event_time": T0,
        "key_id": "k1a2b3c4d",
        "key_name": "ops",
        "action": "model.promote",
        "target": "failure_risk 3",
        "outcome": "SUCCEEDED",
        "service": "cli",
        "origin": "ada@ops-1",
        "details": {"updates": "ARCHIVED 2, PROMOTED 3"},
        "count": 1,
    },
}


V1_SAMPLES: dict[str, dict[str, Any]] = {
    "feature_vector": {
        "entity": "web-1",
        "event_time": T0,
        "names": [f"cpu_percent:{i}" for i in range(44)],
        "values": [float(i) for i in range(44)],
        "feature_set": "abc",
    },
    "prediction_batch": {
        "prediction_id": "web-1@1767225600000",
        "entity": "web-1",
        "event_time": T0,
        "emitted_at": T0 + 5,
        "latency_ms": 5.0,
        "predictions": [
            {
                "metric": "cpu_percent",
                "kind": "FORECAST",
                "model": "seasonal",
                "model_version": "1",
                "horizon_s": 300,
                "value": 13.0,
                "score": 0.1,
                "lower": 10.0,
                "upper": 16.0,
            }
        ],
    },
}
"""Records as version 1 of these schemas wrote them (still readable, through the history)."""
