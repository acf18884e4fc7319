"""``foresight connect apply | remove | status``: the Kafka Connect sinks that deliver alerts.

``apply`` creates or updates (PUT, idempotent) one connector per target whose endpoint is given
(webhook, Slack, PagerDuty, Alertmanager, Microsoft Teams through the HTTP sink; e-mail through
the SMTP sink), after creating the JSON topics the worker fills and the dead letter queue, then
waits for each connector to run and prints its state. Endpoints, the routing key and the SMTP
server, account and addresses go to a 0600 file per connector in the stack's
``connect/secrets`` folder, and the connector config refers to them (``${file:...}``), so they
never reach Kafka or the logs.
``remove`` deletes the connectors of the targets named, and their secrets files; their topics
stay. ``apply`` and ``remove`` need a key with the ``operate`` role and record an audit event
(:mod:`streams.operations`). ``status`` prints the state of every alert connector, applied or
not.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.alert_payloads import TARGETS
from connectors.alert_sinks import PAGERDUTY_EVENTS_URL, SinkConfig, sink_config, sink_name
from connectors.audit import AuditTrail
from connectors.kafka_connect import ConnectError
from deploy.local.stack import connect_secrets_dir
from streams.access import audit_trail
from streams.operations import (
    OperatorRefusedError,
    apply_alert_connectors,
    connector_state,
    remove_alert_connectors,
    running,
)
from streams.setting_domains import Between, option
from streams.settings import Settings


def _print_states(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        tasks = ", ".join(row["tasks"]) or "no tasks"
        where = f" -> {row['topic']}" if row.get("topic") else ""
        secrets = f", secrets in {row['secrets_file']}" if row.get("secrets_file") else ""
        print(f"{row['state']:<11} {row['connector']}{where} (tasks: {tasks}{secrets})")
        if row["trace"]:
            print(f"            {row['trace']}")


def smtp_settings(args: argparse.Namespace) -> dict[str, str] | None:
    """The e-mail connector's settings from the ``--smtp-*`` options (None without a host);
    ValueError names what is missing or wrong."""
    if not args.smtp_host:
        given = [o for o in ("smtp_from", "smtp_to", "smtp_user") if getattr(args, o)]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --smtp-host (the SMTP server)")
        return None
    if not args.smtp_from or not args.smtp_to:
        raise ValueError(
            "--smtp-host needs --smtp-from (the sender) and --smtp-to (the recipients)"
        )
    password = ""
    if args.smtp_password_file:
        try:
            password = Path(args.smtp_password_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"--smtp-password-file: cannot read it ({error})") from None
    if bool(args.smtp_user) != bool(password):
        raise ValueError("--smtp-user and --smtp-password-file go together: give both or neither")
    recipients = [address.strip() for address in (args.smtp_to or "").split(",")]
    for flag, addresses in (("--smtp-from", [args.smtp_from or ""]), ("--smtp-to", recipients)):
        bad = [a for a in addresses if "@" not in email.utils.parseaddr(a)[1]]
        if bad:
            raise ValueError(f"{flag}: {bad[0]!r} is not an e-mail address (name@example.com)")
    return {
        "host": args.smtp_host,
        "port": str(args.smtp_port),
        "security": args.smtp_security,
        "username": args.smtp_user or "",
        "password": password,
        "from": args.smtp_from,
        "to": ", ".join(recipients),
    }


def _requested(args: argparse.Namespace, secrets_dir: Path) -> list[SinkConfig]:
    """The connectors the options ask for; ValueError names a bad or missing option."""
    if args.pagerduty_url and not args.pagerduty_routing_key:
        raise ValueError("--pagerduty-url needs --pagerduty-routing-key (the integration key)")
    urls = {
        "webhook": args.webhook_url,
        "slack": args.slack_url,
        "pagerduty": (args.pagerduty_url or PAGERDUTY_EVENTS_URL)
        if args.pagerduty_routing_key
        else None,
        "alertmanager": args.alertmanager_url,
        "teams": args.teams_url,
    }
    sinks = [
        sink_config(
            target, url, secrets_dir=secrets_dir, routing_key=args.pagerduty_routing_key or ""
        )
        for target, url in urls.items()
        if url
    ]
    smtp = smtp_settings(args)
    if smtp is not None:
        sinks.append(sink_config("email", secrets_dir=secrets_dir, smtp=smtp))
    if not sinks:
        raise ValueError(
            "no target given: pass at least one of --webhook-url, --slack-url, "
            "--pagerduty-routing-key, --alertmanager-url, --teams-url, --smtp-host"
        )
    return sinks


def _operate(
    verb: str, settings: Settings, change: Callable[[AuditTrail], list[dict[str, Any]]]
) -> list[dict[str, Any]] | None:
    """``change`` made with the command line's audit trail: its rows, or ``None`` (said on
    stderr) when the caller may not operate or Kafka Connect did not answer."""
    with audit_trail(settings, "cli") as audit:
        try:
            return change(audit)
        except OperatorRefusedError as error:
            print(f"foresight connect {verb}: {error}", file=sys.stderr)
        except (ConnectError, OSError) as error:
            print(
                f"foresight connect {verb}: Kafka Connect at {settings.kafka_connect_url}: {error}",
                file=sys.stderr,
            )
    return None


def _apply(args: argparse.Namespace, settings: Settings) -> int:
    try:
        sinks = _requested(args, connect_secrets_dir(Path(settings.stack_dir)))
    except ValueError as error:
        print(f"foresight connect apply: {error}", file=sys.stderr)
        return 2
    rows = _operate(
        "apply",
        settings,
        lambda audit: apply_alert_connectors(settings, audit, sinks, args.timeout),
    )
    if rows is None:
        return 1
    _print_states(rows, args.json)
    return 0 if all(running(row) for row in rows) else 1


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    names = [sink_name(target) for target in dict.fromkeys(args.targets)]
    secrets_dir = connect_secrets_dir(Path(settings.stack_dir))
    rows = _operate(
        "remove",
        settings,
        lambda audit: remove_alert_connectors(settings, audit, names, secrets_dir, args.timeout),
    )
    if rows is None:
        return 1
    gone = all(row["state"] == "NOT_APPLIED" for row in rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if gone else 1
    for row in rows:
        done = "removed" if row["removed"] else "not applied"
        secrets = ", its secrets file deleted" if row["secrets_removed"] else ""
        still = "" if row["state"] == "NOT_APPLIED" else f"; still {row['state']} in Connect"
        print(f"{done:<11} {row['connector']}{secrets}{still}")
    return 0 if gone else 1


def _status(args: argparse.Namespace, settings: Settings) -> int:
    names = {target: sink_name(target) for target in TARGETS}
    try:
        rows = [
            dict(connector_state(settings.kafka_connect_url, name), target=target)
            for target, name in names.items()
        ]
    except (ConnectError, OSError) as error:
        print(
            f"foresight connect status: Kafka Connect at {settings.kafka_connect_url}: {error}",
            file=sys.stderr,
        )
        return 1
    _print_states(rows, args.json)
    applied = [r for r in rows if r["state"] != "NOT_APPLIED"]
    return 0 if all(running(r) for r in applied) else 1


def register(subparsers: Any) -> None:
    connect = subparsers.add_parser(
        "connect", help="Kafka Connect sinks that deliver alerts to your tools and inboxes"
    )
    verbs = connect.add_subparsers(dest="verb", required=True)
    apply = verbs.add_parser(
        "apply", help="create or update the connector of each target given (idempotent)"
    )
    apply.add_argument("--webhook-url", help="generic webhook: the alert as JSON")
    apply.add_argument("--slack-url", help="Slack incoming webhook URL")
    apply.add_argument(
        "--pagerduty-routing-key", help="PagerDuty Events API v2 integration (routing) key"
    )
    apply.add_argument(
        "--pagerduty-url", help=f"PagerDuty events endpoint (default {PAGERDUTY_EVENTS_URL})"
    )
    apply.add_argument(
        "--alertmanager-url", help="Alertmanager alerts endpoint, e.g. http://am:9093/api/v2/alerts"
    )
    apply.add_argument("--teams-url", help="Microsoft Teams incoming webhook (Workflows) URL")
    apply.add_argument("--smtp-host", help="e-mail: the SMTP server's host")
    apply.add_argument("--smtp-port", type=int, default=587, help="its port (default 587)")
    apply.add_argument(
        "--smtp-security",
        choices=("starttls", "ssl", "none"),
        default="starttls",
        help="starttls (default; required, not opportunistic), ssl (port 465), or none",
    )
    apply.add_argument("--smtp-user", help="the account to authenticate as (default: none)")
    apply.add_argument(
        "--smtp-password-file", help="a file holding the account's password (never an argument)"
    )
    apply.add_argument("--smtp-from", help="the sender, e.g. 'Foresight <alerts@example.com>'")
    apply.add_argument("--smtp-to", help="the recipients, comma separated")
    apply.add_argument(
        "--timeout",
        type=option(Between(0)),
        default=30.0,
        help="seconds to wait for the connectors to run",
    )
    apply.add_argument("--json", action="store_true", help="print the states as JSON")
    apply.set_defaults(func=_apply)
    remove = verbs.add_parser(
        "remove", help="delete the connectors of the targets named, and their secrets files"
    )
    remove.add_argument(
        "targets",
        nargs="+",
        choices=sorted(TARGETS),
        metavar="TARGET",
        help=f"one or more of {', '.join(sorted(TARGETS))}",
    )
    remove.add_argument(
        "--timeout",
        type=option(Between(0)),
        default=30.0,
        help="seconds to wait for Connect to stop them",
    )
    remove.add_argument("--json", action="store_true", help="print what was removed as JSON")
    remove.set_defaults(func=_remove)
    status = verbs.add_parser("status", help="the state of each alert connector")
    status.add_argument("--json", action="store_true", help="print as JSON")
    status.set_defaults(func=_status)
