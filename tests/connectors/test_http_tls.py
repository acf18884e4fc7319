"""TLS on the shared HTTP stack, on a real socket: https only when given a certificate, a client
that trusts the CA gets in, one that does not is refused; bad TLS settings are named."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from connectors.http.app import HttpServer, create_app
from connectors.http.auth import Gatekeeper
from connectors.http.keys import KeysFile
from connectors.http.tls import TlsConfig, TlsError
from deploy.local.certs import DevCerts, make_dev_certs
from streams.settings import load_settings


@pytest.fixture
def certs(tmp_path: Path) -> DevCerts:
    return make_dev_certs(tmp_path / "certs")


def _get(url: str, context: ssl.SSLContext | None) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return response.status, json.loads(response.read())


async def test_a_server_with_a_certificate_serves_https_only(
    certs: DevCerts, tmp_path: Path
) -> None:
    tls = TlsConfig(str(certs.cert), str(certs.key), str(certs.ca))
    app = create_app("test", Gatekeeper(KeysFile(tmp_path / "keys.json")))
    server = HttpServer(app, "127.0.0.1", 0, tls)
    await server.start()
    try:
        url = tls.url("127.0.0.1", server.port, "/health")
        assert url.startswith("https://")
        assert await asyncio.to_thread(_get, url, tls.client_context()) == (200, {"status": "ok"})
        untrusting = ssl.create_default_context()  # the system's CAs, not ours
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(_get, url, untrusting)
        plain = f"http://127.0.0.1:{server.port}/health"
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            await asyncio.to_thread(_get, plain, None)
    finally:
        await server.stop()


def test_without_a_certificate_everything_stays_plain() -> None:
    tls = TlsConfig()
    assert not tls.enabled
    assert tls.url("127.0.0.1", 8765, "/ws") == "http://127.0.0.1:8765/ws"
    assert tls.ws_scheme == "ws"
    assert tls.server_context() is None and tls.client_context() is None
    assert load_settings(environ={}).tls() == tls


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FORESIGHT_TLS_CERT": "{cert}"}, "FORESIGHT_TLS_CERT is set but FORESIGHT_TLS_KEY"),
        ({"FORESIGHT_TLS_KEY": "{key}"}, "FORESIGHT_TLS_KEY is set but FORESIGHT_TLS_CERT"),
        (
            {"FORESIGHT_TLS_CERT": "/no/cert.pem", "FORESIGHT_TLS_KEY": "{key}"},
            "FORESIGHT_TLS_CERT is '/no/cert.pem', which is not a file",
        ),
        (
            {
                "FORESIGHT_TLS_CERT": "{cert}",
                "FORESIGHT_TLS_KEY": "{key}",
                "FORESIGHT_TLS_CA": "/x",
            },
            "FORESIGHT_TLS_CA is '/x', which is not a file",
        ),
    ],
)
def test_tls_settings_that_do_not_fit_are_refused_at_load(
    certs: DevCerts, environ: dict[str, str], message: str
) -> None:
    filled = {k: v.format(cert=certs.cert, key=certs.key) for k, v in environ.items()}
    with pytest.raises(TlsError, match=message):
        load_settings(environ=filled)


def test_a_key_that_is_not_the_certificates_is_named(certs: DevCerts, tmp_path: Path) -> None:
    other = make_dev_certs(tmp_path / "other")
    with pytest.raises(TlsError, match=r"cannot load the certificate .* with the key"):
        TlsConfig(str(certs.cert), str(other.key)).server_context()


def test_settings_map_to_the_servers_and_clients_tls(certs: DevCerts) -> None:
    settings = load_settings(
        environ={
            "FORESIGHT_TLS_CERT": str(certs.cert),
            "FORESIGHT_TLS_KEY": str(certs.key),
            "FORESIGHT_TLS_CA": str(certs.ca),
        }
    )
    assert settings.tls() == TlsConfig(str(certs.cert), str(certs.key), str(certs.ca))
    assert settings.tls().url("::1", 9201) == "https://[::1]:9201/"
