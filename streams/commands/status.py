"""``foresight status``: one look at the whole of Foresight, for an operator.

It reports, each from the place that knows it:

* services: the local stack's health (Kafka, Connect, Redis, ClickHouse), and which Foresight
  processes answer on their ports (worker, sink, gateway, ingest);
* lag: per consumer group and topic, records between the group's committed offsets and the
  end of each partition (the worker's and the sink's groups, a running demo's worker's, plus
  any ``--group``);
* throughput: records per second in and out per topic, from two samples of the worker's
  ``/metrics`` counters about a second apart;
* not modelled: what the worker's signal stage and the remote_write door dropped since they
  started, by reason (and, for a signal, the profile and rule that made it), from their
  ``/metrics`` counters; the dead letters name each series;
* firing alerts: from the gateway's read API when a gateway runs, else by replaying the
  ``alerts`` topic through the gateway's own fold (:class:`models.alerts.FiringAlerts`);
* models in production: from the model registry (``models.registry``), when this build has it.

Nothing here writes anywhere: no group is joined and no offset is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka_clients import KafkaConfig
from models.alerts import FiringAlerts
from schemas.codec import Codec, DeadLetter, Message
from schemas.field_rules import one_line
from streams.access import local_client_key, local_url, open_local
from streams.codecs import codec_for
from streams.commands.sink import DEFAULT_GROUP as SINK_GROUP
from streams.commands.stack import local_stack
from streams.commands.tail import TailError, topic_partitions
from streams.demo_run import DemoRun
from streams.settings import Settings
from streams.topics import ALERTS

Report = dict[str, Any]
_HTTP_TIMEOUT_S = 2.0
_THROUGHPUT_COUNTERS = ("foresight_events_in_total", "foresight_events_out_total")


def _get(settings: Settings, url: str, headers: Mapping[str, str] | None = None) -> bytes | None:
    """The body at ``url`` when it answers 200, else ``None`` (nothing listening, or an error)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with open_local(settings, request, _HTTP_TIMEOUT_S) as response:
            body: bytes = response.read()
            return body
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return None


def process_urls(settings: Settings) -> dict[str, str]:
    """Where each Foresight process answers when it runs: a page it always serves; while a
    ``foresight demo`` runs, its own worker and ingest too (``demo worker``, ``demo
    ingest``)."""
    demo = DemoRun.read(settings.stack_dir)
    ports = [
        ("worker", settings.worker_port),
        ("demo worker", demo.worker_port if demo else None),
        ("sink", settings.sink_metrics_port),
        ("gateway", settings.gateway_port),
        ("ingest", settings.ingest_port),
        ("demo ingest", demo.ingest_port if demo else None),
        ("quality", settings.quality_port),
        ("retrain", settings.retrain_port),
    ]
    return {name: local_url(settings, port, "/metrics") for name, port in ports if port is not None}


def processes(settings: Settings) -> list[Report]:
    """Which Foresight processes answer on this machine's configured ports."""
    return [
        {"name": name, "running": _get(settings, url) is not None, "url": url}
        for name, url in process_urls(settings).items()
    ]


def serving_url(found: list[Report], name: str) -> str:
    """Where the ``name`` process (``worker``, ``ingest``) whose counters to read answers,
    from :func:`processes`' report: the configured one, or a running demo's when only that
    one answers."""
    by_name = {p["name"]: p for p in found}
    demo = by_name.get(f"demo {name}")
    if demo is not None and demo["running"] and not by_name[name]["running"]:
        return str(demo["url"])
    return str(by_name[name]["url"])


def counters(
    text: str, names: tuple[str, ...], label: str = "topic"
) -> dict[tuple[str, str], float]:
    """``{(series name, value of label): value}`` of the counters ``names`` in a /metrics
    page; ``label`` may name several labels, comma-separated, whose values are joined by
    ``/``."""
    found: dict[tuple[str, str], float] = {}
    keys = label.split(",")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                key = "/".join(sample.labels.get(k, "") for k in keys)
                found[(sample.name, key)] = sample.value
    return found


def throughput(settings: Settings, url: str, interval_s: float = 1.0) -> Report:
    """Records per second in and out per topic, from two samples of the counters of the
    worker at ``url``."""
    first, started = _get(settings, url), time.monotonic()
    if first is None:
        return {"worker_running": False, "note": f"worker not running (nothing at {url})"}
    time.sleep(interval_s)
    second, elapsed = _get(settings, url), time.monotonic() - started
    if second is None:
        return {"worker_running": False, "note": f"worker stopped answering at {url}"}
    before = counters(first.decode(), _THROUGHPUT_COUNTERS)
    after = counters(second.decode(), _THROUGHPUT_COUNTERS)
    rates: dict[str, dict[str, float]] = {"in": {}, "out": {}}
    for (name, topic), value in sorted(after.items()):
        direction = "in" if name == "foresight_events_in_total" else "out"
        rates[direction][topic] = round((value - before.get((name, topic), 0.0)) / elapsed, 1)
    return {"worker_running": True, "interval_s": round(elapsed, 2), "records_per_s": rates}


_NOT_MODELLED = {
    "worker": ("foresight_signals_dropped_total", "reason,profile,rule"),
    "ingest": ("foresight_ingest_samples_dropped_total", "reason"),
}


def not_modelled(settings: Settings, found: list[Report]) -> Report:
    """Series and signals the worker and the ingest door (those of :func:`serving_url`)
    dropped since they started, by reason (``reason/profile/rule`` for the worker's
    signals), from their counters."""
    report: Report = {}
    for process, (name, labels) in _NOT_MODELLED.items():
        body = _get(settings, serving_url(found, process))
        if body is None:
            report[process] = {"running": False}
            continue
        dropped = counters(body.decode(), (name,), labels)
        report[process] = {
            "running": True,
            "dropped": {key.rstrip("/"): v for (_, key), v in sorted(dropped.items()) if v},
        }
    return report


async def consumer_lag(kafka: KafkaConfig, groups: list[str]) -> list[Report]:
    """Per group and topic: committed offsets against end offsets, summed over partitions.

    A group with no committed offsets is reported as such (not started, or expired).
    """
    admin = kafka.admin(client_id="foresight-status")
    await admin.start()
    try:
        known = {entry[0] for entry in await admin.list_consumer_groups()}
        committed = {
            group: await admin.list_consumer_group_offsets(group)
            for group in groups
            if group in known
        }
    finally:
        await admin.close()
    partitions = sorted({tp for offsets in committed.values() for tp in offsets})
    ends: dict[TopicPartition, int] = {}
    if partitions:
        consumer = kafka.consumer(group_id=None)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
    rows: list[Report] = []
    for group in groups:
        offsets = committed.get(group)
        if not offsets:
            note = "no committed offsets (not started yet, or its offsets expired)"
            rows.append({"group": group, "topic": None, "lag": None, "note": note})
            continue
        by_topic: dict[str, dict[int, int]] = defaultdict(dict)
        for tp, meta in offsets.items():
            if meta.offset >= 0:
                by_topic[tp.topic][tp.partition] = max(0, ends.get(tp, meta.offset) - meta.offset)
        for topic, lags in sorted(by_topic.items()):
            rows.append(
                {
                    "group": group,
                    "topic": topic,
                    "lag": sum(lags.values()),
                    "partitions": {str(p): lag for p, lag in sorted(lags.items())},
                }
            )
    return rows


async def replay_firing(kafka: KafkaConfig, topic: str, codec: Codec) -> list[Report]:
    """Alerts firing as of the end of ``topic``, replayed from its oldest retained record."""
    # The reset policy agrees with the seek: a fresh assignment resets by it, concurrently.
    consumer = kafka.consumer(group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    alerts = FiringAlerts()
    try:
        partitions = await topic_partitions(kafka, topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        left = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset >= ends[tp]:
                        break
                    message = Message(m.topic, m.partition, m.offset, m.key, m.value)
                    record = codec.decode_message(message, ALERTS.schema)
                    if not isinstance(record, DeadLetter):
                        alerts.apply(record)
            left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return alerts.firing()


def firing_alerts(settings: Settings, topic: str) -> Report:
    """Firing alerts from the gateway when it runs, else from the alerts topic itself."""
    urls = process_urls(settings)
    key = local_client_key(settings)
    if topic == ALERTS.name and key and _get(settings, urls["gateway"]) is not None:
        api = urls["gateway"].removesuffix("/metrics") + "/api/alerts/firing"
        body = _get(settings, api, {"X-API-Key": key})
        if body is not None:
            alerts: list[Report] = json.loads(body)
            return {"source": f"gateway {api}", "alerts": alerts}
    replayed = asyncio.run(replay_firing(settings.kafka(), topic, codec_for(settings)))
    return {"source": f"replay of topic {topic}", "alerts": replayed}


def production_models(settings: Settings) -> Report:
    """The version of each registered model in production, from the model registry.

    Imported lazily, so that status still works, with a note, on a build or a checkout whose
    registry is missing; a model whose version cannot be read is listed with the reason.
    """
    try:
        registry_module = importlib.import_module("models.registry")
    except ModuleNotFoundError as error:
        if error.name != "models.registry":
            raise
        return {"available": False, "note": "this build has no model registry (models/registry.py)"}
    registry = registry_module.ModelRegistry(settings.model_registry_url)
    production: dict[str, Report] = {}
    try:
        names = registry.models()
    except OSError as error:
        return {
            "available": False,
            "note": f"model registry at {settings.model_registry_url} unreadable: {error}",
        }
    for name in names:
        try:
            found = registry.production(name)
        except registry_module.RegistryError as error:
            production[name] = {"version": None, "error": str(error)}
            continue
        production[name] = (
            {"version": None, "note": "no version in production"}
            if found is None
            else {"version": found.version, "kind": found.kind, "created_at": found.created_at}
        )
    return {"available": True, "url": settings.model_registry_url, "production": production}


def collect(settings: Settings, groups: list[str], alerts_topic: str) -> Report:
    """Everything ``foresight status`` reports, as one JSON-ready mapping."""
    services = [s.as_dict() for s in local_stack(settings, quiet=True).status()]
    report: Report = {
        "healthy": all(s["healthy"] for s in services),
        "services": services,
        "processes": processes(settings),
    }
    try:
        report["lag"] = asyncio.run(consumer_lag(settings.kafka(), groups))
    except KafkaError as error:
        report["lag"] = {"error": settings.kafka().failure(error)}
    report["throughput"] = throughput(settings, serving_url(report["processes"], "worker"))
    report["not_modelled"] = not_modelled(settings, report["processes"])
    try:
        report["firing_alerts"] = firing_alerts(settings, alerts_topic)
    except (KafkaError, TailError) as error:
        reason = settings.kafka().failure(error) if isinstance(error, KafkaError) else str(error)
        report["firing_alerts"] = {"error": f"cannot read {alerts_topic}: {reason}"}
    report["models"] = production_models(settings)
    return report


def format_report(report: Report) -> str:
    """The report as text for a terminal."""
    out = ["services:"]
    named = [*report["services"], *report["processes"]]
    width = max((len(n["name"]) for n in named), default=0)
    for s in report["services"]:
        out.append(f"  {'ok  ' if s['healthy'] else 'DOWN'} {s['name']:<{width}} {s['detail']}")
    for p in report["processes"]:
        out.append(f"  {'up  ' if p['running'] else '-   '} {p['name']:<{width}} {p['url']}")
    out.append("consumer lag:")
    lag = report["lag"]
    if isinstance(lag, dict):
        out.append(f"  {lag['error']}")
    rows = lag if isinstance(lag, list) else []
    group_width = max((len(row["group"]) for row in rows), default=0)
    topic_width = max((len(row["topic"] or "") for row in rows), default=0)
    for row in rows:
        if row["topic"] is None:
            out.append(f"  {row['group']:<{group_width}} {row['note']}")
        else:
            out.append(
                f"  {row['group']:<{group_width}} {row['topic']:<{topic_width}} {row['lag']:>10,}"
            )
    out.append("throughput (records/s):")
    flow = report["throughput"]
    if not flow["worker_running"]:
        out.append(f"  {flow['note']}")
    else:
        rates = flow["records_per_s"]
        width = max((len(topic) for by_topic in rates.values() for topic in by_topic), default=0)
        for direction, by_topic in rates.items():
            for topic, rate in by_topic.items():
                out.append(f"  {direction:<4} {topic:<{width}} {rate:>10,.1f}")
    out.append("not modelled since start (reason[/profile/rule]; the dead letters name them):")
    for process, found in report["not_modelled"].items():
        if not found["running"]:
            out.append(f"  {process:<7} not running")
        elif not found["dropped"]:
            out.append(f"  {process:<7} nothing")
        for key, count in found.get("dropped", {}).items():
            out.append(f"  {process:<7} {key:<48} {count:>12,.0f}")
    firing = report["firing_alerts"]
    if "error" in firing:
        out.append(f"firing alerts: {firing['error']}")
    else:
        out.append(f"firing alerts: {len(firing['alerts'])} (from {firing['source']})")
        for a in firing["alerts"]:
            line = f"  {a['severity']:<8} {a['entity']:<20} {a['rule']}: {a['summary']}"
            out.append(one_line(line))
    models = report["models"]
    if not models["available"]:
        out.append(f"models: {models['note']}")
    else:
        out.append(f"models in production ({models['url']}):")
        if not models["production"]:
            out.append("  none registered")
        for name, entry in models["production"].items():
            detail = entry.get("error") or entry.get("note") or f"v{entry['version']}"
            out.append(f"  {name:<28} {detail}")
    return "\n".join(out)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the report; exit 1 when a stack service is unhealthy."""
    demo = DemoRun.read(settings.stack_dir)
    demo_group = [demo.worker_group] if demo else []
    groups = list(dict.fromkeys([settings.worker_id, *demo_group, SINK_GROUP, *args.group]))
    report = collect(settings, groups, args.alerts_topic)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["healthy"] else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``status`` command."""
    parser = subparsers.add_parser(
        "status",
        help="services, consumer lag, throughput, firing alerts and production models at once",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        help="another consumer group whose lag to report (repeatable)",
    )
    parser.add_argument(
        "--alerts-topic", default=ALERTS.name, help="topic to replay when no gateway runs"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_status)
