"""Alerts as e-mail (the SMTP sink) and as Microsoft Teams cards (the HTTP sink), through a
real Kafka Connect worker.

The SMTP sink is a plugin a running worker loads only when it starts, so these tests bring up
a stack of their own (Kafka, Connect with both plugins built onto its path, Redis) on free
ports in a temporary folder, as ``tests/integration/test_stack_lifecycle.py`` does, and take it
down after; the session's stack is not touched. A local SMTP server (aiosmtpd) stands in for
the mail server, with an account to log in to, and refuses one mailbox for good.

``foresight connect apply --teams-url ... --smtp-...`` applies both connectors, as a user
would; FIRING then RESOLVED become two mails, the second answering the first, and two cards;
a refused mail goes to the dead letter queue with the server's reason; the password and the
recipients are in no topic and no log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from connectors.alert_payloads import payloads_for
from connectors.alert_sinks import SinkConfig, apply_sink, ensure_sink_topics, sink_config
from connectors.http.keys import OPERATE, KeysFile
from deploy.local.processes import free_port
from deploy.local.stack import CONTROLLER_PORT_OFFSET, connect_secrets_dir
from streams.cli import main
from streams.commands.stack import create_topics, local_stack
from streams.settings import Settings, load_settings
from tests.integration.http_receiver import Receiver, serving
from tests.integration.kafka_io import TopicReader, read_topics

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
PASSWORD = "pa55-f0r-mail"
ACCOUNT = "foresight"
REFUSED = "nobody@example.com"
DLQ = "alerts.connect.dlq"


class Mailbox:
    """An SMTP server's handler: keeps every mail it accepts; refuses REFUSED for good."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 <nobody@example.com>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(content)))
        return "250 Message accepted for delivery"


def _login(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
           data: Any) -> AuthResult:  # fmt: skip
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        ACCOUNT.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A stack of this module's own, on free ports; stopped, and its data wiped, after."""
    folder = tmp_path_factory.mktemp("mail-stack")
    settings = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port(beside=CONTROLLER_PORT_OFFSET)}",
        kafka_connect_url=f"http://127.0.0.1:{free_port()}",
        feature_store_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=str(folder / "stack"),
        chdb_path=str(folder / "stack" / "chdb"),
        keys_file=str(folder / "keys.json"),
        credentials_file=str(folder / "credentials"),
    )
    local = local_stack(settings, quiet=True)
    try:
        statuses = local.up(timeout=300)
        assert all(s.healthy for s in statuses), statuses
        connect = next(s for s in statuses if s.name == "connect")
        assert "has the HTTP and SMTP sink plugins" in connect.detail
        create_topics(settings)
        yield settings
    finally:
        local.down(wipe=True)


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=_login,
        auth_require_tls=False,  # a local relay; the connector is told security=none
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def alert(entity: str, status: str) -> dict[str, Any]:
    resolved = status == "RESOLVED"
    return {
        "dedup_key": f"failure_risk/{entity}",
        "alert_id": f"failure_risk/{entity}@{T0}",
        "status": status,
        "severity": "CRITICAL",
        "rule": "failure_risk",
        "entity": entity,
        "summary": f"memory of {entity} runs out within 30 minutes",
        "value": 0.93,
        "labels": {"metric": "memory_percent"},
        "starts_at": T0,
        "ends_at": T0 + 600_000 if resolved else None,
        "event_time": T0 + 600_000 if resolved else T0,
    }


async def _produce(
    settings: Settings, target: str, topic: str, alerts: list[dict[str, Any]]
) -> None:
    producer = settings.kafka().producer()
    await producer.start()
    try:
        for record in alerts:
            _, value = payloads_for(record)[target]
            await producer.send_and_wait(topic, value, key=record["dedup_key"].encode())
    finally:
        await producer.stop()


async def _until(done: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        await asyncio.sleep(0.25)


async def test_an_episode_reaches_teams_as_two_cards_and_inboxes_as_two_mails(
    stack: Settings,
    mailbox: tuple[Mailbox, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler, smtp_port = mailbox
    _, key = KeysFile(stack.keys_file).create("operator", [OPERATE])
    password_file = tmp_path / "smtp-password"
    password_file.write_text(PASSWORD + "\n")
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "KAFKA_CONNECT_URL": stack.kafka_connect_url,
        "FORESIGHT_STACK_DIR": stack.stack_dir,
        "FORESIGHT_KEYS_FILE": stack.keys_file,
        "FORESIGHT_CREDENTIALS_FILE": stack.credentials_file,
        "FORESIGHT_API_KEY": key,
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    recipients = "oncall@example.com, Ops Team <ops@example.com>"
    with serving(Receiver()) as teams:
        code = await asyncio.to_thread(
            main,
            [
                "connect", "apply", "--json", "--timeout", "120",
                "--teams-url", f"{teams.url}/webhookb2/T3AMS",
                "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port),
                "--smtp-security", "none", "--smtp-user", ACCOUNT,
                "--smtp-password-file", str(password_file),
                "--smtp-from", "Foresight <alerts@example.com>", "--smtp-to", recipients,
            ],
        )  # fmt: skip
        states = json.loads(capsys.readouterr().out)
        assert code == 0, states
        episode = [alert("db-7", "FIRING"), alert("db-7", "RESOLVED")]
        # An alert whose entity tries to end the Subject and add a header of its own.
        forged = alert("db-8\r\nBcc: attacker@example.com", "FIRING")
        await _produce(stack, "teams", "alerts.teams.json", episode)
        await _produce(stack, "email", "alerts.email.json", [*episode, forged])
        await _until(lambda: len(teams.requests) >= 2, "two Teams cards")
        await _until(lambda: len(handler.mails) >= 3, "three mails")
        cards = [r.body for r in teams.requests]

    assert {s["connector"]: s["state"] for s in states} == {
        "foresight-alerts-teams": "RUNNING",
        "foresight-alerts-email": "RUNNING",
    }
    firing_card, resolved_card = (c["attachments"][0]["content"] for c in cards)
    assert firing_card["body"][0]["text"] == "CRITICAL failure\\_risk firing on db-7"
    assert resolved_card["body"][0]["color"] == "Good"
    (to_first, first), (to_second, second), (to_forged, forged_mail) = handler.mails
    assert to_first == to_second == to_forged == ["oncall@example.com", "ops@example.com"]
    assert forged_mail["Bcc"] is None
    assert forged_mail["Subject"].startswith("[FIRING] CRITICAL failure_risk firing on db-8\\r")
    assert first["Subject"] == "[FIRING] CRITICAL failure_risk firing on db-7"
    assert second["Subject"] == "[RESOLVED] CRITICAL failure_risk resolved on db-7"
    assert first["From"] == "Foresight <alerts@example.com>"
    assert second["In-Reply-To"] == second["References"] == first["Message-ID"]
    body = first.get_payload(decode=True)
    assert isinstance(body, bytes) and b"memory of db-7 runs out within 30 minutes" in body


async def test_a_mail_the_server_refuses_goes_to_the_dead_letter_queue(
    stack: Settings, mailbox: tuple[Mailbox, int], unique: str
) -> None:
    handler, smtp_port = mailbox
    smtp = {
        "host": "127.0.0.1",
        "port": str(smtp_port),
        "security": "none",
        "username": ACCOUNT,
        "password": PASSWORD,
        "from": "alerts@example.com",
        "to": REFUSED,
    }
    secrets_dir = connect_secrets_dir(Path(stack.stack_dir))

    def connector(name: str, to: str) -> SinkConfig:
        sink = sink_config(
            "email",
            secrets_dir=secrets_dir,
            smtp={**smtp, "to": to},
            topic=f"test.mail.{name}.{unique}",
            name=f"test-mail-{name}-{unique}",
        )
        config = {**sink.config, "consumer.override.auto.offset.reset": "earliest"}
        return dataclasses.replace(sink, config=config)

    refused, delivered = connector("refused", REFUSED), connector("ok", "oncall@example.com")
    sinks = [refused, delivered]
    await ensure_sink_topics(stack.kafka(), sinks, 1, {})
    async with TopicReader(stack.kafka(), DLQ) as dead_letters:
        for sink in sinks:
            apply_sink(stack.kafka_connect_url, sink)
        await _produce(stack, "email", refused.topic, [alert("web-3", "FIRING")])
        await _produce(stack, "email", delivered.topic, [alert("web-4", "FIRING")])
        letters = await dead_letters.until(lambda rs: len(rs) >= 1, 120)
        await _until(lambda: any("web-4" in m["Subject"] for _, m in handler.mails), "the mail")

    (_, dedup_key, value) = letters[0]
    assert dedup_key == b"failure_risk/web-3" and b"web-3" in value
    (letter,) = [r for r in await read_topics(stack.kafka(), [DLQ])
                 if refused.topic.encode() in r]  # fmt: skip
    assert b"refused the mail" in letter and b"550 5.1.1 <address>: no such mailbox" in letter
    assert [m["Subject"] for _, m in handler.mails if "web-3" in m["Subject"]] == []
    records = await read_topics(
        stack.kafka(),
        ["_foresight-connect-configs", "_foresight-connect-status", DLQ, refused.topic],
    )
    logs = b"".join(p.read_bytes() for p in local_stack(stack, quiet=True).logs("connect"))
    assert refused.name.encode() in logs  # the right log is searched
    for secret in (PASSWORD.encode(), REFUSED.encode(), b"oncall@example.com"):
        assert secret not in logs
        assert not [r for r in records if secret in r]
