"""What a WebSocket client subscribes to, and the pure functions that apply it.

A client sends one JSON subscribe message (and may send another later to change it)::

    {"type": "subscribe", "topics": ["predictions", "alerts"], "entity": "web-*",
     "labels": {"region": "eu"}, "kinds": ["ANOMALY"], "min_severity": "WARNING",
     "last_id": 1234}

Every field but ``type`` is optional and the criteria combine with AND. ``entity`` is an
``fnmatch`` glob (default ``*``). ``labels`` are exact matchers on the record's ``labels`` map:
alerts carry labels; a PredictionBatch carries none in schema v1, so a label matcher keeps a
prediction only if its record has matching labels (a filter never lets through more than it
names). ``kinds`` keeps only those prediction kinds: a batch is cut down to them and dropped
when none remain. ``min_severity`` keeps alerts at or above it.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PREDICTIONS = "predictions"
ALERTS = "alerts"
TOPICS = (PREDICTIONS, ALERTS)
KINDS = ("ANOMALY", "FORECAST", "FAILURE_RISK", "BOTTLENECK", "DURATION")
SEVERITIES = ("INFO", "WARNING", "CRITICAL")

_GLOB_CHARS = re.compile(r"[*?\[]")


class SubscriptionError(ValueError):
    """A subscribe message the gateway cannot honour; the text says what to send instead."""


@dataclass(frozen=True)
class Subscription:
    """One client's filter over the live feed (see the module docstring for the fields)."""

    topics: frozenset[str] = frozenset(TOPICS)
    entity: str = "*"
    labels: tuple[tuple[str, str], ...] = ()
    kinds: frozenset[str] | None = None
    min_severity: str = "INFO"
    last_id: int | None = None

    @property
    def exact_entity(self) -> str | None:
        """The one entity named, when ``entity`` has no glob characters."""
        return None if _GLOB_CHARS.search(self.entity) else self.entity

    def matches_entity(self, entity: str) -> bool:
        """Whether ``entity`` fits the ``entity`` glob (case-sensitive)."""
        return fnmatch.fnmatchcase(entity, self.entity)

    def matches_labels(self, labels: Mapping[str, str] | None) -> bool:
        """Whether every label matcher holds on ``labels`` (absent labels never match)."""
        if not self.labels:
            return True
        if not labels:
            return False
        return all(labels.get(name) == value for name, value in self.labels)

    def accepts_alert(self, alert: Mapping[str, Any]) -> bool:
        """Whether an Alert record passes this subscription."""
        return (
            ALERTS in self.topics
            and SEVERITIES.index(alert["severity"]) >= SEVERITIES.index(self.min_severity)
            and self.matches_entity(alert["entity"])
            and self.matches_labels(alert.get("labels"))
        )

    def filter_predictions(self, batch: Mapping[str, Any]) -> dict[str, Any] | None:
        """The PredictionBatch cut down to the subscribed kinds, or ``None`` if nothing is left.

        The entity glob is not checked here: the gateway indexes clients by entity first.
        """
        if PREDICTIONS not in self.topics or not self.matches_labels(batch.get("labels")):
            return None
        if self.kinds is None:
            return dict(batch)
        kept = [p for p in batch["predictions"] if p["kind"] in self.kinds]
        if not kept:
            return None
        return {**batch, "predictions": kept}


def _string_list(message: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> list[str]:
    value = message[field]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SubscriptionError(f"{field} must be a non-empty list of strings, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise SubscriptionError(f"unknown {field} {unknown}; choose from {list(allowed)}")
    return value


def _check_unicode(text: str) -> None:
    """Names are looked up in Redis and sent back as UTF-8: a lone surrogate has no form there."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise SubscriptionError(
            f"{text!r:.60} is not valid Unicode: a lone surrogate at character {error.start}; "
            "send UTF-8 text, or escape characters as surrogate pairs"
        ) from None


def read_subscription(raw: str | bytes) -> Subscription:
    """A subscribe message as the client sent it (JSON text) and its Subscription; any way
    it fails is a :class:`SubscriptionError` saying why."""
    try:
        message = json.loads(raw)
    except RecursionError:
        raise SubscriptionError(
            "the message is nested too deeply to read: send one flat subscribe object"
        ) from None
    except ValueError as error:  # not JSON, or not UTF-8
        raise SubscriptionError(f"the message is not JSON: {error}") from None
    return parse_subscription(message)


def parse_subscription(message: Any) -> Subscription:
    """Validate a client's subscribe message (decoded JSON) and build its Subscription."""
    if not isinstance(message, dict):
        raise SubscriptionError(
            f'expected a JSON object {{"type": "subscribe", ...}}, got {type(message).__name__}'
        )
    if message.get("type") != "subscribe":
        raise SubscriptionError(
            f'expected {{"type": "subscribe", ...}}, got type {message.get("type")!r}'
        )
    known = {"type", "topics", "entity", "labels", "kinds", "min_severity", "last_id"}
    unknown = sorted(set(message) - known)
    if unknown:
        raise SubscriptionError(f"unknown subscribe fields {unknown}; known: {sorted(known)}")
    topics = frozenset(_string_list(message, "topics", TOPICS)) if "topics" in message else None
    kinds = frozenset(_string_list(message, "kinds", KINDS)) if "kinds" in message else None
    entity = message.get("entity", "*")
    if not isinstance(entity, str) or not entity:
        raise SubscriptionError(f"entity must be a non-empty fnmatch glob, got {entity!r}")
    labels = message.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise SubscriptionError(f"labels must map label names to string values, got {labels!r}")
    for text in (entity, *labels, *labels.values()):
        _check_unicode(text)
    severity = message.get("min_severity", "INFO")
    if severity not in SEVERITIES:
        raise SubscriptionError(f"min_severity must be one of {list(SEVERITIES)}, got {severity!r}")
    last_id = message.get("last_id")
    if last_id is not None and (
        isinstance(last_id, bool) or not isinstance(last_id, int) or last_id < 0
    ):
        raise SubscriptionError(
            f"last_id must be the non-negative integer id of a message received, got {last_id!r}"
        )
    return Subscription(
        topics=topics if topics is not None else frozenset(TOPICS),
        entity=entity,
        labels=tuple(sorted(labels.items())),
        kinds=kinds,
        min_severity=severity,
        last_id=last_id,
    )
