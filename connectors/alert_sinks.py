"""The Kafka Connect sinks that deliver alerts: load a target's config, fill it, apply it.

One JSON file per target in ``connectors/kafka-connect/`` (``{"name": ..., "config": {...}}``,
the body ``POST /connectors`` takes) holds placeholders: ``${url}`` for the HTTP sink's targets
and, for PagerDuty, ``${routing_key}``; the SMTP server, account and addresses
(:data:`SMTP_PLACEHOLDERS`) for e-mail. :func:`sink_config` replaces each by a reference to the
connector's secrets file (``${file:<secrets_dir>/<name>.properties:url}``), since a URL may
carry a token (Slack, Teams, webhooks), the routing key and the SMTP password are ones, and
recipients are people's addresses; :func:`apply_sink` writes that file, then the config. So no
endpoint or secret is in the repository, in Kafka or in Connect's log.
:func:`ensure_sink_topics` creates the topics the sinks read and write.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.alert_payloads import TARGETS
from connectors.kafka_admin import TopicRequest, ensure_topics
from connectors.kafka_clients import KafkaConfig
from connectors.kafka_connect import (
    apply_connector,
    delete_connector,
    restart_connector,
    secret_reference,
    write_secrets,
)

CONFIG_DIR = Path(__file__).parent / "kafka-connect"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SMTP_PLACEHOLDERS = ("host", "port", "security", "username", "password", "from", "to")
"""What the e-mail connector's file holds, by the names of its placeholders."""
_MAY_BE_EMPTY = frozenset({"username", "password"})  # a relay that takes mail unauthenticated
_HOW_TO_GIVE = {
    "url": "the endpoint URL (--<target>-url)",
    "routing_key": "the routing key (--pagerduty-routing-key) of the PagerDuty service's "
    "Events API v2 integration",
    "host": "the SMTP server (--smtp-host)",
    "from": "the sender address (--smtp-from)",
    "to": "the recipients (--smtp-to)",
}
_PLACEHOLDER = re.compile(r"^\$\{([a-z_]+)\}$")


@dataclass(frozen=True)
class SinkConfig:
    """A filled connector: its name, the topic it reads, the config to PUT and its secrets.

    ``config`` refers to ``secrets_file`` for every secret; ``secrets`` is that file's content.
    """

    target: str
    name: str
    topic: str
    config: dict[str, str]
    secrets_file: Path
    secrets: dict[str, str] = field(repr=False)


_BLANK = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def _check_url(target: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{target}: URL {url!r} is not an absolute http:// or https:// URL; "
            "give the full endpoint, e.g. https://hooks.example.com/foresight"
        )
    # Connect's validator says "Illegal character in authority at index 7" for a space, and
    # takes a raw line break in the path as it is.
    blank = _BLANK.search(url)
    if blank:
        raise ValueError(
            f"{target}: URL {url!r} holds {blank.group()!r} at {blank.start()}; a URL has no "
            "spaces or control characters (percent-encode them, e.g. %20)"
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
    url: str = "",
    *,
    secrets_dir: Path,
    routing_key: str = "",
    smtp: Mapping[str, str] | None = None,
    topic: str | None = None,
    name: str | None = None,
) -> SinkConfig:
    """The connector of ``target``, its URL (and PagerDuty's routing key, or the e-mail
    connector's ``smtp`` settings, by :data:`SMTP_PLACEHOLDERS`) kept in its secrets file.

    The file is ``<secrets_dir>/<name>.properties``, a path the Connect worker must be allowed
    to read. ``topic`` and ``name`` override the defaults (tests use unique ones per run).
    ValueError names a value the connector needs and was not given.
    """
    document = _document(target)
    name = name or document["name"]
    secrets_file = secrets_dir / f"{name}.properties"
    given = {"url": url, "routing_key": routing_key, **(smtp or {})}
    config: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in document["config"].items():
        placeholder = _PLACEHOLDER.match(value)
        if placeholder:
            secret_key = placeholder[1]
            secret = given.get(secret_key, "")
            if not secret and secret_key not in _MAY_BE_EMPTY:
                how = _HOW_TO_GIVE.get(secret_key, f"--smtp-{secret_key}")
                raise ValueError(f"{target}: {key} needs a value for {value}; give {how}")
            if secret_key == "url":
                _check_url(target, secret)
            secrets[secret_key] = secret
            value = secret_reference(secrets_file, secret_key)
        config[key] = value
    if topic is not None:
        config["topics"] = topic
    return SinkConfig(target, name, config["topics"], config, secrets_file, secrets)


def apply_sink(connect_url: str, sink: SinkConfig) -> None:
    """Write the sink's secrets file, then create or update its connector (idempotent).

    When the secrets changed, the connector and its tasks restart: the config itself, mere
    references, may not have changed, and a running task keeps the values it started with.
    """
    changed = write_secrets(sink.secrets_file, sink.secrets)
    apply_connector(connect_url, sink.name, sink.config)
    if changed:
        restart_connector(connect_url, sink.name)


def remove_sink(connect_url: str, name: str, secrets_dir: Path) -> dict[str, bool]:
    """Delete connector ``name`` and its secrets file (the endpoints, keys and passwords it
    was given), each when present: ``{"connector": deleted, "secrets": deleted}``.

    Its topic stays, with the alerts it delivered or not, for others to read."""
    present = delete_connector(connect_url, name)
    secrets_file = secrets_dir / f"{name}.properties"
    had_secrets = secrets_file.exists()
    secrets_file.unlink(missing_ok=True)
    return {"connector": present, "secrets": had_secrets}


async def ensure_sink_topics(
    kafka: KafkaConfig, sinks: list[SinkConfig], partitions: int, topic_config: Mapping[str, str]
) -> dict[str, str]:
    """Create the sinks' topics and the dead letter queue when missing (idempotent)."""
    dlqs = {s.config["errors.deadletterqueue.topic.name"] for s in sinks}
    names = sorted({s.topic for s in sinks} | dlqs)
    return await ensure_topics(
        kafka, [TopicRequest(name, partitions, topic_config) for name in names]
    )
