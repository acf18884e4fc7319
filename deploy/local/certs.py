"""Development certificates: a local CA, and a server certificate it signs for this machine.

``foresight certs dev`` writes them to ``<stack_dir>/certs`` (``FORESIGHT_STACK_DIR``): every
Foresight server can then serve TLS with ``server.pem`` and ``server-key.pem``, the local
stack's Kafka its SASL_SSL listener, and clients verify both with ``ca.pem``. The CA is made
once and kept, so clients that trust it keep trusting the server certificates made later (for
other names, or after one expired). Private keys are written mode 0600.

They are for development and tests on one machine: in production, give the servers
certificates from your own CA, through the same settings.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.private_files import write_private

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
SERVER_DAYS = 397  # the longest validity browsers accept for a server certificate
CA_DAYS = 3650
_ORGANIZATION = "Foresight development"


class CertsError(ValueError):
    """The certificates cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True)
class DevCerts:
    """Where the development certificates are, and what they cover."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path
    names: tuple[str, ...]
    expires: dt.datetime
    new_ca: bool

    def settings(self) -> dict[str, str]:
        """The settings that make Foresight's servers and clients use these certificates."""
        return {
            "FORESIGHT_TLS_CERT": str(self.cert),
            "FORESIGHT_TLS_KEY": str(self.key),
            "FORESIGHT_TLS_CA": str(self.ca),
            "KAFKA_SSL_CAFILE": str(self.ca),
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "ca": str(self.ca),
            "ca_key": str(self.ca_key),
            "cert": str(self.cert),
            "key": str(self.key),
            "names": list(self.names),
            "expires": self.expires.isoformat(),
            "new_ca": self.new_ca,
            "settings": self.settings(),
        }


def certs_folder(stack_dir: Path) -> Path:
    """Where ``foresight certs dev`` writes, and where the local stack looks."""
    return stack_dir.resolve() / "certs"


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if not name or any(c.isspace() or c in "/:@" for c in name):
        raise CertsError(
            f"{name!r} is neither a host name nor an IP address; name the server as clients "
            "reach it, e.g. --name foresight.internal --name 10.0.0.5"
        )
    return x509.DNSName(name)


def _key_usage(**granted: bool) -> x509.KeyUsage:
    """The key usage extension granting only ``granted``."""
    every = (
        *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
        *("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
    )
    return x509.KeyUsage(**{name: granted.get(name, False) for name in every})


def _load_ca(ca: Path, ca_key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.read_bytes())
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise CertsError(
            f"cannot read the development CA in {ca.parent}: {error}; remove ca.pem and "
            "ca-key.pem there to make a new CA (clients must then trust the new ca.pem)"
        ) from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{ca_key} is not the elliptic-curve key `certs dev` makes")
    return cert, key


def _new_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "Foresight development CA"),
        ]
    )
    usage = _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server_cert(
    names: Sequence[str],
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
        ]
    )
    usage = _key_usage(digital_signature=True, key_agreement=True)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8, unencrypted: what Python's ssl, uvicorn and Kafka's PEM key stores all read."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_dev_certs(folder: Path, names: Sequence[str] = ()) -> DevCerts:
    """Write a server certificate for ``localhost``, ``127.0.0.1``, ``::1`` and ``names``,
    signed by the CA in ``folder`` (made there first when missing).

    The server certificate and its key are replaced at every call; the CA is kept.
    """
    wanted = list(dict.fromkeys([*names, *LOCAL_NAMES]))
    for name in wanted:
        _general_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca-key.pem"
    now = dt.datetime.now(dt.UTC)
    new_ca = not (ca_path.is_file() and ca_key_path.is_file())
    if new_ca:
        ca, ca_key = _new_ca(now)
        write_private(ca_key_path, _pem_key(ca_key))
        ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    else:
        ca, ca_key = _load_ca(ca_path, ca_key_path)
        if ca.not_valid_after_utc < now + dt.timedelta(days=1):
            raise CertsError(
                f"the development CA {ca_path} expires {ca.not_valid_after_utc:%Y-%m-%d}; "
                f"remove ca.pem and ca-key.pem in {folder} to make a new one"
            )
    cert, key = _server_cert(wanted, ca, ca_key, now)
    cert_path, key_path = folder / "server.pem", folder / "server-key.pem"
    write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return DevCerts(
        ca=ca_path,
        ca_key=ca_key_path,
        cert=cert_path,
        key=key_path,
        names=tuple(wanted),
        expires=cert.not_valid_after_utc,
        new_ca=new_ca,
    )
