"""The one Kafka client factory: how the settings become every client's options, what it
refuses, and that no client of the project is built anywhere else."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import pytest

from connectors.kafka_clients import KafkaConfig, KafkaConfigError, KafkaRefusedError
from deploy.local.certs import make_dev_certs
from deploy.local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka.password"
    path.write_text("s3cret-pw\n")
    return path


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    return make_dev_certs(tmp_path / "certs").ca


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert KafkaConfig().client_options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_maps_to_scram_over_verified_tls(password_file: Path, ca: Path) -> None:
    kafka = KafkaConfig(
        "b1:9094,b2:9094", "SASL_SSL", "SCRAM-SHA-512", "app", str(password_file), str(ca)
    )
    options = kafka.client_options()
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "b1:9094,b2:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app",
        "sasl_plain_password": "s3cret-pw",  # the file's line, without its newline
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    trusted = [cert["subject"] for cert in context.get_ca_certs()]  # only the CA given
    assert trusted == [
        (
            (("organizationName", "Foresight development"),),
            (("commonName", "Foresight development CA"),),
        )
    ]


def test_ssl_alone_has_no_sasl_and_sasl_plaintext_no_tls(password_file: Path) -> None:
    tls_only = KafkaConfig("b:9093", "SSL").client_options()
    assert set(tls_only) == {"bootstrap_servers", "security_protocol", "ssl_context"}
    sasl_only = KafkaConfig("b:9092", "SASL_PLAINTEXT", "PLAIN", "u", str(password_file))
    assert "ssl_context" not in sasl_only.client_options()
    assert sasl_only.client_options()["sasl_mechanism"] == "PLAIN"


def test_each_client_keeps_its_own_options_beside_the_shared_ones(password_file: Path) -> None:
    kafka = KafkaConfig("b:9092", "SASL_PLAINTEXT", "SCRAM-SHA-256", "u", str(password_file))
    options = kafka.options(acks="all", linger_ms=5, max_partition_fetch_bytes=4 << 20)
    assert options["acks"] == "all" and options["max_partition_fetch_bytes"] == 4 << 20
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    with pytest.raises(TypeError, match="come from the KafkaConfig"):
        kafka.options(security_protocol="PLAINTEXT")
    with pytest.raises(TypeError, match="bootstrap_servers"):
        kafka.options(bootstrap_servers="elsewhere:9092")


def test_the_password_never_shows_in_repr_or_describe(password_file: Path) -> None:
    kafka = KafkaConfig("b:9094", "SASL_SSL", "SCRAM-SHA-512", "app", str(password_file))
    assert "s3cret" not in repr(kafka) and "s3cret" not in kafka.describe()
    assert kafka.describe() == "b:9094 (SASL_SSL, SCRAM-SHA-512 as app)"
    # repr is how a benchmark hands the configuration to a child process
    assert eval(repr(kafka), {"KafkaConfig": KafkaConfig}) == kafka


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL is 'TLS'; use one of PLAINTEXT"),
        (
            {"security_protocol": "SASL_SSL"},
            "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password_file": "/nope"},
            "cannot read the SASL password from KAFKA_SASL_PASSWORD_FILE '/nope'",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u"},
            "KAFKA_SASL_MECHANISM is 'GSSAPI'; use one of SCRAM-SHA-512",
        ),
        (
            {"security_protocol": "SSL", "ssl_cafile": "/no/ca.pem"},
            "KAFKA_SSL_CAFILE is '/no/ca.pem'",
        ),
    ],
)
def test_settings_that_do_not_fit_are_named(fields: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaConfigError, match=re.escape(message)):
        KafkaConfig("b:9092", **fields)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(KafkaConfigError, match="is empty; write the password of 'u'"):
        KafkaConfig("b:9092", "SASL_SSL", sasl_username="u", sasl_password_file=str(empty))


def test_no_kafka_client_is_built_outside_the_factory() -> None:
    """Every producer, consumer and admin client comes from connectors/kafka_clients.py, so
    none can miss the security settings; the Faust app gets them as broker_credentials."""
    built = re.compile(r"\bAIOKafka(Producer|Consumer|AdminClient|Client)\(")
    folders = ("connectors", "streams", "deploy", "load-tests", "tests")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "kafka_clients.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if built.search(line)
    ]
    assert found == []


async def test_a_refused_start_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka logs "Unable connect to ..." as it gives up; the refusal says it in full, so
    a command without Kafka printed the same failure twice."""
    closed = f"127.0.0.1:{free_port()}"
    refused = pytest.raises(KafkaRefusedError, match=f"nothing answers as Kafka at {closed}")
    with caplog.at_level(logging.DEBUG, logger="aiokafka"), refused:
        await KafkaConfig(closed).producer().start()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
