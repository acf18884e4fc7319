"""``foresight certs dev``: a CA kept across runs, a server certificate a real TLS client
accepts for each of its names, private keys only their owner reads."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from deploy.local.certs import CertsError, DevCerts, make_dev_certs
from streams.cli import main


def _handshake(certs: DevCerts, server_name: str, ca: Path) -> str:
    """Serve one TLS handshake with ``certs`` and connect to it as ``server_name``, trusting
    ``ca``; returns the TLS version agreed (raises ``ssl.SSLError`` if the client refuses)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs.cert, certs.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass  # the client refused the certificate: its error is what the test reads

    serving = threading.Thread(target=accept)
    serving.start()
    try:
        client_context = ssl.create_default_context(cafile=ca)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            version = tls.version() or ""
        return version
    finally:
        serving.join(timeout=5)
        listener.close()


def test_server_certificate_is_trusted_for_every_name(tmp_path: Path) -> None:
    certs = make_dev_certs(tmp_path / "certs", ["foresight.internal"])
    assert certs.new_ca
    assert certs.names == ("foresight.internal", "localhost", "127.0.0.1", "::1")
    for name in ("localhost", "127.0.0.1", "foresight.internal"):
        assert _handshake(certs, name, certs.ca).startswith("TLSv1.")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(certs, "elsewhere.example", certs.ca)


def test_a_client_without_the_ca_refuses_the_certificate(tmp_path: Path) -> None:
    certs = make_dev_certs(tmp_path / "certs")
    other = make_dev_certs(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(certs, "127.0.0.1", other.ca)


def test_private_keys_are_the_owners_only(tmp_path: Path) -> None:
    certs = make_dev_certs(tmp_path / "certs")
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in (certs.key, certs.ca_key)} == {
        "server-key.pem": "0o600",
        "ca-key.pem": "0o600",
    }


def test_the_ca_is_kept_and_new_server_certificates_chain_to_it(tmp_path: Path) -> None:
    first = make_dev_certs(tmp_path / "certs")
    ca = first.ca.read_bytes()
    server = first.cert.read_bytes()
    second = make_dev_certs(tmp_path / "certs", ["10.1.2.3"])
    assert not second.new_ca
    assert second.ca.read_bytes() == ca
    assert second.cert.read_bytes() != server
    assert _handshake(second, "10.1.2.3", first.ca).startswith("TLSv1.")


@pytest.mark.parametrize("name", ["", "two words", "https://host", "user@host"])
def test_a_name_that_is_no_host_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CertsError, match="neither a host name nor an IP address"):
        make_dev_certs(tmp_path / "certs", [name])
    assert not (tmp_path / "certs").exists()


def test_command_prints_paths_and_settings_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORESIGHT_STACK_DIR", str(tmp_path / "stack"))
    assert main(["certs", "dev", "--name", "gw.internal", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    folder = tmp_path.resolve() / "stack" / "certs"
    assert made["cert"] == str(folder / "server.pem")
    assert made["names"][0] == "gw.internal"
    assert made["settings"] == {
        "FORESIGHT_TLS_CERT": str(folder / "server.pem"),
        "FORESIGHT_TLS_KEY": str(folder / "server-key.pem"),
        "FORESIGHT_TLS_CA": str(folder / "ca.pem"),
        "KAFKA_SSL_CAFILE": str(folder / "ca.pem"),
    }


def test_command_says_what_was_wrong(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["certs", "dev", "--dir", str(tmp_path), "--name", "a b"]) == 1
    assert "'a b' is neither a host name nor an IP address" in capsys.readouterr().err
