"""Prometheus and Grafana config stay true to the code.

Every metric name a dashboard or an alerting rule uses is one Foresight exports
(``connectors.prometheus.exported_names``); every scrape target is on the port the settings
default to; Prometheus' own ``promtool`` (installed by ``make test``) accepts the config and
the rules, and the rules carry the labels and annotations the dashboards and tools expect; and
every SQL query of the ClickHouse dashboard runs, with its
Grafana macros expanded, on a temporary chdb store made with the sink's own DDL and holding a
few records, so a renamed table or column breaks this test rather than a panel.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.clickhouse import ChdbStore
from connectors.clickhouse_schema import TABLE_FOR_SCHEMA, Consumed, create_tables
from connectors.prometheus import exported_names
from schemas.predictions import PredictionColumns
from streams.settings import Settings
from tests.schemas.samples import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
PIPELINE = GRAFANA / "foresight-pipeline.json"
PREDICTIONS = GRAFANA / "foresight-predictions.json"

# Series Prometheus makes itself for every target, not exported by Foresight.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# The setting whose default port each scrape job must use.
JOB_PORTS = {
    "foresight-worker": "worker_port",
    "foresight-sink": "sink_metrics_port",
    "foresight-gateway": "gateway_port",
    "foresight-ingest": "ingest_port",
    "foresight-api": "api_port",
    "foresight-quality": "quality_port",
    "foresight-retrain": "retrain_port",
}
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_CLAUSE = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression reads.

    Strings, label matchers (``{...}``), ranges and subqueries (``[...]``) and label lists
    (``by (...)``, ``on (...)``...) are cut out; what remains are identifiers, of which those
    followed by ``(`` are functions or aggregations and a few are keywords.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = _LABEL_CLAUSE.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def test_the_tokenizer_finds_series_and_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, table) (rate(a_bucket{job="x", le!="1"}'
        "[$__rate_interval]))) > 1 and on (table) b_total offset 5m / ignoring(code) "
        'c unless sum without (x) (d:recorded[5m:1m]) or vector(0) * label_replace(e, "x", '
        '"$1", "y", "(.*)")'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:recorded", "e"}


# -- the files ---------------------------------------------------------------------------------


def _yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path} is not a YAML mapping"
    return loaded


def _dashboard(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict), f"{path} is not a JSON object"
    return loaded


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in _panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for group in _yaml(PROMETHEUS / "foresight-rules.yml")["groups"]
        for rule in group["rules"]
    ]


def _promql() -> list[tuple[str, str]]:
    """``(where, expression)`` of every PromQL expression in the rules and the dashboard."""
    found = [(f"rule {r['alert']}", r["expr"]) for r in _rules()]
    found += [(f"panel {title!r}", t["expr"]) for title, t in _targets(_dashboard(PIPELINE))]
    return found


# -- PromQL names ------------------------------------------------------------------------------


def test_every_series_in_rules_and_dashboards_is_exported() -> None:
    exported = exported_names() | PROMETHEUS_OWN
    unknown = {
        (where, name)
        for where, expr in _promql()
        for name in metric_names(expr)
        if name not in exported
    }
    assert not unknown, f"not declared in connectors/prometheus.py: {sorted(unknown)}"


def test_the_pipeline_dashboard_shows_every_family_the_issue_lists() -> None:
    used = {
        name
        for _, target in _targets(_dashboard(PIPELINE))
        for name in metric_names(target["expr"])
    }
    wanted = {
        "foresight_events_in_total",
        "foresight_events_out_total",
        "foresight_dead_letters_total",
        "foresight_consumer_lag_records",
        "foresight_partition_stalled",
        "foresight_event_to_prediction_seconds_bucket",
        "foresight_model_inference_seconds_bucket",
        "foresight_model_precision",
        "foresight_model_recall",
        "foresight_model_mae",
        "foresight_drift_detected",
        "foresight_sink_rows_total",
        "foresight_sink_batch_rows_bucket",
        "foresight_sink_insert_seconds_bucket",
        "foresight_sink_errors_total",
        "foresight_gateway_clients",
        "foresight_gateway_queue_depth_messages",
        "foresight_gateway_dropped_total",
        "foresight_ingest_requests_total",
    }
    assert wanted <= used, f"missing from the pipeline dashboard: {sorted(wanted - used)}"


def test_job_selectors_name_scrape_jobs() -> None:
    jobs = set(JOB_PORTS)
    for where, expr in _promql():
        for op, value in re.findall(r'\bjob\s*(=~|=)\s*"([^"]*)"', expr):
            matched = {j for j in jobs if (re.fullmatch(value, j) if op == "=~" else value == j)}
            assert matched, f"{where}: job{op}{value!r} matches no scrape job of {sorted(jobs)}"


# -- prometheus.yml and the rules --------------------------------------------------------------


def test_scrape_targets_use_the_default_ports_of_the_settings() -> None:
    config = _yaml(PROMETHEUS / "prometheus.yml")
    defaults = Settings()
    ports: dict[str, set[int]] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        targets = [t for static in job["static_configs"] for t in static["targets"]]
        ports[job["job_name"]] = {int(t.rsplit(":", 1)[1]) for t in targets}
    assert set(ports) == set(JOB_PORTS)
    for job, field in JOB_PORTS.items():
        assert ports[job] == {getattr(defaults, field)}, f"{job} must scrape port {field}"
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file(), f"rule file {rule_file} is missing"


def test_rules_carry_what_the_dashboards_and_tools_expect() -> None:
    groups = _yaml(PROMETHEUS / "foresight-rules.yml")["groups"]
    assert groups and all(set(g) <= {"name", "interval", "rules"} for g in groups)
    assert len({g["name"] for g in groups}) == len(groups)
    names = [r["alert"] for r in _rules()]
    assert len(set(names)) == len(names), "alert names repeat"
    for rule in _rules():
        where = rule.get("alert", rule)
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, where
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), where
        assert re.fullmatch(r"(\d+[smhdwy])+", rule["for"]), f"{where}: for {rule['for']!r}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, where
        assert rule["annotations"]["summary"].strip(), where
        assert rule["annotations"]["description"].strip(), where


def test_every_scrape_job_has_a_rule_for_when_it_is_down() -> None:
    """A process Prometheus scrapes (the retrain controller too) raises an alert when it
    cannot be scraped: an ``up{job...} == 0`` rule selects its job."""
    watched: set[str] = set()
    for rule in _rules():
        found = re.fullmatch(r'up\{job\s*(=~|=)\s*"([^"]*)"\}\s*==\s*0', rule["expr"].strip())
        if found:
            op, value = found.groups()
            watched |= {
                j for j in JOB_PORTS if (re.fullmatch(value, j) if op == "=~" else value == j)
            }
    assert watched == set(JOB_PORTS)


@pytest.mark.parametrize(
    ("check", "path"),
    [("config", PROMETHEUS / "prometheus.yml"), ("rules", PROMETHEUS / "foresight-rules.yml")],
)
def test_promtool_accepts_the_config_and_the_rules(check: str, path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (deploy/local/system-packages)"
    result = subprocess.run(
        [promtool, "check", check, str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- Grafana -----------------------------------------------------------------------------------


def _provisioned() -> dict[str, dict[str, Any]]:
    """Provisioned data sources by uid."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml")):
        for source in _yaml(path)["datasources"]:
            found[source["uid"]] = source
    return found


@pytest.mark.parametrize(
    ("path", "kind"),
    [(PIPELINE, "prometheus"), (PREDICTIONS, "grafana-clickhouse-datasource")],
    ids=["pipeline", "predictions"],
)
def test_dashboards_are_well_formed_and_use_a_provisioned_source(path: Path, kind: str) -> None:
    board = _dashboard(path)
    assert board["uid"] == path.stem and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == kind
    assert _provisioned()[source["current"]["value"]]["type"] == kind
    panels = list(_panels(board))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": kind, "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        query = "expr" if kind == "prometheus" else "rawSql"
        assert all(t[query].strip() for t in panel["targets"]), panel["title"]


def test_compose_mounts_the_config_where_the_provisioning_expects_it() -> None:
    services = _yaml(ROOT / "docker-compose.yml")["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert grafana["image"].startswith("grafana/grafana:")
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = _yaml(GRAFANA / "provisioning" / "dashboards" / "foresight.yml")["providers"]
    assert mounts["./deploy/grafana"] == provider["options"]["path"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    hosts = {s["uid"]: s.get("url") or s["jsonData"]["host"] for s in _provisioned().values()}
    assert hosts == {
        "foresight-prometheus": "http://prometheus:9090",
        "foresight-clickhouse": "clickhouse",
    }


# -- the ClickHouse dashboard's SQL on the sink's tables --------------------------------------

RANGE_S = (24 * 3600, 3600)  # the dashboard range the macros are expanded for: -1 day to +1 h
VARIABLES = {"entity_like": "%", "entity": "web-1", "metric": "cpu_percent"}


def expand(sql: str, now_s: int) -> str:
    """``sql`` with the ClickHouse plugin's macros and the dashboard's variables filled in."""
    start, end = now_s - RANGE_S[0], now_s + RANGE_S[1]
    sql = re.sub(
        r"\$__timeFilter\(([^()]+)\)",
        lambda m: f"{m[1]} >= toDateTime({start}) AND {m[1]} <= toDateTime({end})",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\(([^()]+)\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL 60 second)",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({start})")
    sql = sql.replace("$__toTime", f"toDateTime({end})")
    sql = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: VARIABLES[m[1] or m[2]], sql)
    assert "$" not in sql, f"a macro or variable is left unexpanded:\n{sql}"
    return sql


def _recent(schema: str, event_ms: int, **changes: Any) -> dict[str, Any]:
    record = json.loads(json.dumps(SAMPLES[schema], default=lambda b: b.decode("latin-1")))
    time_field = "start_time" if schema == "label" else "event_time"
    record[time_field] = event_ms
    if schema == "alert":
        record["starts_at"] = event_ms
    return {**record, **changes}


def _sample_store(folder: Path, now_ms: int) -> ChdbStore:
    minute = 60_000
    forecast = _recent("prediction_batch", now_ms - 10 * minute, emitted_at=now_ms)
    risky = _recent("prediction_batch", now_ms - minute, prediction_id="web-1@risk")
    columns = PredictionColumns()
    for kind, score in (("FAILURE_RISK", 0.8), ("ANOMALY", 0.2)):
        columns.add(kind, ("seasonal", "1"), ["cpu_percent"], [600], [13.0], [score])
    risky.update(columns.record())
    records = {
        "metric_batch": [_recent("metric_batch", now_ms - 5 * minute)],
        "prediction_batch": [forecast, risky],
        "label": [_recent("label", now_ms)],
        "alert": [
            _recent("alert", now_ms - 2 * minute),
            _recent("alert", now_ms - minute, status="RESOLVED", ends_at=now_ms - minute),
        ],
    }
    store = ChdbStore(str(folder))
    create_tables(store, ttl_days=30)
    for schema, batch in records.items():
        consumed = Consumed()
        for offset, record in enumerate(batch):
            consumed.add(record, "t", 0, offset)
        spec = TABLE_FOR_SCHEMA[schema]
        store.insert_arrow(spec.name, spec.flatten(consumed))
    return store


def test_every_clickhouse_query_runs_on_the_sink_tables_and_finds_the_sample(
    tmp_path: Path,
) -> None:
    board = _dashboard(PREDICTIONS)
    queries = [(f"panel {title!r}", t["rawSql"]) for title, t in _targets(board)]
    queries += [
        (f"variable {v['name']}", v["query"])
        for v in board["templating"]["list"]
        if v["type"] == "query"
    ]
    assert len(queries) >= 8, "the predictions dashboard lost its queries"
    now_s = int(time.time())
    store = _sample_store(tmp_path / "chdb", now_s * 1000)
    answers = {}
    try:
        for where, sql in queries:
            try:
                answers[where] = store.query(expand(sql, now_s))
            except Exception as error:  # chdb raises its own error types
                pytest.fail(f"{where}: ClickHouse refused the query: {error}")
    finally:
        store.close()
    empty = [where for where, answer in answers.items() if not answer.rows]
    assert not empty, f"queries found nothing in the sample data: {empty}"
    forecast = answers["panel 'Forecast vs actual: ${entity} ${metric}'"]
    assert {row[1] for row in forecast.rows} == {"forecast", "actual"}
