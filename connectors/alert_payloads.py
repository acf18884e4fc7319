"""Alert records turned into the JSON each alerting tool expects: the alerts' JSON twins.

The worker produces, for every Alert it writes to ``alerts``, one JSON record per target to
that target's topic (:data:`TARGETS`), keyed by the dedup key. A Kafka Connect HTTP sink per
target (configs in ``connectors/kafka-connect/``) posts each record value, unchanged, as one
request body. Alerts are state changes, so each dedup key fires once and resolves once per
episode, and so does every tool.

The functions here are pure (no clock, no I/O): the same Alert always gives the same bytes,
which keeps the twins reproducible and the Connect-side redeliveries harmless.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.field_rules import one_line
from schemas.json_form import dumps

Alert = Mapping[str, Any]

# Alertmanager forgets a firing alert that is not re-sent before its endsAt. Foresight sends a
# state change once, so a firing alert is held this long past its decision; its RESOLVED twin
# ends it sooner. An episode that stays firing longer is shown resolved after the hold.
ALERTMANAGER_FIRING_HOLD_MS = 24 * 3600 * 1000

_SLACK_MARK = {
    "CRITICAL": ":red_circle:",
    "WARNING": ":large_orange_circle:",
    "INFO": ":large_blue_circle:",
}
_SLACK_RESOLVED_MARK = ":white_check_mark:"
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def iso_time(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds (``2026-01-01T00:00:00.000Z``)."""
    if epoch_ms is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity; a non-finite value is sent as null."""
    return value if math.isfinite(value) else None


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The alert itself as JSON, its times as RFC 3339 strings (``ends_at`` null while firing)."""
    return {
        "dedup_key": alert["dedup_key"],
        "alert_id": alert["alert_id"],
        "status": alert["status"],
        "severity": alert["severity"],
        "rule": alert["rule"],
        "entity": alert["entity"],
        "summary": alert["summary"],
        "value": _finite(alert["value"]),
        "labels": dict(alert.get("labels") or {}),
        "starts_at": iso_time(alert["starts_at"]),
        "ends_at": iso_time(alert.get("ends_at")),
        "event_time": iso_time(alert["event_time"]),
    }


_TEAMS_COLOR = {"CRITICAL": "Attention", "WARNING": "Warning", "INFO": "Accent"}
_MARKDOWN = re.compile(r"([\\`*_\[\]()<>~|#])")
_MARKDOWN_LIST = re.compile(r"^(\s*)(\d+\.|[-+])(?=\s|$)", re.MULTILINE)


def _headline(alert: Alert) -> str:
    """``CRITICAL anomaly firing on web-1`` (``resolved`` once it is)."""
    state = "resolved" if alert["status"] == "RESOLVED" else "firing"
    return f"{alert['severity']} {alert['rule']} {state} on {alert['entity']}"


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """What a person reads under the headline, in order."""
    value = _finite(alert["value"])
    facts = [
        ("Entity", alert["entity"]),
        ("Rule", alert["rule"]),
        ("Severity", alert["severity"]),
        ("Value", "n/a" if value is None else f"{value:.4g}"),
        ("Started", iso_time(alert["starts_at"]) or ""),
    ]
    if alert["status"] == "RESOLVED" and alert.get("ends_at") is not None:
        facts.append(("Ended", iso_time(alert["ends_at"]) or ""))
    facts.extend((name, str(value)) for name, value in sorted((alert.get("labels") or {}).items()))
    facts.append(("Key", alert["dedup_key"]))
    return facts


def _markdown_escape(text: str) -> str:
    """Markdown control characters escaped (and a list marker at a line's start), so no value
    can form a link, emphasis or a list in the card."""
    escaped = _MARKDOWN.sub(r"\\\1", text)
    return _MARKDOWN_LIST.sub(lambda m: m[1] + m[2][:-1] + "\\" + m[2][-1], escaped)


def teams_payload(alert: Alert) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook message carrying one Adaptive Card (1.4).

    A bold headline coloured by severity (green once resolved), the summary, and the facts;
    every text is escaped, so the card carries no links. Teams' Workflows webhooks and the
    older Office 365 connector webhooks both take this shape.
    """
    resolved = alert["status"] == "RESOLVED"
    color = "Good" if resolved else _TEAMS_COLOR[alert["severity"]]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": _markdown_escape(_headline(alert)),
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            {"type": "TextBlock", "text": _markdown_escape(alert["summary"]), "wrap": True},
            {
                "type": "FactSet",
                "facts": [
                    {"title": name, "value": _markdown_escape(value)}
                    for name, value in _facts(alert)
                ],
            },
        ],
    }
    return {
        "type": "message",
        "summary": _headline(alert),
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def _message_id(alert: Alert, status: str) -> str:
    """A stable Message-ID per episode and state: a redelivered mail is the same mail."""
    local = re.sub(r"[^A-Za-z0-9._-]", "-", f"{alert['alert_id']}.{status}".lower())
    return f"<{local[:200]}@foresight.alerts>"


def email_payload(alert: Alert) -> dict[str, Any]:
    """One plain-text mail per state change for the SMTP sink: ``subject``, ``text`` and the
    threading headers, so a RESOLVED mail answers its FIRING one in the reader's client."""
    text = "\n".join(
        [_headline(alert), "", alert["summary"], "", *(f"{k}: {v}" for k, v in _facts(alert))]
    )
    headers = {"Message-ID": _message_id(alert, alert["status"])}
    if alert["status"] == "RESOLVED":
        firing = _message_id(alert, "FIRING")
        headers.update({"In-Reply-To": firing, "References": firing})
    subject = one_line(f"[{alert['status']}] {_headline(alert)}")  # a line break would end it
    return {"subject": subject[:250], "text": text + "\n", "headers": headers}


def _slack_escape(text: str) -> str:
    """Slack mrkdwn control characters escaped, so no value can form a link or mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: plain ``text`` (notifications) and Block Kit blocks.

    The severity shows as an emoji (a check mark once resolved); entity and summary are escaped,
    so the message carries no links.
    """
    resolved = alert["status"] == "RESOLVED"
    mark = _SLACK_RESOLVED_MARK if resolved else _SLACK_MARK[alert["severity"]]
    entity = _slack_escape(alert["entity"])
    summary = _slack_escape(alert["summary"])
    rule = _slack_escape(alert["rule"])
    state = "resolved" if resolved else "firing"
    headline = f"{mark} {alert['severity']} {rule} {state} on {entity}"
    value = _finite(alert["value"])
    context = [
        f"value {value:.4g}" if value is not None else "value n/a",
        f"started {iso_time(alert['starts_at'])}",
    ]
    if resolved and alert.get("ends_at") is not None:
        context.append(f"ended {iso_time(alert['ends_at'])}")
    context.append(f"key {_slack_escape(alert['dedup_key'])}")
    return {
        "text": f"{headline}: {summary}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*{headline}*\n{summary}"},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
        ],
    }


def pagerduty_payload(alert: Alert) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: trigger on FIRING, resolve on RESOLVED, by dedup key.

    It has no ``routing_key``: the PagerDuty connector inserts it from its secrets file, so the
    integration key is never in a Kafka record.
    """
    event: dict[str, Any] = {
        "event_action": "resolve" if alert["status"] == "RESOLVED" else "trigger",
        "dedup_key": alert["dedup_key"],
        "payload": {
            "summary": alert["summary"][:1024],  # PagerDuty's limit
            "source": alert["entity"],
            "severity": alert["severity"].lower(),
            "timestamp": iso_time(alert["event_time"]),
            "component": alert["rule"],
            "custom_details": {
                "alert_id": alert["alert_id"],
                "value": _finite(alert["value"]),
                "labels": dict(alert.get("labels") or {}),
                "starts_at": iso_time(alert["starts_at"]),
                "ends_at": iso_time(alert.get("ends_at")),
            },
        },
        "client": "Foresight",
    }
    return event


_PER_DECISION = ("metric", "contributions")
"""Alert labels that describe one decision of an episode, not the episode (see
:func:`alertmanager_payload`)."""


def alertmanager_payload(alert: Alert) -> list[dict[str, Any]]:
    """Alertmanager ``POST /api/v2/alerts`` body: a one-element array.

    Labels (the alert's identity in Alertmanager) are the alert's labels plus ``alertname``
    (the rule), ``entity`` and ``severity``, which win on a clash; label names are made valid
    Prometheus names. The labels that can change within an episode (:data:`_PER_DECISION`: the
    worst signal, what drove the score) are annotations instead: an episode's RESOLVED may
    name others than its FIRING, and with other labels Alertmanager would hold them as two
    alerts and the firing one would never resolve.
    A RESOLVED alert ends at its ``ends_at``; a FIRING one at its decision time plus
    :data:`ALERTMANAGER_FIRING_HOLD_MS`.
    """
    labels = {_LABEL_NAME.sub("_", k): str(v) for k, v in (alert.get("labels") or {}).items()}
    per_decision = {name: labels.pop(name, "") for name in _PER_DECISION}
    labels.update(
        alertname=alert["rule"], entity=alert["entity"], severity=alert["severity"].lower()
    )
    if alert["status"] == "RESOLVED":
        ends_at = alert.get("ends_at") or alert["event_time"]
    else:
        ends_at = alert["event_time"] + ALERTMANAGER_FIRING_HOLD_MS
    value = _finite(alert["value"])
    return [
        {
            "labels": labels,
            "annotations": {
                "summary": alert["summary"],
                "value": "" if value is None else f"{value:g}",
                "alert_id": alert["alert_id"],
                **per_decision,
            },
            "startsAt": iso_time(alert["starts_at"]),
            "endsAt": iso_time(ends_at),
        }
    ]


@dataclass(frozen=True)
class AlertTarget:
    """One alerting tool: the topic of its JSON twin, its connector config file and its body.

    ``batch_json_array`` is the connector's ``http.batch.json.array``: always false here, one
    request per record, because each payload is already a complete request body (Alertmanager's
    is a one-element array), so a firing and its resolve are never merged into one request.
    """

    name: str
    topic: str
    connector_file: str
    content_type: str
    batch_json_array: bool
    build: Callable[[Alert], Any]


TARGETS: dict[str, AlertTarget] = {
    t.name: t
    for t in (
        AlertTarget(
            "webhook",
            "alerts.webhook.json",
            "webhook.json",
            "application/json",
            False,
            webhook_payload,
        ),
        AlertTarget(
            "slack",
            "alerts.slack.json",
            "slack.json",
            "application/json",
            False,
            slack_payload,
        ),
        AlertTarget(
            "pagerduty",
            "alerts.pagerduty.json",
            "pagerduty.json",
            "application/json",
            False,
            pagerduty_payload,
        ),
        AlertTarget(
            "alertmanager",
            "alerts.alertmanager.json",
            "alertmanager.json",
            "application/json",
            False,
            alertmanager_payload,
        ),
        AlertTarget(
            "teams",
            "alerts.teams.json",
            "teams.json",
            "application/json",
            False,
            teams_payload,
        ),
        AlertTarget(
            "email",
            "alerts.email.json",
            "email.json",
            "application/json",
            False,
            email_payload,
        ),
    )
}


def payloads_for(alert: Alert) -> dict[str, tuple[str, bytes]]:
    """Every target's JSON twin of ``alert``: ``{target: (topic, UTF-8 JSON bytes)}``.

    Produce each to its topic keyed by ``alert["dedup_key"]``, so a firing and its resolve stay
    in order on one partition.
    """
    return {name: (target.topic, dumps(target.build(alert))) for name, target in TARGETS.items()}
