"""``foresight demo`` (``make demo``): the whole product on one machine, for a minute.

It brings the local stack up, creates the topics, starts a worker, the ClickHouse sink and
the live gateway, replays an hour of simulated telemetry with injected incidents in
about a minute, and shows the alerts as they happen. When node_exporter and Prometheus are on
the machine (or can be installed), the machine itself is one more entity beside the simulated
fleet, its real memory, filesystems and CPU scraped by a Prometheus of the demo's own and
remote-written to an ingest of its own; it is reported apart, never scored against the
simulated incidents. The simulated agents' work includes workflows (``--workflows-per-min``),
a few with an injected pattern. It ends with a summary: samples processed, predictions made
(and the PredictionBatch records that carry them), the alerts scored against the incidents
injected (caught, missed, false alarms, lead time before each failure), and the workflow
pattern alerts against the patterns injected into the workflows started after the quiet
lead-in (caught, false alarms); ``--json`` prints it for scripts.

Each run uses a fresh worker group that starts at the end of the topics, so earlier runs'
records and state never leak into this one. The simulated hosts keep a clock of their own
that reads 04:00 at the replay's end (``--local-end-hour``), so a run's result does not depend
on the hour it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from connectors.clickhouse import QueryResult
from connectors.clickhouse_sink import SinkUnavailableError, ask_sink
from connectors.user_sql import SqlError
from deploy.local.host_telemetry import (
    NodeExporter,
    Prometheus,
    program,
    prometheus_config,
    remote_write,
    scrape_config,
)
from deploy.local.processes import ChildProcess, free_port
from deploy.local.stack import StackError, wait_until
from models.incident_report import (
    Incident,
    IncidentReport,
    PatternOutcome,
    match_alerts,
    match_workflow_alerts,
)
from models.workflows import ADVICE, WORKFLOW_RULES
from schemas.predictions import prediction_count, prediction_rows
from streams import topics
from streams.access import local_client_key, local_url, open_local
from streams.codecs import codec_for
from streams.commands.simulate import add_simulation_arguments, play, simulation_from_args
from streams.commands.sql import format_table, run_sql
from streams.commands.stack import create_topics, local_stack
from streams.demo_run import DemoRun
from streams.settings import Settings
from streams.worker_process import ForesightProcess, WorkerProcess

#: How long after the replay the demo waits for the worker to take in every record.
_CATCH_UP_S = 180.0
_WATCHED = (topics.PREDICTIONS, topics.ALERTS, topics.LABELS, topics.DEADLETTER)
_BOLD, _RED, _GREEN, _DIM, _RESET = "\033[1m", "\033[31m", "\033[32m", "\033[2m", "\033[0m"


@dataclass
class Observed:
    """What the demo saw come out of the pipeline."""

    prediction_batches: int = 0
    predictions: int = 0
    entities: set[str] = field(default_factory=set)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    last_output_s: float = field(default_factory=time.monotonic)
    this_machine: str = ""  # its entity, when the machine takes part
    machine_predictions: Counter[tuple[str, str]] = field(default_factory=Counter)


class Console:
    """Readable live lines on stderr (colour only on a terminal); silent with ``--json``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.colour = sys.stderr.isatty()

    def line(self, text: str, style: str = "") -> None:
        if self.quiet:
            return
        if self.colour and style:
            text = f"{style}{text}{_RESET}"
        print(text, file=sys.stderr, flush=True)


async def _watch(
    settings: Settings,
    group: str,
    seen: Observed,
    console: Console,
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Follow the output topics from their current end and print alerts as they come."""
    codec = codec_for(settings)
    consumer = settings.kafka().consumer(
        *(spec.name for spec in _WATCHED),
        group_id=f"{group}-watch",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not consumer.assignment():  # the group's first join assigns every partition
            await consumer.getmany(timeout_ms=200)
        for tp in consumer.assignment():
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for message in records:
                    seen.last_output_s = time.monotonic()
                    try:
                        _, record = codec.decode(message.value)
                    except ValueError:
                        continue
                    _observe(message.topic, record, seen, console)
    finally:
        await consumer.stop()


def _observe(topic: str, record: dict[str, Any], seen: Observed, console: Console) -> None:
    if topic == topics.PREDICTIONS.name:
        seen.prediction_batches += 1
        seen.predictions += prediction_count(record)
        seen.entities.add(record["entity"])
        seen.latencies_ms.append(record["latency_ms"])
        if record["entity"] == seen.this_machine:
            seen.machine_predictions.update(
                (p["metric"], p["kind"]) for p in prediction_rows(record)
            )
    elif topic == topics.ALERTS.name:
        seen.alerts.append(record)
        clock = time.strftime("%H:%M", time.gmtime(record["event_time"] / 1000))
        if record["status"] == "FIRING":
            console.line(f"  {clock}  FIRING    {record['severity']:<8} {record['summary']}", _RED)
        else:
            console.line(f"  {clock}  resolved  {record['rule']} on {record['entity']}", _GREEN)
    elif topic == topics.LABELS.name:
        seen.labels.append(record)
        if record["kind"] == "FAILURE":
            clock = time.strftime("%H:%M", time.gmtime(record["start_time"] / 1000))
            console.line(
                f"  {clock}  FAILURE   {record['entity']}: {record['incident_type']} "
                "(ground truth)",
                _BOLD,
            )
    else:
        seen.dead_letters[record["error_kind"]] += 1


async def _run(
    args: argparse.Namespace,
    settings: Settings,
    worker: WorkerProcess,
    console: Console,
    this_machine: str,
) -> dict[str, Any]:
    simulation, duration = simulation_from_args(args)
    seen = Observed(this_machine=this_machine)
    ready, stop = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(_watch(settings, worker.group, seen, console, ready, stop))
    await asyncio.wait_for(ready.wait(), timeout=60)
    console.line(
        f"replaying {duration / 3600:.1f} h of telemetry from {args.hosts} hosts and "
        f"{args.agents} agents at {args.speed:g}x, with {len(simulation.incidents)} "
        f"incidents injected and {args.workflows_per_min:g} workflows a minute",
        _BOLD,
    )
    started = time.monotonic()

    def progress(counts: Counter[str], elapsed: float) -> None:
        firing = {a["dedup_key"] for a in seen.alerts if a["status"] == "FIRING"} - {
            a["dedup_key"] for a in seen.alerts if a["status"] == "RESOLVED"
        }
        console.line(
            f"  [{elapsed:5.1f}s] {counts['samples']:>9,} samples in   "
            f"{seen.predictions:>9,} predictions out   {len(firing)} alerts firing",
            _DIM,
        )

    counts = await play(settings, simulation.events(duration), args.speed, progress)
    # Wait until the worker has taken in every record produced (and every record it sent
    # itself, workflows' events among them), then for outputs to settle.
    deadline = time.monotonic() + _CATCH_UP_S
    produced = counts[topics.METRICS.name]
    caught_up = False
    while time.monotonic() < deadline:
        caught_up = _caught_up(worker, counts)
        if caught_up and time.monotonic() - seen.last_output_s > 3:
            break
        await asyncio.sleep(0.5)
    if not caught_up:
        console.line(
            f"the worker had not taken in every record {_CATCH_UP_S:.0f} s after the replay: "
            "the summary leaves out what it had not processed yet",
            _BOLD,
        )
    stop.set()
    await watcher
    incidents = [
        Incident(i.entity, str(i.incident_type), i.start_ms, i.end_ms, i.failure_ms)
        for i in simulation.incidents
    ]
    report = _scored(incidents, seen)
    judged = simulation.judged_workflows(duration, args.quiet_s)
    patterns = match_workflow_alerts(judged, seen.alerts)
    latencies = sorted(seen.latencies_ms) or [0.0]
    return {
        "simulated_s": duration,
        "wall_s": round(time.monotonic() - started, 1),
        "worker_caught_up": caught_up,
        "samples_produced": counts["samples"],
        "metric_batches_produced": produced,
        "metric_batches_processed": int(
            worker.metric(f'foresight_events_in_total{{topic="{topics.METRICS.name}"}}')
        ),
        "agent_events_produced": counts[topics.AGENT_EVENTS.name],
        "prediction_batches": seen.prediction_batches,
        "predictions": seen.predictions,
        "entities_predicted": len(seen.entities),
        "latency_ms_p50": latencies[len(latencies) // 2],
        "latency_ms_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "alerts": len(seen.alerts),
        "dead_letters": dict(seen.dead_letters),
        "report": report.as_dict(),
        "workflows": _workflow_summary(
            sum(1 for _ in simulation.workflows(duration)), len(judged), patterns, seen
        ),
        "this_machine": _machine_summary(seen) if this_machine else None,
        "_report": report,
        "_alert_ids": {a["alert_id"] for a in seen.alerts},
    }


def _caught_up(worker: WorkerProcess, produced: Counter[str]) -> bool:
    """Whether the worker has taken in the records the demo ``produced`` of each topic, and
    those it sent to its internal topic."""
    internal = topics.routing_stats(dataclasses.replace(worker.settings, worker_id=worker.group))
    count = worker.metric
    return all(
        count(f'foresight_events_in_total{{topic="{topic}"}}') >= produced[topic]
        for topic in (topics.METRICS.name, topics.AGENT_EVENTS.name)
    ) and count(f'foresight_events_in_total{{topic="{internal.name}"}}') >= count(
        f'foresight_events_out_total{{topic="{internal.name}"}}'
    )


def _scored(incidents: list[Incident], seen: Observed) -> IncidentReport:
    """The simulated incidents against the alerts; this machine's alerts are its own (no
    incident was injected there), and the workflows' pattern alerts and advice are about
    workflows, not hosts or agents: both are reported apart rather than called false
    alarms."""
    simulated = [
        a
        for a in seen.alerts
        if a["entity"] != seen.this_machine and a["rule"] not in WORKFLOW_RULES
    ]
    return match_alerts(incidents, simulated, lead_window_ms=0)


def _workflow_summary(
    started: int, judged: int, patterns: list[PatternOutcome], seen: Observed
) -> dict[str, Any]:
    """The workflows started and judged, each pattern alert against the patterns injected,
    and the best-practice advice standing at the end (published, not retracted since)."""
    advice: dict[str, str] = {}
    for alert in seen.alerts:
        if alert["rule"] == ADVICE and alert["status"] == "FIRING":
            advice[alert["entity"]] = alert["summary"]
        elif alert["rule"] == ADVICE:
            advice.pop(alert["entity"], None)
    return {
        "started": started,
        "judged": judged,
        "patterns": {
            o.rule: {"injected": o.injected, "caught": o.caught, "alerted": o.alerted,
                     "false_alarms": o.false_alarms}
            for o in patterns
        },
        "advice": list(advice.values()),
    }  # fmt: skip


def _print_workflows(workflows: dict[str, Any]) -> None:
    print(
        f"  workflows       {workflows['started']:,} started, {workflows['judged']:,} judged "
        "(started after the quiet lead-in, their pattern played before the end)"
    )
    for rule, o in workflows["patterns"].items():
        print(
            f"    {rule:<22} {o['caught']} of {o['injected']} injected caught, "
            f"{o['false_alarms']} false alarms"
        )
    for summary in workflows["advice"]:
        print(f"    advice                 {summary}")


def _machine_summary(seen: Observed) -> dict[str, Any]:
    """What the pipeline made of this machine: its signals, predictions by kind, and its own
    alerts (real ones: no incident was injected there)."""
    kinds: Counter[str] = Counter()
    signals: dict[str, list[str]] = {}
    for (metric, kind), count in sorted(seen.machine_predictions.items()):
        kinds[kind] += count
        signals.setdefault(metric, []).append(kind)
    return {
        "entity": seen.this_machine,
        "signals": signals,
        "predictions": dict(kinds),
        "alerts": [
            a["summary"]
            for a in seen.alerts
            if a["entity"] == seen.this_machine and a["status"] == "FIRING"
        ],
    }


def _print_machine(machine: dict[str, Any]) -> None:
    signals = machine["signals"]
    shown = [s for s in signals if s.startswith(("memory", "filesystem_used", "cpu_used"))]
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in machine["predictions"].items())
    print(
        f"  this machine    {machine['entity']}: {len(signals)} signals"
        f"{' (' + ', '.join(shown) + ', ...)' if shown else ''}, "
        f"predictions: {kinds or 'none yet'}; "
        f"{len(machine['alerts'])} alerts"
    )
    for summary in machine["alerts"]:
        print(f"    alert                  {summary}")


def _print_summary(summary: dict[str, Any], report: IncidentReport) -> None:
    print()
    print(
        f"{_BOLD if sys.stdout.isatty() else ''}Foresight demo summary"
        f"{_RESET if sys.stdout.isatty() else ''}"
    )
    print(f"  simulated       {summary['simulated_s'] / 3600:.1f} h in {summary['wall_s']} s")
    if not summary.get("worker_caught_up", True):
        print(
            f"  behind          the worker had not taken in every record {_CATCH_UP_S:.0f} s "
            "after the replay; what it had not processed is left out"
        )
    print(
        f"  processed       {summary['samples_produced']:,} metric samples in "
        f"{summary['metric_batches_processed']:,} batches, "
        f"{summary['agent_events_produced']:,} agent events"
    )
    print(
        f"  predictions     {summary['predictions']:,} in {summary['prediction_batches']:,} "
        f"batches for {summary['entities_predicted']} entities "
        f"(latency p50 {summary['latency_ms_p50']:.0f} ms, p99 {summary['latency_ms_p99']:.0f} ms)"
    )
    print(
        f"  alerts          {summary['alerts']} state changes; "
        f"{report.caught} of {len(report.outcomes)} incidents caught, "
        f"{report.missed} missed, {len(report.false_alarms)} false alarms"
    )
    for o in report.outcomes:
        if o.caught:
            lead = f", {o.lead_time_s / 60:.1f} min before the failure" if o.lead_time_s else ""
            verdict = f"caught by {o.rule}{lead}"
        else:
            verdict = "missed"
        print(f"    {o.incident_type:<22} {o.entity:<10} {verdict}")
    for alarm in report.false_alarms:
        print(f"    false alarm            {alarm['entity']:<10} {alarm['rule']}")
    if summary.get("workflows"):
        _print_workflows(summary["workflows"])
    if summary.get("this_machine"):
        _print_machine(summary["this_machine"])


def _print_clickhouse(tables: dict[str, QueryResult], stored: int, batches: int) -> None:
    """The run's tables from ClickHouse, saying so when the sink had not stored all of it."""
    if stored < batches:
        print(
            f"\n  ClickHouse holds {stored:,} of the run's {batches:,} prediction batches after "
            "2 minutes: the sink is behind on the predictions topic (records written there "
            "before this run come first). The tables below are partial."
        )
    for title, result in tables.items():
        print(f"\n  ClickHouse: {title}")
        print("\n".join(f"    {line}" for line in format_table(result).splitlines()))


def _sink_answers(settings: Settings) -> bool:
    try:
        ask_sink(
            settings.sink_sql_port, "SELECT 1", local_client_key(settings), 2.0, settings.tls()
        )
    except (SinkUnavailableError, SqlError):
        return False
    return True


def _gateway_url(settings: Settings) -> str:
    return local_url(settings, settings.gateway_port, "")


def _answers(settings: Settings, url: str) -> bool:
    """Whether the Foresight server at ``url`` (of this machine) answers, over https with the
    settings' TLS."""
    try:
        with open_local(settings, url, 2.0):
            return True
    except OSError:
        return False


def _gateway_answers(settings: Settings) -> bool:
    return _answers(settings, f"{_gateway_url(settings)}/health")


def _serving(settings: Settings, logs: Path) -> list[ForesightProcess]:
    """Start the ClickHouse sink and the gateway unless they already run; wait for them."""
    started = []
    if not settings.clickhouse_url and not _sink_answers(settings):
        started.append(ForesightProcess(["sink", "clickhouse"], logs / "demo-sink.log", {}))
    if not _gateway_answers(settings):
        started.append(ForesightProcess(["gateway"], logs / "demo-gateway.log", {}))
    for process in started:
        process.start()
    deadline = time.monotonic() + 90
    while not ((settings.clickhouse_url or _sink_answers(settings)) and _gateway_answers(settings)):
        if time.monotonic() > deadline or any(not p.alive() for p in started):
            if local_client_key(settings) is None:
                raise AssertionError(
                    f"no API key to ask the sink with: set FORESIGHT_API_KEY to a key with the "
                    f"read role (`foresight keys create demo --roles read`), or move "
                    f"{settings.keys_file} away so the servers make a key on their first start"
                )
            raise AssertionError(f"the sink or the gateway did not start; see {logs}")
        time.sleep(0.5)
    return started


def _this_machine(
    settings: Settings, folder: Path, console: Console
) -> tuple[list[ChildProcess], int | None]:
    """Start node_exporter, a Prometheus scraping it every 5 s and an ingest it remote-writes
    to, on free ports with their files in ``folder``; the entity is the host name. The
    processes and the ingest's port; none (and the reason on the console) when the programs
    cannot be had or do not start."""
    key = local_client_key(settings)
    try:
        node_exporter, prometheus = (
            program(p, console.line) for p in ("node_exporter", "prometheus")
        )
    except StackError as error:
        console.line(f"this machine is left out: {error}", _DIM)
        return [], None
    if key is None:
        console.line("this machine is left out: no API key for its Prometheus to write with", _DIM)
        return [], None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    key_file = folder / "remote-write.key"
    key_file.touch(mode=0o600)
    key_file.write_text(key)
    ingest_port = free_port()
    ingest_url = local_url(settings, ingest_port, "")
    ingest = ForesightProcess(
        ["ingest"], folder / "ingest.log", {"FORESIGHT_INGEST_PORT": str(ingest_port)}
    )
    node = NodeExporter(node_exporter, folder / "node_exporter")
    entity = socket.gethostname()
    config = prometheus_config(
        [scrape_config("node", f"127.0.0.1:{node.port}", entity, interval_s=5)],
        [remote_write(f"{ingest_url}/api/v1/write", key_file, ca_file=settings.tls_ca)],
    )
    scraper = Prometheus(prometheus, folder / "prometheus", config)
    started: list[ChildProcess] = [ingest.start(), node.start(), scraper.start()]
    try:
        node.ready()
        scraper.ready()
        health = partial(_answers, settings, f"{ingest_url}/health")
        wait_until("foresight ingest", health, 60, ingest.log)
    except StackError as error:
        for process in started:
            process.stop()
        console.line(f"this machine is left out: {error}", _DIM)
        return [], None
    console.line(
        f"this machine joins as {entity}: node_exporter -> Prometheus -> foresight ingest", _BOLD
    )
    return started, ingest_port


_SQL_SUMMARY = {
    "predictions by kind": (
        "SELECT kind, count() AS predictions, round(avg(score), 3) AS mean_score "
        "FROM predictions WHERE emitted_at >= fromUnixTimestamp64Milli({since}) "
        "GROUP BY kind ORDER BY kind"
    ),
    "alerts by rule": (
        "SELECT rule, status, count() AS alerts FROM alerts "
        "WHERE alert_id IN ({alert_ids}) GROUP BY rule, status ORDER BY rule, status"
    ),
    "entities most at risk": (
        "SELECT entity, round(max(score), 3) AS failure_risk FROM predictions "
        "WHERE kind = 'FAILURE_RISK' AND model != 'failure_risk_online' "
        "AND emitted_at >= fromUnixTimestamp64Milli({since}) "
        "GROUP BY entity ORDER BY failure_risk DESC LIMIT 5"
    ),
}


def _sql_summary(
    settings: Settings, started_ms: int, batches: int, alert_ids: set[str]
) -> tuple[int, dict[str, QueryResult]]:
    """This run's predictions (emitted since it started) and alerts, from ClickHouse, once
    the sink has stored all ``batches`` PredictionBatches the run produced (or after 2
    minutes); also how many it had stored."""
    since = f"fromUnixTimestamp64Milli({started_ms})"
    count = f"SELECT uniqExact(prediction_id) FROM predictions WHERE emitted_at >= {since}"
    deadline = time.monotonic() + 120
    stored = int(run_sql(count, settings).rows[0][0])
    while stored < batches and time.monotonic() < deadline:
        time.sleep(1)
        stored = int(run_sql(count, settings).rows[0][0])
    quoted = ", ".join("'" + a.replace("'", "''") + "'" for a in sorted(alert_ids)) or "''"
    return stored, {
        title: run_sql(sql.format(since=started_ms, alert_ids=quoted), settings)
        for title, sql in _SQL_SUMMARY.items()
    }


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        simulation_from_args(args)  # the arguments checked before anything starts
    except ValueError as error:
        print(f"foresight demo: {error}", file=sys.stderr)
        return 2
    console = Console(quiet=args.json)
    stack = local_stack(settings, quiet=args.json)
    try:
        console.line("bringing the local stack up", _BOLD)
        stack.up(timeout=180)
    except StackError as error:
        print(f"foresight demo: {error}", file=sys.stderr)
        return 1
    create_topics(settings)
    logs = Path(settings.stack_dir) / "logs"
    worker = WorkerProcess(settings, f"foresight-demo-{int(time.time())}", logs / "demo-worker.log")
    services: list[ChildProcess] = []
    try:
        console.line("starting the worker, the ClickHouse sink and the live gateway", _BOLD)
        services = [*_serving(settings, logs)]
        worker.start()
        run = DemoRun(os.getpid(), worker.port, worker.group)
        run.write(settings.stack_dir)
        asyncio.run(worker.ready())
        machine, ingest_port = (
            ([], None)
            if args.no_this_machine
            else _this_machine(settings, logs / "demo-this-machine", console)
        )
        services += machine
        dataclasses.replace(run, ingest_port=ingest_port).write(settings.stack_dir)
        console.line(
            f"watch it live: {_gateway_url(settings)}/?api_key={local_client_key(settings)}",
            _BOLD,
        )
        started_ms = int(time.time() * 1000)
        this_machine = socket.gethostname() if machine else ""
        summary = asyncio.run(_run(args, settings, worker, console, this_machine))
        console.line("waiting for ClickHouse to store the run", _DIM)
        stored, tables = _sql_summary(
            settings, started_ms, summary["prediction_batches"], summary.pop("_alert_ids")
        )
    except (AssertionError, SqlError) as error:
        print(f"foresight demo: {error}", file=sys.stderr)
        return 1
    finally:
        DemoRun.remove(settings.stack_dir)
        worker.stop()
        for process in services:
            process.stop()
    report: IncidentReport = summary.pop("_report")
    summary["clickhouse"] = {title: result.as_dicts() for title, result in tables.items()}
    summary["clickhouse_stored_batches"] = stored
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    _print_summary(summary, report)
    _print_clickhouse(tables, stored, summary["prediction_batches"])
    print(
        '\n  query it yourself: foresight sql "SELECT rule, status, count() FROM alerts '
        'GROUP BY rule, status"'
    )
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole product on the local stack for a minute and summarise"
    )
    # The simulated hosts' clock ends the replay at 04:00 whenever it runs: a fleet whose
    # business hours start within the replayed 1.5 h (a run at 09:00 UTC) ramps up with no
    # earlier day to learn it from, and raised 2 or 3 false alarms.
    add_simulation_arguments(
        parser, duration=5400.0, speed=90.0, quiet_s=1800.0, local_end_hour=4.0
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--no-this-machine",
        action="store_true",
        help="leave this machine (node_exporter through Prometheus) out of the demo",
    )
    parser.set_defaults(func=_demo)
