"""The worker's Faust app speaks to Kafka exactly as the client factory does, and serves its
port over TLS when the settings give a certificate."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from connectors.kafka_clients import KafkaConfig
from deploy.local.certs import DevCerts, make_dev_certs
from streams.app import broker_credentials, create_app
from streams.settings import Settings


@pytest.fixture
def certs(tmp_path: Path) -> DevCerts:
    return make_dev_certs(tmp_path / "certs")


def _without_context(options: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in options.items() if k not in ("bootstrap_servers", "ssl_context")}


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("PLAINTEXT", "SCRAM-SHA-512"),
        ("SSL", "SCRAM-SHA-512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_SSL", "PLAIN"),
    ],
)
def test_faust_gets_the_factorys_security(
    protocol: str, mechanism: str, certs: DevCerts, tmp_path: Path
) -> None:
    password = tmp_path / "pw"
    password.write_text("pw\n")
    kafka = KafkaConfig("b:9094", protocol, mechanism, "app", str(password), str(certs.ca))
    faust_options = dict(credentials_to_aiokafka_auth(broker_credentials(kafka)))
    ours = kafka.client_options()
    assert _without_context(faust_options) == _without_context(ours)
    assert (faust_options.get("ssl_context") is None) == (ours.get("ssl_context") is None)


def test_the_worker_app_carries_the_credentials_and_the_web_certificate(
    certs: DevCerts, tmp_path: Path
) -> None:
    password = tmp_path / "pw"
    password.write_text("pw\n")
    settings = Settings(
        kafka_bootstrap_servers="b:9094",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="app",
        kafka_sasl_password_file=str(password),
        kafka_ssl_cafile=str(certs.ca),
        tls_cert=str(certs.cert),
        tls_key=str(certs.key),
        worker_data_dir=str(tmp_path / "data"),
    )
    conf = create_app(settings).conf
    credentials = conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "app" and credentials.protocol.value == "SASL_SSL"
    assert conf.web_ssl_context is not None
    plain = create_app(Settings(worker_data_dir=str(tmp_path / "data"))).conf
    assert plain.broker_credentials is None and plain.web_ssl_context is None
