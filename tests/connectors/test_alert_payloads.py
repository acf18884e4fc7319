"""The alerts' JSON twins: each tool's payload shape, firing and resolved, and the configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.alert_payloads import (
    ALERTMANAGER_FIRING_HOLD_MS,
    TARGETS,
    iso_time,
    payloads_for,
)
from connectors.alert_sinks import sink_config, sink_name
from models.alerts import DEFAULT_RULES, AlertState, evaluate
from models.explain import summary

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FIRING: dict[str, Any] = {
    "dedup_key": "anomaly/web-1",
    "alert_id": f"anomaly/web-1@{T0}",
    "status": "FIRING",
    "severity": "CRITICAL",
    "rule": "anomaly",
    "entity": "web-1",
    "summary": "cpu <anomalous> & rising",
    "value": 0.97,
    "labels": {"metric": "cpu_percent", "kind.name": "anomaly"},
    "starts_at": T0,
    "ends_at": None,
    "event_time": T0,
}
RESOLVED = dict(FIRING, status="RESOLVED", ends_at=T0 + 60_000, event_time=T0 + 60_000)


def body(alert: dict[str, Any], target: str) -> Any:
    topic, raw = payloads_for(alert)[target]
    assert topic == TARGETS[target].topic
    return json.loads(raw)


HTTP_TARGETS = sorted(t for t in TARGETS if t != "email")
SMTP = {
    "host": "smtp.example.com",
    "port": "587",
    "security": "starttls",
    "username": "",
    "password": "",
    "from": "Foresight <alerts@example.com>",
    "to": "oncall@example.com",
}


def test_every_target_gets_a_twin_on_its_own_topic() -> None:
    twins = payloads_for(FIRING)
    assert set(twins) == {"webhook", "slack", "pagerduty", "alertmanager", "teams", "email"}
    assert len({topic for topic, _ in twins.values()}) == 6
    assert payloads_for(FIRING) == twins  # pure: the same alert, the same bytes


def test_iso_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert iso_time(T0 + 5) == "2026-01-01T00:00:00.005Z"
    assert iso_time(None) is None


def test_webhook_is_the_alert_with_iso_times() -> None:
    firing = body(FIRING, "webhook")
    assert firing["dedup_key"] == "anomaly/web-1" and firing["status"] == "FIRING"
    assert firing["starts_at"] == "2026-01-01T00:00:00.000Z" and firing["ends_at"] is None
    assert firing["labels"] == FIRING["labels"] and firing["value"] == 0.97
    resolved = body(RESOLVED, "webhook")
    assert resolved["status"] == "RESOLVED" and resolved["ends_at"] == "2026-01-01T00:01:00.000Z"


def test_webhook_sends_a_non_finite_value_as_null() -> None:
    assert body(dict(FIRING, value=float("nan")), "webhook")["value"] is None


def test_slack_message_names_entity_and_summary_without_links() -> None:
    message = body(FIRING, "slack")
    assert "web-1" in message["text"] and "cpu &lt;anomalous&gt; &amp; rising" in message["text"]
    assert message["text"].startswith(":red_circle: CRITICAL anomaly firing")
    section = message["blocks"][0]["text"]["text"]
    assert "web-1" in section and "&lt;anomalous&gt;" in section and "<" not in section
    assert [b["type"] for b in message["blocks"]] == ["section", "context"]
    resolved = body(RESOLVED, "slack")
    assert resolved["text"].startswith(":white_check_mark: CRITICAL anomaly resolved on web-1")
    assert "ended 2026-01-01T00:01:00.000Z" in resolved["blocks"][1]["elements"][0]["text"]


@pytest.mark.parametrize(
    ("severity", "expected"), [("CRITICAL", "critical"), ("WARNING", "warning"), ("INFO", "info")]
)
def test_pagerduty_severity(severity: str, expected: str) -> None:
    assert body(dict(FIRING, severity=severity), "pagerduty")["payload"]["severity"] == expected


def test_pagerduty_triggers_then_resolves_by_dedup_key() -> None:
    trigger = body(FIRING, "pagerduty")
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "anomaly/web-1"
    assert trigger["payload"]["source"] == "web-1"
    assert trigger["payload"]["summary"] == FIRING["summary"]
    assert trigger["payload"]["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert trigger["payload"]["custom_details"]["value"] == 0.97
    resolve = body(RESOLVED, "pagerduty")
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == trigger["dedup_key"]


def test_pagerduty_leaves_the_routing_key_to_the_connector() -> None:
    assert "routing_key" not in body(FIRING, "pagerduty")


def test_alertmanager_is_an_array_with_identity_labels() -> None:
    (firing,) = body(FIRING, "alertmanager")
    assert firing["labels"] == {
        "alertname": "anomaly",
        "entity": "web-1",
        "severity": "critical",
        "kind_name": "anomaly",
    }
    assert firing["annotations"]["summary"] == FIRING["summary"]
    assert firing["annotations"]["metric"] == "cpu_percent"
    assert firing["startsAt"] == "2026-01-01T00:00:00.000Z"
    assert firing["endsAt"] == iso_time(T0 + ALERTMANAGER_FIRING_HOLD_MS)


def test_alertmanager_resolves_at_ends_at_with_the_same_labels() -> None:
    (firing,) = body(FIRING, "alertmanager")
    # The worst metric at the resolve is another, and so is what drove it: the episode is
    # still the same alert.
    drivers = "memory_percent slope over 15 m +0.31"
    labels = {**RESOLVED["labels"], "metric": "memory_percent", "contributions": drivers}
    (resolved,) = body(dict(RESOLVED, labels=labels), "alertmanager")
    assert resolved["endsAt"] == "2026-01-01T00:01:00.000Z"
    assert resolved["labels"] == firing["labels"]
    assert resolved["annotations"]["contributions"] == drivers


def test_alert_labels_never_override_the_identity_labels() -> None:
    (alert,) = body(dict(FIRING, labels={"alertname": "x", "entity": "y"}), "alertmanager")
    assert alert["labels"]["alertname"] == "anomaly" and alert["labels"]["entity"] == "web-1"


def reference(secrets_dir: Path, name: str, key: str) -> str:
    return f"${{file:{secrets_dir}/{name}.properties:{key}}}"


@pytest.mark.parametrize("target", HTTP_TARGETS)
def test_connector_configs_match_the_targets(target: str, tmp_path: Path) -> None:
    sink = sink_config(
        target, "https://example.com/hook/T0K3N", secrets_dir=tmp_path, routing_key="R0UT1NG"
    )
    spec = TARGETS[target]
    assert sink.name == sink_name(target) == f"foresight-alerts-{target}"
    assert sink.topic == sink.config["topics"] == spec.topic
    assert sink.config["connector.class"] == "io.foresight.connect.http.HttpSinkConnector"
    assert f"Content-Type:{spec.content_type}" in sink.config["http.headers"]
    assert sink.config["http.batch.json.array"] == str(spec.batch_json_array).lower()
    assert sink.config["errors.deadletterqueue.topic.name"] == "alerts.connect.dlq"
    assert sink.config["errors.deadletterqueue.context.headers.enable"] == "true"


@pytest.mark.parametrize("target", HTTP_TARGETS)
def test_connector_configs_hold_references_not_secrets(target: str, tmp_path: Path) -> None:
    url = "https://example.com/hook/T0K3N"
    sink = sink_config(target, url, secrets_dir=tmp_path, routing_key="R0UT1NG")
    assert sink.config["http.url"] == reference(tmp_path, sink.name, "url")
    assert sink.secrets_file == tmp_path / f"{sink.name}.properties"
    assert sink.secrets["url"] == url
    shown = json.dumps(sink.config) + repr(sink)
    assert "T0K3N" not in shown and "R0UT1NG" not in shown
    references = [v for v in sink.config.values() if "${" in v]
    assert references and all(v.startswith(f"${{file:{tmp_path}/") for v in references)


def test_pagerduty_connector_inserts_the_routing_key(tmp_path: Path) -> None:
    sink = sink_config(
        "pagerduty", "https://events.example.com/v2/enqueue", secrets_dir=tmp_path, routing_key="K"
    )
    assert sink.config["http.body.insert.field"] == "routing_key"
    assert sink.config["http.body.insert.value"] == reference(tmp_path, sink.name, "routing_key")
    assert sink.secrets == {"url": "https://events.example.com/v2/enqueue", "routing_key": "K"}
    assert not any(key.startswith("transforms") for key in sink.config)


def test_sink_config_overrides_topic_and_name(tmp_path: Path) -> None:
    sink = sink_config(
        "webhook", "http://127.0.0.1:1/x", secrets_dir=tmp_path, topic="t.1", name="n-1"
    )
    assert (sink.name, sink.topic, sink.config["topics"]) == ("n-1", "t.1", "t.1")
    assert sink.secrets_file == tmp_path / "n-1.properties"


@pytest.mark.parametrize(
    ("target", "url", "key", "message"),
    [
        ("opsgenie", "https://example.com", "", "unknown alert target 'opsgenie'"),
        ("webhook", "example.com/hook", "", "'example.com/hook' is not an absolute"),
        ("webhook", "http://exa mple.com/x", "", "holds ' ' at 10; a URL has no spaces"),
        ("teams", "https://t.example/x\r\nX-A: 1", "", "holds '\\\\r' at 19"),
        ("pagerduty", "https://events.pagerduty.com/v2/enqueue", "", "--pagerduty-routing-key"),
    ],
)
def test_sink_config_names_the_bad_value(
    target: str, url: str, key: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        sink_config(target, url, secrets_dir=tmp_path, routing_key=key)


def test_teams_gets_an_adaptive_card_that_carries_no_link() -> None:
    hostile = dict(FIRING, summary="see [here](https://evil.example) *now*\n- and this")
    firing, resolved = body(hostile, "teams"), body(RESOLVED, "teams")
    assert firing["type"] == "message" and firing["summary"] == "CRITICAL anomaly firing on web-1"
    (attachment,) = firing["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    headline, summary, facts = card["body"]
    assert headline["color"] == "Attention" and headline["weight"] == "Bolder"
    assert summary["text"] == "see \\[here\\]\\(https://evil.example\\) \\*now\\*\n\\- and this"
    shown = {f["title"]: f["value"] for f in facts["facts"]}
    assert (
        shown["Entity"] == "web-1" and shown["Value"] == "0.97" and shown["Key"] == "anomaly/web-1"
    )
    assert shown["kind.name"] == "anomaly" and "Ended" not in shown
    (_, _, resolved_facts) = resolved["attachments"][0]["content"]["body"]
    assert resolved["attachments"][0]["content"]["body"][0]["color"] == "Good"
    assert {f["title"]: f["value"] for f in resolved_facts["facts"]}["Ended"] == (
        "2026-01-01T00:01:00.000Z"
    )


def test_an_episode_is_two_mails_the_second_answering_the_first() -> None:
    firing, resolved = body(FIRING, "email"), body(RESOLVED, "email")
    assert firing["subject"] == "[FIRING] CRITICAL anomaly firing on web-1"
    assert resolved["subject"] == "[RESOLVED] CRITICAL anomaly resolved on web-1"
    assert firing["text"].startswith("CRITICAL anomaly firing on web-1\n\ncpu <anomalous>")
    assert (
        "Entity: web-1\n" in firing["text"]
        and "Ended: 2026-01-01T00:01:00.000Z" in (resolved["text"])
    )
    first = firing["headers"]["Message-ID"]
    assert set(firing["headers"]) == {"Message-ID"}
    assert resolved["headers"]["In-Reply-To"] == resolved["headers"]["References"] == first
    assert resolved["headers"]["Message-ID"] != first
    assert body(FIRING, "email") == firing  # a redelivered record is the same mail


def test_a_mail_subject_is_one_line_whatever_the_entity_holds() -> None:
    """An alert from before the worker refused such names, or from another producer: a line
    break in the subject would start a header of the alert's own choosing."""
    forged = dict(FIRING, entity="web-1\r\nBcc: attacker@example.com")
    mail = body(forged, "email")
    assert "\r" not in mail["subject"] and "\n" not in mail["subject"]
    assert (
        mail["subject"]
        == "[FIRING] CRITICAL anomaly firing on web-1\\r\\nBcc: attacker@example.com"
    )


def test_the_email_connector_keeps_server_account_and_addresses_in_its_file(
    tmp_path: Path,
) -> None:
    smtp = dict(SMTP, username="foresight", password="s3cr3t")
    sink = sink_config("email", secrets_dir=tmp_path, smtp=smtp)
    assert sink.config["connector.class"] == "io.foresight.connect.smtp.SmtpSinkConnector"
    assert sink.config["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert sink.secrets == smtp
    for key, placeholder in (
        ("smtp.host", "host"),
        ("mail.to", "to"),
        ("smtp.password", "password"),
    ):
        assert sink.config[key] == reference(tmp_path, sink.name, placeholder)
    shown = json.dumps(sink.config) + repr(sink)
    assert "s3cr3t" not in shown and "oncall@" not in shown
    relay = sink_config("email", secrets_dir=tmp_path, smtp=SMTP)  # no account: a local relay
    assert relay.secrets["username"] == relay.secrets["password"] == ""
    with pytest.raises(ValueError, match="--smtp-to"):
        sink_config("email", secrets_dir=tmp_path, smtp=dict(SMTP, to=""))


def test_every_tool_is_told_what_drove_a_failure_risk_alert() -> None:
    state = AlertState()
    rule = next(r for r in DEFAULT_RULES if r.name == "failure_risk")
    drivers = summary([("memory_percent:15m:slope", 0.31), ("memory_percent:1m:last", 1.38)])
    alert = None
    for step in range(rule.for_steps):
        alert = evaluate(rule, state, "db-1", 0.91, "memory_percent", T0 + step, {}, drivers)
    assert alert is not None
    told = "memory_percent slope over 15 m +0.31, memory_percent last over 1 m +1.38"
    assert alert["summary"].endswith(f"(risk 0.91): {told}")
    markdown = told.replace("_", "\\\\_")  # Teams' escaped underscores, in JSON
    for target, (_, raw) in payloads_for(alert).items():
        assert told in raw.decode() or markdown in raw.decode(), target
