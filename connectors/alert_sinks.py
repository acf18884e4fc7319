"""The Kafka Connect HTTP sinks that deliver alerts: load a target's config, fill it, apply it.

One JSON file per target in ``connectors/kafka-connect/`` (``{"name": ..., "config": {...}}``,
the body ``POST /connectors`` takes) holds the placeholders ``${url}`` and, for PagerDuty,
``${routing_key}``. :func:`sink_config` fills them from parameters, so no endpoint or secret is
stored in the repository; :func:`ensure_sink_topics` creates the topics they read and write.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.alert_payloads import TARGETS
from connectors.kafka_admin import TopicRequest, ensure_topics

CONFIG_DIR = Path(__file__).parent / "kafka-connect"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


@dataclass(frozen=True)
class SinkConfig:
    """A filled connector: its name, the topic it reads and the config to PUT."""

    target: str
    name: str
    topic: str
    config: dict[str, str]


def _check_url(target: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{target}: URL {url!r} is not an absolute http:// or https:// URL; "
            "give the full endpoint, e.g. https://hooks.example.com/foresight"
        )


def _document(target: str) -> dict[str, Any]:
    if target not in TARGETS:
        raise ValueError(f"unknown alert target {target!r}; known: {sorted(TARGETS)}")
    document: dict[str, Any] = json.loads((CONFIG_DIR / TARGETS[target].connector_file).read_text())
    return document


def sink_name(target: str) -> str:
    """The default connector name of ``target`` (``foresight-alerts-<target>``)."""
    name: str = _document(target)["name"]
    return name


def sink_config(
    target: str,
    url: str,
    routing_key: str = "",
    topic: str | None = None,
    name: str | None = None,
) -> SinkConfig:
    """The connector of ``target`` with its URL (and PagerDuty routing key) filled in.

    ``topic`` and ``name`` override the defaults (tests use unique ones per run).
    """
    document = _document(target)
    _check_url(target, url)
    values = {"${url}": url, "${routing_key}": routing_key}
    config: dict[str, str] = {}
    for key, value in document["config"].items():
        if value in values:
            if not values[value]:
                raise ValueError(
                    f"{target}: {key} needs a value for {value}; pass the routing key "
                    "(--pagerduty-routing-key) of the PagerDuty service's Events API v2 integration"
                )
            value = values[value]
        config[key] = value
    if topic is not None:
        config["topics"] = topic
    return SinkConfig(target, name or document["name"], config["topics"], config)


async def ensure_sink_topics(
    bootstrap: str, sinks: list[SinkConfig], partitions: int, topic_config: Mapping[str, str]
) -> dict[str, str]:
    """Create the sinks' topics and the dead letter queue when missing (idempotent)."""
    dlqs = {s.config["errors.deadletterqueue.topic.name"] for s in sinks}
    names = sorted({s.topic for s in sinks} | dlqs)
    return await ensure_topics(
        bootstrap, [TopicRequest(name, partitions, topic_config) for name in names]
    )
