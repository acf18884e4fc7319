"""TLS for Foresight's servers, and for the local clients that call them.

One certificate and key serve every server: ingest, the sink's SQL endpoint and ``/metrics``,
the gateway (its HTTP routes and its WebSocket feed, then ``wss``) and the worker's port. With
them set, a server speaks TLS only; without them, plain HTTP (the default). Local clients (the
command line, the demo, tests) follow the same settings: ``https`` when the servers have a
certificate, verified against the CA given (or the system's trusted CAs).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsError(ValueError):
    """The TLS files are missing, unreadable or do not match; the message says which."""


@dataclass(frozen=True)
class TlsConfig:
    """The certificate (chain) and key servers present, and the CA clients trust.

    Parameters
    ----------
    cert, key
        PEM files (``FORESIGHT_TLS_CERT``, ``FORESIGHT_TLS_KEY``); both or neither. Empty
        (the default): plain HTTP.
    ca
        PEM file of the CA clients verify the servers with (``FORESIGHT_TLS_CA``); empty: the
        system's trusted CAs.
    """

    cert: str = ""
    key: str = ""
    ca: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            given, missing = (
                ("FORESIGHT_TLS_CERT", "FORESIGHT_TLS_KEY")
                if self.cert
                else ("FORESIGHT_TLS_KEY", "FORESIGHT_TLS_CERT")
            )
            raise TlsError(
                f"{given} is set but {missing} is not: a server needs both its certificate "
                "and its private key (`foresight certs dev` makes a pair for this machine)"
            )
        for setting, path in (
            ("FORESIGHT_TLS_CERT", self.cert),
            ("FORESIGHT_TLS_KEY", self.key),
            ("FORESIGHT_TLS_CA", self.ca),
        ):
            if path and not Path(path).is_file():
                raise TlsError(
                    f"{setting} is {path!r}, which is not a file; give the path of a PEM "
                    "file (`foresight certs dev` makes them for this machine)"
                )

    @property
    def enabled(self) -> bool:
        """Whether servers serve TLS (and clients use it)."""
        return bool(self.cert)

    @property
    def scheme(self) -> str:
        """``https`` or ``http``."""
        return "https" if self.enabled else "http"

    @property
    def ws_scheme(self) -> str:
        """``wss`` or ``ws``."""
        return "wss" if self.enabled else "ws"

    def url(self, host: str, port: int, path: str = "/") -> str:
        """The URL of ``path`` on a Foresight server at ``host:port``."""
        where = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{where}:{port}{path}"

    def server_context(self) -> ssl.SSLContext | None:
        """What a server wraps its sockets with (TLS 1.2 or newer); ``None`` without TLS."""
        if not self.enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:
            raise TlsError(
                f"cannot load the certificate {self.cert} with the key {self.key}: {error}; "
                "both must be PEM, the key unencrypted and belonging to the certificate"
            ) from error
        return context

    def client_context(self) -> ssl.SSLContext | None:
        """What a client verifies a Foresight server with; ``None`` without TLS."""
        return verifying_context(self.ca, "FORESIGHT_TLS_CA") if self.enabled else None


def verifying_context(cafile: str, setting: str) -> ssl.SSLContext:
    """A client's TLS context: the server's certificate must chain to ``cafile`` (empty: the
    system's trusted CAs) and name the host connected to. ``setting`` names ``cafile`` in
    errors."""
    try:
        return ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError) as error:
        raise TlsError(f"cannot load {setting} {cafile!r}: {error}") from error
