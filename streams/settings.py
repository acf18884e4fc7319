"""Foresight's one settings object.

Every knob lives here, declared once with its environment variable, its default and what it
does. Values come from, in rising priority: the defaults below, a YAML file (``foresight.yaml``
in the working directory, or the path in ``FORESIGHT_CONFIG``), and environment variables.
The README's settings table is generated from these declarations and a test keeps it in step.

YAML keys are the field names (``kafka_bootstrap_servers: host:9092``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from connectors.http.tls import TlsConfig
from connectors.kafka_clients import MECHANISMS, PROTOCOLS, KafkaConfig
from connectors.user_sql import SqlLimits
from models.workflows import MIN_SUPPORT, WorkflowConfig
from schemas.yaml_text import parse_yaml
from streams.setting_domains import Between, Domain, Matches, OneOf, Scheme

CONFIG_ENV = "FORESIGHT_CONFIG"
DEFAULT_CONFIG_FILE = "foresight.yaml"
PORT = Between(1, 65535)
# Kafka's topic and group names; a worker's changelog topics add about 40 characters.
KAFKA_NAME = Matches(r"[A-Za-z0-9._-]{1,200}", "letters, digits, '.', '_' and '-' (1 to 200)")


def _setting(default: Any, env: str, doc: str, domain: Domain | None = None) -> Any:
    return dataclasses.field(default=default, metadata={"env": env, "doc": doc, "domain": domain})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Foresight's configuration; build it with :func:`load_settings`."""

    kafka_bootstrap_servers: str = _setting(
        "127.0.0.1:9092", "KAFKA_BOOTSTRAP_SERVERS", "Kafka brokers, comma separated."
    )
    kafka_security_protocol: str = _setting(
        "PLAINTEXT",
        "KAFKA_SECURITY_PROTOCOL",
        "How every Foresight Kafka client (and the local stack's Connect worker) talks to the "
        "brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
        domain=OneOf(PROTOCOLS),
    )
    kafka_sasl_mechanism: str = _setting(
        "SCRAM-SHA-512",
        "KAFKA_SASL_MECHANISM",
        "SASL mechanism with SASL_SSL or SASL_PLAINTEXT: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.",
        domain=OneOf(MECHANISMS),
    )
    kafka_sasl_username: str = _setting(
        "", "KAFKA_SASL_USERNAME", "SASL user name (needed with SASL_SSL or SASL_PLAINTEXT)."
    )
    kafka_sasl_password_file: str = _setting(
        "",
        "KAFKA_SASL_PASSWORD_FILE",
        "File holding the SASL password (one line; keep it mode 0600); needed with SASL.",
    )
    kafka_ssl_cafile: str = _setting(
        "",
        "KAFKA_SSL_CAFILE",
        "PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); empty: "
        "the system's trusted CAs.",
    )
    kafka_connect_url: str = _setting(
        "http://127.0.0.1:8083",
        "KAFKA_CONNECT_URL",
        "Kafka Connect REST endpoint.",
        domain=Scheme(("http", "https")),
    )
    feature_store_url: str = _setting(
        "redis://127.0.0.1:6379/0",
        "FEATURE_STORE_URL",
        "Redis URL of the online feature store and prediction cache.",
        domain=Scheme(("redis", "rediss", "unix")),
    )
    model_registry_url: str = _setting(
        "file://.stack/models",
        "MODEL_REGISTRY_URL",
        "Where versioned model artifacts live (a folder, or any fsspec URL).",
    )
    prediction_cache_ttl: int = _setting(
        300,
        "PREDICTION_CACHE_TTL",
        "Seconds a cached prediction stays in Redis.",
        domain=Between(1),
    )
    clickhouse_url: str = _setting(
        "",
        "CLICKHOUSE_URL",
        "A ClickHouse server (http://user:pass@host:8123/db); empty uses embedded chdb.",
        domain=Scheme(("http", "https"), empty=True),
    )
    chdb_path: str = _setting(
        ".stack/chdb", "FORESIGHT_CHDB_PATH", "Data folder of the embedded ClickHouse (chdb)."
    )
    schema_registry_url: str = _setting(
        "",
        "SCHEMA_REGISTRY_URL",
        "A Confluent-compatible schema registry (the local stack's: http://127.0.0.1:8085); when "
        "set, every process writes Confluent's framing under record-name subjects, each BACKWARD "
        "compatible; empty: Foresight's framing, no registry needed.",
        domain=Scheme(("http", "https"), empty=True),
    )
    schema_registry_port: int = _setting(
        8085,
        "FORESIGHT_SCHEMA_REGISTRY_PORT",
        "Port on 127.0.0.1 where `foresight stack up` runs the local schema registry.",
        domain=PORT,
    )
    json_twins: bool = _setting(
        False,
        "FORESIGHT_JSON_TWINS",
        "The worker also writes every output topic as plain JSON on a twin topic (features.json, "
        "predictions.json, alerts.json, routing.decisions.json), per the JSON Schemas in "
        "schemas/json; off: each record is encoded once, as Avro.",
    )
    stack_dir: str = _setting(
        ".stack", "FORESIGHT_STACK_DIR", "Data, logs and pids of the local stack."
    )
    stack_kafka_sasl_port: int = _setting(
        0,
        "FORESIGHT_STACK_KAFKA_SASL_PORT",
        "When not 0, the local stack's Kafka also listens SASL_SSL (SCRAM-SHA-512, TLS with "
        "the certificates of `foresight certs dev`) on this port, e.g. 9096.",
        domain=Between(0, 65535),
    )
    topic_partitions: int = _setting(
        6,
        "FORESIGHT_TOPIC_PARTITIONS",
        "Partitions of each data topic `topics create` makes.",
        domain=Between(1),
    )
    topic_retention_hours: int = _setting(
        168,
        "FORESIGHT_TOPIC_RETENTION_HOURS",
        "Retention of the telemetry and output topics.",
        domain=Between(1),
    )
    log_level: str = _setting(
        "INFO",
        "FORESIGHT_LOG_LEVEL",
        "Log level of every process.",
        domain=OneOf(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), any_case=True),
    )
    worker_store: str = _setting(
        "rocksdb://",
        "FORESIGHT_WORKER_STORE",
        "Faust table store: rocksdb:// (state on disk, in FORESIGHT_WORKER_DATA_DIR) or "
        "memory:// (state rebuilt from the changelog at every start).",
        domain=Scheme(("rocksdb", "memory")),
    )
    worker_store_flush_s: float = _setting(
        30.0,
        "FORESIGHT_WORKER_STORE_FLUSH_S",
        "Seconds between writes of the rocksdb store's memory to disk. The store keeps no "
        "write-ahead log (the changelog is its log): a worker killed with -9 reads up to "
        "this much changelog more when it starts again; a clean stop writes all of it.",
        domain=Between(0, above=True),
    )
    worker_data_dir: str = _setting(
        "",
        "FORESIGHT_WORKER_DATA_DIR",
        "Folder of the workers' local state (RocksDB), one subfolder per app id and web port; "
        "empty: worker-data under the stack folder.",
    )
    worker_id: str = _setting(
        "foresight-worker",
        "FORESIGHT_WORKER_ID",
        "Faust app id: the consumer group and the prefix of changelog topics.",
        domain=KAFKA_NAME,
    )
    worker_offset_reset: str = _setting(
        "earliest",
        "FORESIGHT_WORKER_OFFSET_RESET",
        "Where a new worker group starts reading: earliest (all retained data) or latest.",
        domain=OneOf(("earliest", "latest")),
    )
    worker_standby_replicas: int = _setting(
        1,
        "FORESIGHT_WORKER_STANDBY_REPLICAS",
        "Warm copies of each table partition that other workers keep from the changelog "
        "(Faust's table_standby_replicas), so a failover resumes without replaying it; a "
        "single worker keeps none whatever this says.",
        domain=Between(0),
    )
    worker_session_timeout_s: float = _setting(
        10.0,
        "FORESIGHT_WORKER_SESSION_TIMEOUT_S",
        "How long the group waits to hear from a worker before it gives the worker's "
        "partitions to the others (Kafka's session.timeout.ms, 6 to 1800 s on a default "
        "broker): the wait before a failover after a crash or kill -9. A worker that stops "
        "cleanly leaves at once. Heartbeats go every fifth of it.",
        domain=Between(0, above=True),
    )
    step_s: float = _setting(
        10.0,
        "FORESIGHT_STEP_S",
        "Window step: features and predictions per entity this often, each entity on a phase "
        "of the step of its own (a fleet's steps spread over the step, not all at once).",
        domain=Between(0, above=True),
    )
    worker_batch: int = _setting(
        1000,
        "FORESIGHT_WORKER_BATCH",
        "Records a worker takes from Kafka per vectorised pass. Three times as many table "
        "writes may wait for the producer before the delivery of the next record waits too.",
        domain=Between(1),
    )
    worker_batch_wait_s: float = _setting(
        0.01,
        "FORESIGHT_WORKER_BATCH_WAIT_S",
        "Longest a pass waits, after its first record, for the rest of its fetch: a pass "
        "goes as soon as a turn of the event loop brings no more records, or its "
        "FORESIGHT_WORKER_BATCH records are in.",
        domain=Between(0),
    )
    worker_pass_budget_s: float = _setting(
        0.25,
        "FORESIGHT_WORKER_PASS_BUDGET_S",
        "Longest a metrics pass's engine work should hold the worker's event loop: when "
        "records cost more (a backlog whose records each close steps), a pass takes fewer "
        "than FORESIGHT_WORKER_BATCH, so the timers, the other agents and the commits wait "
        "no longer than this for it.",
        domain=Between(0, above=True),
    )
    worker_fetch_wait_ms: int = _setting(
        15,
        "FORESIGHT_WORKER_FETCH_WAIT_MS",
        "Longest the broker holds the worker's fetch for its fetch size (Kafka's "
        "fetch.max.wait.ms; Faust's own is 1,500). Below the worker's maximum rate each "
        "fetch brings this long's records at once: a longer wait costs latency, a shorter one "
        "CPU (more, smaller passes). An idle worker waits FORESIGHT_WORKER_IDLE_FETCH_WAIT_MS.",
        domain=Between(0),
    )
    worker_fetch_min_bytes: int = _setting(
        1_048_576,
        "FORESIGHT_WORKER_FETCH_MIN_BYTES",
        "Bytes the broker gathers for the worker's fetch before it answers, unless the fetch "
        "wait ends first (Kafka's fetch.min.bytes; Faust's is 1). Below the worker's maximum "
        "rate a fetch then brings a whole wait's records at once: fewer, larger passes, at "
        "up to the fetch wait of latency. 1 answers at the first record.",
        domain=Between(1),
    )
    worker_idle_fetch_wait_ms: int = _setting(
        500,
        "FORESIGHT_WORKER_IDLE_FETCH_WAIT_MS",
        "Longest the broker holds the worker's fetch while the worker is idle (its last "
        "fetch brought nothing and it holds no records): such a fetch asks for every "
        "partition and is answered at the first record, so the wait costs no latency, and "
        "an idle worker fetches about twice a second instead of every "
        "FORESIGHT_WORKER_FETCH_WAIT_MS (on the local stack: 0.9 % of a core instead of 5 to 6 %).",
        domain=Between(1),
    )
    worker_commit_s: float = _setting(
        1.0,
        "FORESIGHT_WORKER_COMMIT_S",
        "Seconds between a worker's offset commits. While it is behind (a pass's worth of "
        "records waiting), the journals of the entities that took records wait for the "
        "commit: larger, fewer changelog writes; smaller, fewer records read again after a "
        "crash.",
        domain=Between(0, above=True),
    )
    worker_journal_s: float = _setting(
        0.0,
        "FORESIGHT_WORKER_JOURNAL_S",
        "Seconds an entity's records may wait out of the changelog while the worker keeps "
        "up: a pass writes the journals that have waited this long, each holding the records "
        "the entity took meanwhile, and the offset commit writes the rest in one burst. 0 "
        "writes them with every pass. 0.5 took about a tenth off the worker's CPU at 50,000 "
        "samples/s and doubled its p99 latency (load-tests/README.md).",
        domain=Between(0),
    )
    worker_linger_ms: int = _setting(
        5,
        "FORESIGHT_WORKER_LINGER_MS",
        "Milliseconds the worker's producer holds a record to batch it with others (Kafka's "
        "linger.ms), for every output: 0 takes about 5 ms off each record's way to the "
        "broker (routing decisions' included; records still batch while a send is under "
        "way) for more, smaller produce requests.",
        domain=Between(0),
    )
    worker_produce_batch_bytes: int = _setting(
        262_144,
        "FORESIGHT_WORKER_PRODUCE_BATCH_BYTES",
        "Largest batch of records the worker's producer sends to one partition in one request "
        "(Kafka's batch.size; at most FORESIGHT_MAX_RECORD_BYTES). The producer keeps one "
        "request in flight per broker, and a send to a partition whose batch is full waits "
        "for it: at 16 KB (Kafka's default) a worker at its maximum rate did about a quarter "
        "fewer samples a second.",
        domain=Between(1),
    )
    checkpoint_s: float = _setting(
        0.0,
        "FORESIGHT_CHECKPOINT_S",
        "Event-time seconds between writes of an entity's state to its changelog (0: every "
        "pass that changed it; larger trades restart accuracy for changelog traffic).",
        domain=Between(0),
    )
    model_checkpoint_s: float = _setting(
        300.0,
        "FORESIGHT_MODEL_CHECKPOINT_S",
        "Event-time seconds between writes of an entity's model states to their changelog.",
        domain=Between(0),
    )
    shadow_candidates: bool = _setting(
        True,
        "FORESIGHT_SHADOW_CANDIDATES",
        "Score the newest candidate of each trained model in shadow beside the production one.",
    )
    explain_min_risk: float = _setting(
        0.3,
        "FORESIGHT_EXPLAIN_MIN_RISK",
        "A trained failure-risk model's predictions at or above this risk carry their SHAP "
        "drivers (0: every one; SHAP costs about 100 predictions: 0.3 ms a row for the "
        "default 200 trees of depth 4).",
        domain=Between(0, 1),
    )
    allowed_lateness_s: float = _setting(
        120.0,
        "FORESIGHT_ALLOWED_LATENESS_S",
        "How late a sample may arrive and still amend its window; later ones are dead-lettered.",
        domain=Between(0),
    )
    idle_timeout_s: float = _setting(
        5.0,
        "FORESIGHT_IDLE_TIMEOUT_S",
        "Wall seconds without records after which a partition's watermark follows wall time.",
        domain=Between(0, above=True),
    )
    stall_timeout_s: float = _setting(
        30.0,
        "FORESIGHT_STALL_TIMEOUT_S",
        "Wall seconds a partition may hold unprocessed records before it is called stalled.",
        domain=Between(0, above=True),
    )
    max_metrics_per_entity: int = _setting(
        256,
        "FORESIGHT_MAX_METRICS",
        "Distinct signals modelled per entity (cardinality limit); past it, new signals are "
        "dead-lettered (error_kind cardinality) and counted by profile and rule.",
        domain=Between(1),
    )
    max_series_per_entity: int = _setting(
        10_000,
        "FORESIGHT_MAX_SERIES",
        "Distinct input series an entity's conversion stage tracks at once (series unseen for "
        "5 minutes are forgotten); past it, new series are dead-lettered (cardinality).",
        domain=Between(1),
    )
    signal_rules: str = _setting(
        "",
        "FORESIGHT_SIGNAL_RULES",
        "A YAML file of signal rules (profiles) to apply before the shipped ones; empty: the "
        "shipped profiles alone (node_exporter, cadvisor, red, simulator, generic).",
    )
    max_entities: int = _setting(
        10_000,
        "FORESIGHT_MAX_ENTITIES",
        "Entities a worker holds in memory; past it, idle ones are evicted to the changelog "
        "and new ones are dead-lettered (error_kind entity_limit). Agent x task type "
        "statistics are held to as many: the least recently seen are forgotten.",
        domain=Between(1),
    )
    entity_idle_s: float = _setting(
        3600.0,
        "FORESIGHT_ENTITY_IDLE_S",
        "Wall seconds without data after which an entity's state leaves memory (it stays in "
        "the changelog and comes back with the entity's next record).",
        domain=Between(0, above=True),
    )
    max_record_bytes: int = _setting(
        1_000_000,
        "FORESIGHT_MAX_RECORD_BYTES",
        "Largest record a worker produces (Kafka's max.request.size); an input whose output "
        "would be larger is dead-lettered (error_kind output_too_large).",
        domain=Between(1),
    )
    max_future_s: float = _setting(
        3600.0,
        "FORESIGHT_MAX_FUTURE_S",
        "Samples and events stamped further than this in the future are dead-lettered by "
        "the worker and not taken by ingest.",
        domain=Between(0),
    )
    anomaly_warmup_steps: int = _setting(
        120,
        "FORESIGHT_ANOMALY_WARMUP",
        "Steps an anomaly detector learns before it scores (its likelihood needs ~100 to settle).",
        domain=Between(0),
    )
    entity_anomaly_threshold: float = _setting(
        0.5,
        "FORESIGHT_ENTITY_ANOMALY_THRESHOLD",
        "The entity anomaly score (ANOMALY, metric `*`, in [0, 1]; 0.5 is a one-in-100,000 "
        "step, 1 one in 10^10) at or above which the anomaly alert fires; it resolves after "
        "five minutes below half this.",
        domain=Between(0, 1, above=True),
    )
    failure_horizon_s: float = _setting(
        1800.0,
        "FORESIGHT_FAILURE_HORIZON_S",
        "Failure risk is the probability of exhausting a resource within this many seconds.",
        domain=Between(0, above=True),
    )
    drift_check_s: float = _setting(
        60.0,
        "FORESIGHT_DRIFT_CHECK_S",
        "Wall seconds between a worker's drift assessments (forecast error, and the "
        "production failure-risk model's features against its training reference).",
        domain=Between(0, above=True),
    )
    drift_window: int = _setting(
        1000,
        "FORESIGHT_DRIFT_WINDOW",
        "Recent feature vectors (an exponentially decayed window) the feature-drift detector "
        "compares with the production model's training distribution.",
        domain=Between(1),
    )
    drift_psi_limit: float = _setting(
        0.25,
        "FORESIGHT_DRIFT_PSI_LIMIT",
        "Population stability index of a feature at which the model_drift alert fires "
        "(0.1: moderate shift, 0.25: significant).",
        domain=Between(0, above=True),
    )
    workflow_max: int = _setting(
        50_000,
        "FORESIGHT_WORKFLOW_MAX",
        "Workflows in flight a worker follows (AgentEvents with a workflow_id); past it, the "
        "least recently active is dropped unlearned.",
        domain=Between(1),
    )
    workflow_window: int = _setting(
        2_000,
        "FORESIGHT_WORKFLOW_WINDOW",
        "Finished workflows per kind (root task type) that paths, precursors and advice are "
        "learned from, the newest: what stops holding leaves within this many.",
        domain=Between(MIN_SUPPORT),
    )
    workflow_rare_share: float = _setting(
        0.02,
        "FORESIGHT_WORKFLOW_RARE_SHARE",
        "A step taken by fewer than this share of a kind's workflows after the same path so "
        "far fires workflow_rare_path (judged once 50 of them got there).",
        domain=Between(0, 1, above=True, below=True),
    )
    workflow_loop_repeats: int = _setting(
        3,
        "FORESIGHT_WORKFLOW_LOOP_REPEATS",
        "A cycle of one to three task types repeated this many times in a row fires workflow_loop.",
        domain=Between(2),
    )
    workflow_stall_factor: float = _setting(
        3.0,
        "FORESIGHT_WORKFLOW_STALL_FACTOR",
        "A workflow quiet for this many times its kind's 95th percentile of longest quiet gap "
        "fires workflow_stall.",
        domain=Between(1),
    )
    workflow_stall_min_s: float = _setting(
        60.0,
        "FORESIGHT_WORKFLOW_STALL_MIN_S",
        "Event-time seconds a workflow must at least be quiet to be called stalled.",
        domain=Between(0, above=True),
    )
    workflow_idle_s: float = _setting(
        3600.0,
        "FORESIGHT_WORKFLOW_IDLE_S",
        "Event-time seconds without an event after which an unfinished workflow is dropped "
        "unlearned (its alerts resolve as abandoned).",
        domain=Between(0, above=True),
    )
    workflow_precursor_confidence: float = _setting(
        0.5,
        "FORESIGHT_WORKFLOW_PRECURSOR_CONFIDENCE",
        "Share of a kind's workflows with an error class that must have failed (and twice the "
        "kind's failure rate) for the error class to fire workflow_precursor.",
        domain=Between(0, 1, above=True),
    )
    workflow_reorder_s: float = _setting(
        5.0,
        "FORESIGHT_WORKFLOW_REORDER_S",
        "Event-time seconds a workflow's events, which come from several agents through "
        "several partitions, may arrive out of order: its steps are judged, and its end "
        "taken, this long after them.",
        domain=Between(0),
    )
    workflow_advice_alpha: float = _setting(
        0.01,
        "FORESIGHT_WORKFLOW_ADVICE_ALPHA",
        "False discovery rate (Benjamini-Hochberg q) at which workflow_advice is published; "
        "it is retracted above five times this.",
        domain=Between(0, 0.2, above=True, below=True),
    )
    retrain_cooldown_s: float = _setting(
        3600.0,
        "FORESIGHT_RETRAIN_COOLDOWN_S",
        "`foresight retrain`: least wall seconds between a registered version and the next "
        "retraining (a drift still firing when it ends is acted on then).",
        domain=Between(0),
    )
    retrain_history_s: float = _setting(
        604800.0,
        "FORESIGHT_RETRAIN_HISTORY_S",
        "`foresight retrain`: seconds of ClickHouse history a candidate trains on.",
        domain=Between(0, above=True),
    )
    retrain_folds: int = _setting(
        4,
        "FORESIGHT_RETRAIN_FOLDS",
        "`foresight retrain`: temporal cross-validation folds.",
        domain=Between(2),
    )
    retrain_search_trials: int = _setting(
        10,
        "FORESIGHT_RETRAIN_SEARCH_TRIALS",
        "`foresight retrain`: Optuna trials of hyper-parameter search per candidate (0: none).",
        domain=Between(0),
    )
    retrain_check_s: float = _setting(
        30.0,
        "FORESIGHT_RETRAIN_CHECK_S",
        "`foresight retrain`: wall seconds between counts of a candidate's labelled outcomes.",
        domain=Between(0, above=True),
    )
    promotion_min_outcomes: int = _setting(
        500,
        "FORESIGHT_PROMOTION_MIN_OUTCOMES",
        "Labelled steps scored by both production and the candidate before the promotion "
        "test runs.",
        domain=Between(1),
    )
    promotion_alpha: float = _setting(
        0.05,
        "FORESIGHT_PROMOTION_ALPHA",
        "A candidate is promoted only when the paired test's p-value is below this.",
        domain=Between(0, 1, above=True),
    )
    promotion_min_gain: float = _setting(
        0.0,
        "FORESIGHT_PROMOTION_MIN_GAIN",
        "Smallest fall of the Brier score worth a promotion (the test's margin; 0: any).",
        domain=Between(0),
    )
    keys_file: str = _setting(
        ".stack/keys.json",
        "FORESIGHT_KEYS_FILE",
        "API keys the servers accept, hashed, with their roles (`foresight keys`); a server "
        "started without it makes it with one key.",
    )
    credentials_file: str = _setting(
        ".stack/credentials",
        "FORESIGHT_CREDENTIALS_FILE",
        "Where a server's first start saves the key it made (mode 0600), and where local "
        "clients read their key when FORESIGHT_API_KEY is not set.",
    )
    rate_limit_per_key: float = _setting(
        100.0,
        "FORESIGHT_RATE_LIMIT_PER_KEY",
        "Requests per second one API key may make to a server (bursts of twice that); "
        "beyond, 429 with Retry-After. 0: no limit.",
        domain=Between(0),
    )
    rate_limit_per_address: float = _setting(
        200.0,
        "FORESIGHT_RATE_LIMIT_PER_ADDRESS",
        "Requests per second one client address may make to a server (bursts of twice "
        "that); beyond, 429 with Retry-After. 0: no limit.",
        domain=Between(0),
    )
    auth_failure_limit: int = _setting(
        10,
        "FORESIGHT_AUTH_FAILURE_LIMIT",
        "Failed authentications one address may make per minute (in a burst of that many); "
        "beyond, 429 with Retry-After. 0: no limit.",
        domain=Between(0),
    )
    audit_topic: str = _setting(
        "audit",
        "FORESIGHT_AUDIT_TOPIC",
        "Topic of the audit trail (AuditEvent records: model and connector changes, SQL through "
        "the sink, refused keys), which `topics create` makes and the sink stores.",
        domain=KAFKA_NAME,
    )
    bind_host: str = _setting(
        "127.0.0.1",
        "FORESIGHT_BIND_HOST",
        "Interface every Foresight HTTP server (worker, gateway, ingest, API, metrics) listens on; "
        "beyond the loopback, no key from the documentation is accepted.",
    )
    tls_cert: str = _setting(
        "",
        "FORESIGHT_TLS_CERT",
        "PEM certificate (chain) every Foresight server presents: set with FORESIGHT_TLS_KEY, "
        "they serve https and wss only, and local clients use https; empty: plain HTTP.",
    )
    tls_key: str = _setting(
        "", "FORESIGHT_TLS_KEY", "PEM private key of FORESIGHT_TLS_CERT (keep it mode 0600)."
    )
    tls_ca: str = _setting(
        "",
        "FORESIGHT_TLS_CA",
        "PEM file of the CA local clients (CLI, demo, status) trust for Foresight's servers; "
        "empty: the system's trusted CAs.",
    )
    worker_port: int = _setting(
        6066,
        "FORESIGHT_WORKER_PORT",
        "Worker web port: /health, /metrics (Faust's web server).",
        domain=PORT,
    )
    gateway_port: int = _setting(
        8765,
        "FORESIGHT_GATEWAY_PORT",
        "WebSocket gateway, live page, read API and /metrics.",
        domain=PORT,
    )
    gateway_queue_size: int = _setting(
        1000,
        "FORESIGHT_GATEWAY_QUEUE",
        "Messages queued per WebSocket client before dropping.",
        domain=Between(1),
    )
    api_port: int = _setting(
        8770,
        "FORESIGHT_API_PORT",
        "Intelligence API: on-demand and batch predictions, history, features, models "
        "(REST under /v1, GraphQL at /graphql), /health and /metrics.",
        domain=PORT,
    )
    api_route_timeout_s: float = _setting(
        5.0,
        "FORESIGHT_API_ROUTE_TIMEOUT_S",
        "Seconds `POST /v1/route` waits for the worker's decision on routing.decisions before "
        "answering 504.",
        domain=Between(0, above=True),
    )
    api_redis_connections: int = _setting(
        100,
        "FORESIGHT_API_REDIS_CONNECTIONS",
        "Connections `foresight api` holds to Redis at most; a request that finds them all busy "
        "waits for one (FORESIGHT_API_REDIS_WAIT_S).",
        domain=Between(1),
    )
    api_redis_wait_s: float = _setting(
        2.0,
        "FORESIGHT_API_REDIS_WAIT_S",
        "Seconds a request to `foresight api` waits for a free Redis connection when all "
        "FORESIGHT_API_REDIS_CONNECTIONS are busy, before it answers 503 saying so.",
        domain=Between(0, above=True),
    )
    api_forecast_cache: int = _setting(
        10_000,
        "FORESIGHT_API_FORECAST_CACHE",
        "Entities whose decoded forecasts `foresight api` keeps (0: none). The worker rewrites "
        "an entity's forecasts every few minutes, not every step, so a forecast read again "
        "while its bytes in Redis are the same is decoded once (a tenth to a sixth of a batch "
        "prediction's CPU). An entry holds one decoded PredictionBatch and its bytes: about "
        "11 KB for a host of 8 metrics, so 10,000 entries take about 110 MB.",
        domain=Between(0),
    )
    ingest_port: int = _setting(
        9201,
        "FORESIGHT_INGEST_PORT",
        "HTTP ingestion: Prometheus remote_write and JSON agent events, and /metrics.",
        domain=PORT,
    )
    entity_labels: str = _setting(
        "entity,instance,host,job",
        "FORESIGHT_ENTITY_LABELS",
        "Labels tried in order to name a remote_write series' entity.",
        domain=Matches(
            r" *[a-zA-Z_]\w* *(, *[a-zA-Z_]\w* *)*", "Prometheus label names, comma separated"
        ),
    )
    pii_rules: str = _setting(
        "",
        "FORESIGHT_PII_RULES",
        "A YAML file of PII rules applied at ingestion before the shipped ones (or instead of "
        "them); empty: the shipped rules alone (secrets, tokens, e-mail and IP addresses).",
    )
    pii_key_file: str = _setting(
        ".stack/pii.key",
        "FORESIGHT_PII_KEY_FILE",
        "Secret of the PII rules' keyed hash (HMAC-SHA-256), made at the first start of "
        "`foresight ingest` (mode 0600); every ingest process must share it.",
    )
    sink_metrics_port: int = _setting(
        9301,
        "FORESIGHT_SINK_METRICS_PORT",
        "ClickHouse sink's /metrics port.",
        domain=PORT,
    )
    sink_sql_port: int = _setting(
        8124,
        "FORESIGHT_SINK_SQL_PORT",
        "Port on 127.0.0.1 (always loopback) where the sink answers read-only SQL for the CLI "
        "while it owns the chdb folder.",
        domain=PORT,
    )
    sql_timeout_s: float = _setting(
        30.0,
        "FORESIGHT_SQL_TIMEOUT_S",
        "Longest a SQL statement (foresight sql, training, the sink's endpoint) runs before "
        "ClickHouse stops it.",
        domain=Between(0, above=True),
    )
    sql_max_rows: int = _setting(
        1_000_000,
        "FORESIGHT_SQL_MAX_ROWS",
        "Most rows a SQL answer may have; larger answers are refused (add LIMIT or aggregate).",
        domain=Between(1),
    )
    sink_batch_rows: int = _setting(
        50_000,
        "FORESIGHT_SINK_BATCH_ROWS",
        "Rows the ClickHouse sink buffers before inserting.",
        domain=Between(1),
    )
    sink_batch_seconds: float = _setting(
        1.0,
        "FORESIGHT_SINK_BATCH_SECONDS",
        "Longest the sink waits before inserting a batch.",
        domain=Between(0, above=True),
    )
    clickhouse_ttl_days: int = _setting(
        30,
        "FORESIGHT_CLICKHOUSE_TTL_DAYS",
        "Days rows are kept in ClickHouse tables.",
        domain=Between(1),
    )
    quality_port: int = _setting(
        9302,
        "FORESIGHT_QUALITY_PORT",
        "`foresight quality run`'s /health (503 while it waits for partitions, rebalances or "
        "after its consumer failed) and /metrics.",
        domain=PORT,
    )
    retrain_port: int = _setting(
        9303,
        "FORESIGHT_RETRAIN_PORT",
        "`foresight retrain`'s /health (503 until it follows the alerts, or after its loop "
        "failed) and /metrics.",
        domain=PORT,
    )
    quality_max_complexity: float = _setting(
        12.0,
        "FORESIGHT_QUALITY_MAX_COMPLEXITY",
        "The mean cyclomatic complexity a repository should stay under: `foresight quality "
        "run` alerts (complexity_trend) when it is above, or forecast to cross it within "
        "FORESIGHT_QUALITY_HORIZON_DAYS.",
        domain=Between(0, above=True),
    )
    quality_horizon_days: float = _setting(
        30.0,
        "FORESIGHT_QUALITY_HORIZON_DAYS",
        "How far ahead, in days at the repository's recent commit rate, a forecast crossing of "
        "FORESIGHT_QUALITY_MAX_COMPLEXITY alerts.",
        domain=Between(0, above=True),
    )
    quality_falling_commits: int = _setting(
        10,
        "FORESIGHT_QUALITY_FALLING_COMMITS",
        "Commits in a row without a rise of the test-to-code ratio (and a fall overall) that "
        "raise the test_ratio_falling alert.",
        domain=Between(1),
    )
    quality_max_repositories: int = _setting(
        1000,
        "FORESIGHT_QUALITY_MAX_REPOSITORIES",
        "Repositories one `foresight quality run` process holds (about 40 KB each); "
        "snapshots of more are dead-lettered (error_kind entity_limit): add partitions and "
        "processes.",
        domain=Between(1),
    )
    quality_retention_days: int = _setting(
        3650,
        "FORESIGHT_QUALITY_RETENTION_DAYS",
        "Retention of telemetry.code-quality: `foresight quality run` rebuilds each "
        "repository's forecasts from it at every start, so it keeps years (one small record "
        "per commit).",
        domain=Between(1),
    )

    def __post_init__(self) -> None:
        for field in setting_fields():
            problem = _domain_problem(field, getattr(self, field.name))
            if problem:
                raise ValueError(f"{field.metadata['env']} {problem}")
        self.kafka()  # these raise a ValueError naming the setting when they do not fit
        self.tls()
        self.workflow_config()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (settings are immutable)."""
        return dataclasses.replace(self, **changes)

    def sql_limits(self) -> SqlLimits:
        """What every SQL statement a person or training sends is held to."""
        return SqlLimits(timeout_s=self.sql_timeout_s, max_rows=self.sql_max_rows)

    def kafka(self) -> KafkaConfig:
        """The brokers and the security every Kafka client of Foresight uses."""
        return KafkaConfig(
            bootstrap_servers=self.kafka_bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password_file=self.kafka_sasl_password_file,
            ssl_cafile=self.kafka_ssl_cafile,
        )

    def workflow_config(self) -> WorkflowConfig:
        """How workflows are learned and judged."""
        values: dict[str, Any] = {
            "max_workflows": self.workflow_max, "window": self.workflow_window,
            "rare_share": self.workflow_rare_share, "loop_repeats": self.workflow_loop_repeats,
            "stall_factor": self.workflow_stall_factor, "stall_min_s": self.workflow_stall_min_s,
            "idle_s": self.workflow_idle_s,
            "precursor_confidence": self.workflow_precursor_confidence,
            "advice_alpha": self.workflow_advice_alpha, "reorder_s": self.workflow_reorder_s,
        }  # fmt: skip
        try:
            return WorkflowConfig(**values)
        except ValueError as error:
            message = str(error)
            for name in values:
                setting = "FORESIGHT_WORKFLOW_" + name.removesuffix("_workflows").upper()
                message = message.replace(f"{name}=", f"{setting}=")
            raise ValueError(message) from None

    def tls(self) -> TlsConfig:
        """The certificate every Foresight server presents, and the CA local clients trust."""
        return TlsConfig(cert=self.tls_cert, key=self.tls_key, ca=self.tls_ca)


def setting_fields() -> list[dataclasses.Field[Any]]:
    """The declared settings, in order, with their ``env`` and ``doc`` metadata."""
    return list(dataclasses.fields(Settings))


def _domain_problem(field: dataclasses.Field[Any], value: Any) -> str | None:
    """What is wrong with ``value`` for ``field`` ("must be ..., got ..."), or ``None``."""
    domain: Domain | None = field.metadata["domain"]
    problem = domain.problem(value) if domain is not None else None
    return f"{problem}, got {value!r}" if problem else None


def _coerce(field: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    kind: Callable[[Any], Any] = type(field.default)
    if kind is bool:
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text in ("1", "true", "yes", "on")
        raise ValueError(f"{source}: {field.name} must be true or false, got {raw!r}")
    try:
        # YAML's true is not a number, nor 2.5 a count (int() would make them 1 and 2).
        if isinstance(raw, bool) or (kind is int and isinstance(raw, float)):
            raise ValueError
        value = raw if type(raw) is kind else kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {field.name} must be {kind.__name__}, got {raw!r}") from None
    problem = _domain_problem(field, value)
    if problem:
        raise ValueError(f"{source}: {field.name} {problem}")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Read settings from defaults, then the YAML file, then the environment."""
    env = os.environ if environ is None else environ
    path = Path(config_file or env.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)
    from_file: dict[str, Any] = {}
    if path.is_file():
        loaded = parse_yaml(path.read_text(), str(path)) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of setting names to values")
        from_file = loaded
    elif config_file or env.get(CONFIG_ENV):
        raise FileNotFoundError(f"settings file {path} does not exist")
    fields = {f.name: f for f in setting_fields()}
    unknown = sorted(set(from_file) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(fields)}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in from_file:
            values[name] = _coerce(field, from_file[name], str(path))
        if field.metadata["env"] in env:
            values[name] = _coerce(field, env[field.metadata["env"]], field.metadata["env"])
    return Settings(**values)


def settings_table() -> str:
    """The Markdown table of every setting, as the README shows it."""
    rows = ["| variable | default | allowed | what it sets |", "| --- | --- | --- | --- |"]
    for field in setting_fields():
        default = field.default if field.default != "" else "(empty)"
        domain = field.metadata["domain"]
        allowed = str(domain) if domain is not None else ""
        rows.append(
            f"| `{field.metadata['env']}` | `{default}` | {allowed} | {field.metadata['doc']} |"
        )
    return "\n".join(rows)
