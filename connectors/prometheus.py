"""Every Prometheus metric Foresight exports, declared in one place.

Each process (worker, ClickHouse sink, gateway, ingestion) imports the metrics it moves and
serves them on its own ``/metrics``. Declaring them together keeps names consistent (base
units, ``_total`` counters) and lets a test check that every name a Grafana dashboard or an
alerting rule uses is one the code exports (:func:`exported_names`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# -- streams: ingestion, features, models, alerts ------------------------------------------
EVENTS_IN = Counter("foresight_events_in_total", "Kafka records consumed.", ["topic"])
EVENTS_OUT = Counter("foresight_events_out_total", "Kafka records produced.", ["topic"])
SAMPLES_IN = Counter("foresight_samples_in_total", "Metric samples consumed (inside batches).")
SKIPPED_OFFSETS = Counter(
    "foresight_skipped_offsets_total",
    "Input offsets the consumer never handed to the worker, between two records it did: "
    "their records are missing from the windows (alert on any increase).",
    ["topic", "partition"],
)
REPLAYED = Counter(
    "foresight_replayed_records_total",
    "Records seen again after a restart and skipped: their samples were already counted.",
)
DEAD_LETTERS = Counter(
    "foresight_dead_letters_total", "Records sent to telemetry.deadletter.", ["reason"]
)
SIGNALS_DROPPED = Counter(
    "foresight_signals_dropped_total",
    "Series and signals of entities not modelled, by reason (signal_limit, series_limit, "
    "out_of_order, rule_error), with the profile and rule that made a dropped signal.",
    ["reason", "profile", "rule"],
)
CONSUMER_LAG = Gauge(
    "foresight_consumer_lag_records",
    "Records behind the end of a partition.",
    ["topic", "partition"],
)
PARTITION_STALLED = Gauge(
    "foresight_partition_stalled",
    "1 when an owned partition has records waiting but made no progress lately.",
    ["topic", "partition"],
)
STALL_RESEEKS = Counter(
    "foresight_stall_reseeks_total",
    "Times a worker sought its partitions back to their committed offsets because this one "
    "had records waiting that never reached it (see FORESIGHT_STALL_TIMEOUT_S).",
    ["topic", "partition"],
)
EVENT_TO_PREDICTION = Histogram(
    "foresight_event_to_prediction_seconds",
    "From a sample's arrival at the worker to its prediction being produced.",
    buckets=_LATENCY_BUCKETS,
)
ROUTING_DECISION = Histogram(
    "foresight_routing_decision_seconds",
    "From a routing request's arrival in Kafka to its decision being produced.",
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "foresight_model_inference_seconds",
    "Time to score one batch of series.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_PRECISION = Gauge(
    "foresight_model_precision", "Rolling precision against labels.", ["model", "version"]
)
MODEL_RECALL = Gauge(
    "foresight_model_recall", "Rolling recall against labels.", ["model", "version"]
)
MODEL_ACCURACY = Gauge(
    "foresight_model_accuracy",
    "Rolling accuracy against labels: the share of scored steps whose call (alarm or not) the "
    "outcome (failure within the horizon or not) bore out.",
    ["model", "version"],
)
MODEL_MAE = Gauge(
    "foresight_model_mae",
    "Rolling mean absolute error of forecasts, each scaled by its interval's half-width.",
    ["model", "version"],
)
PREDICTIONS = Counter(
    "foresight_predictions_total",
    "Predictions emitted: the rows of the PredictionBatches produced, by kind.",
    ["kind"],
)
MODEL_PREDICTIONS = Counter(
    "foresight_model_predictions_total",
    "FAILURE_RISK predictions of each trained model version (an A/B arm: its entities' steps).",
    ["model", "version"],
)
MODEL_ALARMS = Counter(
    "foresight_model_alarms_total",
    "Those of foresight_model_predictions_total at or above the failure-risk alert threshold.",
    ["model", "version"],
)
MODEL_TRAFFIC = Gauge(
    "foresight_model_traffic_share",
    "Share of the entities each trained model version serves (an A/B split; 0 in shadow).",
    ["model", "version"],
)
DRIFT_STATE = Gauge(
    "foresight_drift_detected", "1 while drift is detected on a signal.", ["model", "signal"]
)
ALERTS = Counter("foresight_alerts_total", "Alert state changes.", ["rule", "status"])

# -- connectors: sink, gateway, ingestion ------------------------------------------------
RETRAIN_ALERTS = Counter(
    "foresight_retrain_alerts_total",
    "Records of the alerts topic the retrain controller read, by kind: drift (a retraining "
    "drift of its model), other (any other alert), undecodable (not an alert).",
    ["kind"],
)
RETRAINS = Counter(
    "foresight_retrains_total",
    "Candidates the retrain controller trained, by outcome: started, registered, failed.",
    ["outcome"],
)
RETRAIN_DECISIONS = Counter(
    "foresight_retrain_decisions_total",
    "Candidates the retrain controller tested, by decision: promoted, refused.",
    ["decision"],
)
RETRAIN_LAST_STEP = Gauge(
    "foresight_retrain_last_step_timestamp_seconds",
    "Unix time of the retrain controller's last step (0: none yet).",
)
SINK_ROWS = Counter("foresight_sink_rows_total", "Rows inserted into ClickHouse.", ["table"])
SINK_BATCH_ROWS = Histogram(
    "foresight_sink_batch_rows",
    "Rows per ClickHouse insert.",
    buckets=(10, 100, 1_000, 10_000, 50_000, 100_000, 500_000),
)
SINK_INSERT_SECONDS = Histogram(
    "foresight_sink_insert_seconds",
    "Time of one ClickHouse insert.",
    ["table"],
    buckets=_LATENCY_BUCKETS,
)
SINK_ERRORS = Counter("foresight_sink_errors_total", "Failed ClickHouse inserts.", ["table"])
SINK_SKIPPED = Counter(
    "foresight_sink_skipped_total",
    "Records the ClickHouse sink could not decode and skipped (the worker dead-letters them).",
    ["topic", "reason"],
)
GATEWAY_CLIENTS = Gauge("foresight_gateway_clients", "Connected WebSocket clients.")
GATEWAY_QUEUE_DEPTH = Gauge(
    "foresight_gateway_queue_depth_messages", "Messages waiting in all client queues."
)
GATEWAY_DROPPED = Counter(
    "foresight_gateway_dropped_total", "Messages dropped or coalesced for slow clients."
)
GATEWAY_SENT = Counter("foresight_gateway_messages_total", "Messages sent to clients.")
GATEWAY_REPEATED_ALERTS = Counter(
    "foresight_gateway_repeated_alerts_total",
    "Alert state changes read again (re-sent, or replayed by a worker) and not relayed.",
)
GATEWAY_UNDECODABLE = Counter(
    "foresight_gateway_undecodable_total",
    "Records the gateway could not decode and skipped (logged with the reason).",
    ["topic"],
)
INGEST_REQUESTS = Counter(
    "foresight_ingest_requests_total", "HTTP ingestion requests.", ["endpoint", "code"]
)
INGEST_SAMPLES_DROPPED = Counter(
    "foresight_ingest_samples_dropped_total",
    "Remote-write samples not produced: stale_marker, non_finite, future, native_histogram.",
    ["reason"],
)

API_REQUESTS = Counter(
    "foresight_api_requests_total", "Intelligence API requests.", ["endpoint", "code"]
)
PREDICTION_LATENCY = Histogram(
    "foresight_prediction_latency_seconds",
    "Time to answer an on-demand prediction request of the intelligence API, by route "
    "(performance, batch, graphql).",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
GATEWAY_REQUESTS = Counter(
    "foresight_gateway_requests_total",
    "HTTP requests to the gateway (the page, the read API, /health, /metrics).",
    ["endpoint", "code"],
)

PII_SCRUBBED = Counter(
    "foresight_pii_scrubbed_total",
    "Label values and event fields a PII rule dropped, hashed or redacted at ingestion.",
    ["rule", "action"],
)

# -- the audit trail -----------------------------------------------------------------------
AUDIT_EVENTS = Counter(
    "foresight_audit_events_total",
    "Audit events the broker acknowledged on the audit topic.",
    ["action", "outcome"],
)
AUDIT_DROPPED = Counter(
    "foresight_audit_dropped_total",
    "Audit events not recorded: buffer_full (Kafka slower than the events), kafka_error, "
    "unsent_at_stop.",
    ["reason"],
)
AUDIT_SUMMARISED = Counter(
    "foresight_audit_refusals_summarised_total",
    "Refused authentications counted in a summary event rather than recorded one by one.",
)


def exported_names() -> set[str]:
    """Every series name the metrics above export (``_total``, ``_bucket``... included)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    names: set[str] = set()
    for metric in globals().values():
        if isinstance(metric, Counter | Gauge | Histogram):
            names.update(metric._name + suffix for suffix in suffixes[metric._type])
    return names
