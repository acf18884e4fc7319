"""The local stack's Connect worker, for brokers that need TLS or SASL: the same security as
Foresight's clients, for its own clients and its connectors', the password by reference."""

from __future__ import annotations

from pathlib import Path

from connectors.kafka_clients import KafkaConfig
from deploy.local.stack import connect_kafka_security


def _properties(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines)


def test_plaintext_adds_nothing(tmp_path: Path) -> None:
    assert connect_kafka_security(KafkaConfig(), tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_sasl_ssl_reaches_the_worker_and_every_connector_client(tmp_path: Path) -> None:
    password, ca = tmp_path / "pw", tmp_path / "ca.pem"
    password.write_text('p"w\\1\n')
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    secrets = tmp_path / "secrets"
    kafka = KafkaConfig("b:9094", "SASL_SSL", "SCRAM-SHA-512", "app", str(password), str(ca))
    worker = _properties(connect_kafka_security(kafka, secrets))
    secrets_file = secrets / "kafka-client.properties"
    expected = {
        "security.protocol": "SASL_SSL",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="app" password="${{file:{secrets_file}:password}}";',
    }
    for prefix in ("", "producer.", "consumer.", "admin."):
        assert {k.removeprefix(prefix): v for k, v in worker.items() if k.startswith(prefix)
                and k.removeprefix(prefix) in expected} == expected  # fmt: skip
    assert 'p"w' not in "".join(worker.values())
    # The password, escaped for the JAAS quotes, then for the properties file.
    assert secrets_file.read_text().splitlines()[-1] == 'password=p\\\\"w\\\\\\\\1'
    assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"


def test_plain_sasl_uses_the_plain_login_module(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("pw")
    kafka = KafkaConfig("b:9092", "SASL_PLAINTEXT", "PLAIN", "app", str(password))
    worker = _properties(connect_kafka_security(kafka, tmp_path / "secrets"))
    assert worker["security.protocol"] == "SASL_PLAINTEXT"
    assert worker["sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
    )
    assert "ssl.truststore.location" not in worker
