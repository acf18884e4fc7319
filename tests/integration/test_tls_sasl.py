"""One full path over TLS and SASL: ingest over https with a key, Kafka over SASL_SSL with
SCRAM-SHA-512, the worker over SASL_SSL with its /health over https, predictions read by a
consumer over SASL_SSL; clients without the CA, or with a wrong password, refused in words.

A private stack of its own (Kafka only, on free ports, in a temporary folder) carries the
SASL_SSL listener, so the session's stack is untouched; it is stopped by its own pids.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.http.keys import WRITE, KeysFile
from connectors.ingest_http import WRITE_PATH
from deploy.local.certs import DevCerts, certs_folder, make_dev_certs
from deploy.local.processes import free_port
from deploy.local.stack import CONTROLLER_PORT_OFFSET, SCRAM_USER, LocalStack
from streams import topics
from streams.commands.stack import create_topics, local_stack
from streams.settings import Settings, load_settings, setting_fields
from streams.worker_process import ForesightProcess, WorkerProcess
from tests.connectors.prometheus_proto import snappy, write_request
from tests.integration.kafka_io import TopicReader

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class SecureStack:
    stack: LocalStack
    settings: Settings  # Foresight pointed at the SASL_SSL listener, with TLS on its servers
    certs: DevCerts
    folder: Path

    def env(self, **overrides: str) -> dict[str, str]:
        """The settings as the environment of a Foresight process (those not at default)."""
        changed = {
            f.metadata["env"]: str(getattr(self.settings, f.name))
            for f in setting_fields()
            if getattr(self.settings, f.name) != f.default
        }
        return {**changed, **overrides}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    folder = tmp_path_factory.mktemp("secure")
    stack_dir = folder / "stack"
    certs = make_dev_certs(certs_folder(stack_dir))  # `foresight certs dev`, before the stack
    plain = load_settings(environ={}).replace(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port(beside=CONTROLLER_PORT_OFFSET)}",
        kafka_connect_url=f"http://127.0.0.1:{free_port()}",
        stack_dir=str(stack_dir),
        chdb_path=str(stack_dir / "chdb"),
        stack_kafka_sasl_port=free_port(),
    )
    stack = local_stack(plain, quiet=True)
    try:
        statuses = {s.name: s for s in stack.up(timeout=180, services=("kafka",))}
        assert statuses["kafka"].healthy, statuses["kafka"]
        assert statuses["kafka-sasl-ssl"].healthy, statuses["kafka-sasl-ssl"]
        settings = plain.replace(
            kafka_bootstrap_servers=f"127.0.0.1:{plain.stack_kafka_sasl_port}",
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username=SCRAM_USER,
            kafka_sasl_password_file=str(stack.scram_password_file()),
            kafka_ssl_cafile=str(certs.ca),
            tls_cert=str(certs.cert),
            tls_key=str(certs.key),
            tls_ca=str(certs.ca),
            keys_file=str(folder / "keys.json"),
            credentials_file=str(folder / "credentials"),
        )
        create_topics(settings)  # the admin client of the factory, over SASL_SSL
        yield SecureStack(stack, settings, certs, folder)
    finally:
        stack.down(wipe=True)


def _https_json(url: str, context: ssl.SSLContext | None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
async def worker(secure: SecureStack) -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(
        secure.settings,
        f"test-secure-{uuid.uuid4().hex[:8]}",
        secure.folder / "worker.log",
        FORESIGHT_IDLE_TIMEOUT_S="2",
        **secure.env(),
    ).start()
    try:
        await process.ready()  # its /health over https, probes produced over SASL_SSL
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def ingest(secure: SecureStack) -> Iterator[tuple[str, str]]:
    """``foresight ingest`` over https; its URL and a key of the write role."""
    key = KeysFile(secure.settings.keys_file).create("agents", [WRITE])[1]
    port = free_port()
    process = ForesightProcess(
        ["ingest"], secure.folder / "ingest.log", secure.env(FORESIGHT_INGEST_PORT=str(port))
    ).start()
    url = f"https://127.0.0.1:{port}"
    context = secure.settings.tls().client_context()
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if _https_json(f"{url}/health", context)[0] == 200:
                    break
            except OSError:
                pass
            assert process.alive(), (secure.folder / "ingest.log").read_text()
            assert time.monotonic() < deadline, "foresight ingest did not answer on https"
            time.sleep(0.2)
        yield url, key
    finally:
        process.stop()


async def test_remote_write_over_https_becomes_predictions_over_sasl_ssl(
    secure: SecureStack, worker: WorkerProcess, ingest: tuple[str, str]
) -> None:
    url, key = ingest
    entity = f"tls-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000) // 10_000 * 10_000
    series = [(now - 300_000 + 10_000 * i, 1.0 + (i % 3) / 10) for i in range(31)]
    body = snappy(write_request([({"__name__": "node_load1", "instance": entity}, series)]))
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
    }
    context = secure.settings.tls().client_context()
    async with TopicReader(secure.settings.kafka(), topics.PREDICTIONS.name) as reader:
        status, _ = await asyncio.to_thread(
            _https_json, f"{url}{WRITE_PATH}", context, body, headers
        )
        assert status == 204  # durable: the broker acknowledged every record over SASL_SSL
        # The worker's PredictionBatch for the entity, decoded: the whole path held.
        await reader.until(lambda rs: any(r[2]["entity"] == entity for r in rs), 120)

    health = worker.health()
    assert health is not None and health["status"] == "ok", health
    plain = f"http://127.0.0.1:{worker.port}/health"
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # the port speaks TLS only
        await asyncio.to_thread(_https_json, plain, None)
    untrusting = ssl.create_default_context()  # the system's CAs, not ours
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.to_thread(_https_json, f"{url}/health", untrusting)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("no CA", "presented a certificate this client does not trust"),
        ("wrong password", "refused the SCRAM-SHA-512 login of 'foresight'"),
        ("plaintext", "closed the connection"),
    ],
)
def test_clients_without_the_ca_or_the_password_are_refused_in_words(
    secure: SecureStack, change: str, reason: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    overrides = {
        "no CA": {"KAFKA_SSL_CAFILE": ""},
        "wrong password": {"KAFKA_SASL_PASSWORD_FILE": str(wrong)},
        "plaintext": {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
    }[change]
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "topics", "create"],
        env={**os.environ, **secure.env(**overrides)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert reason in done.stderr
    assert f"127.0.0.1:{secure.settings.stack_kafka_sasl_port}" in done.stderr


def test_the_connect_worker_runs_on_the_sasl_ssl_listener(secure: SecureStack) -> None:
    """With Foresight's settings pointing at the secured listener, the stack's Connect worker
    gets the same security, the password by reference to a 0600 file."""
    stack = local_stack(secure.settings, quiet=True)
    statuses = {s.name: s for s in stack.up(timeout=240, services=("connect",))}
    assert statuses["connect"].healthy, statuses["connect"]
    worker = stack.connect_config()
    assert worker["bootstrap.servers"] == secure.settings.kafka_bootstrap_servers
    assert worker["security.protocol"] == worker["consumer.security.protocol"] == "SASL_SSL"
    password = secure.settings.kafka().sasl_password
    assert not [key for key, value in worker.items() if password in value]
    internal = {worker[f"{kind}.storage.topic"] for kind in ("config", "offset", "status")}
    # Connect's REST port answers before its herder has created the internal topics.
    deadline = time.monotonic() + 60
    while not internal <= set(asyncio.run(_topics(secure.settings))):
        assert time.monotonic() < deadline, f"Connect made none of {internal} on the listener"
        time.sleep(1)


async def _topics(settings: Settings) -> list[str]:
    admin = settings.kafka().admin()
    await admin.start()
    try:
        listed: list[str] = await admin.list_topics()
        return listed
    finally:
        await admin.close()
