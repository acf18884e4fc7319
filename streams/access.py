"""API keys, rate limits, TLS and the audit trail from the settings: what a server checks, what
a client sends and trusts, and where what they did is recorded.

Every Foresight server builds its :class:`~connectors.http.auth.Gatekeeper` here, so the rules
of the first start (make a key, print it once) and of the bind (beyond the loopback, refuse to
start with a key from the documentation) are the same everywhere, and every refused key goes to
the process's :class:`~connectors.audit.AuditTrail` (:func:`audit_trail`). Local clients reach
the servers through :func:`local_url` and :func:`open_local`: https, verified with
``FORESIGHT_TLS_CA``, when the servers have a certificate.
"""

from __future__ import annotations

import sys
import urllib.request
from http.client import HTTPResponse
from pathlib import Path

from connectors.audit import AuditTrail, command_origin
from connectors.clickhouse_sink import loopback_for
from connectors.http.app import is_loopback
from connectors.http.auth import Gatekeeper, RateLimits
from connectors.http.keys import CLIENT_KEY_ENV, KeysError, KeysFile, client_key
from streams.codecs import codec_for
from streams.settings import Settings


class StartRefusedError(RuntimeError):
    """A server must not start with these keys on this interface; the message says why."""


def keys_file(settings: Settings) -> KeysFile:
    return KeysFile(settings.keys_file)


def audit_trail(settings: Settings, service: str) -> AuditTrail:
    """The audit trail of the process ``service`` (``cli``, ``ingest``, ``gateway``, ``sink``),
    to ``FORESIGHT_AUDIT_TOPIC``; not started (``with audit_trail(...) as audit:``)."""
    return AuditTrail(
        settings.kafka(),
        settings.audit_topic,
        service,
        origin=command_origin() if service == "cli" else "",
        codec=codec_for(settings),
    )


def gatekeeper(settings: Settings, server: str, audit: AuditTrail) -> Gatekeeper:
    """The gatekeeper of the server ``server`` (a name for messages), recording refused keys
    in ``audit``.

    Without a keys file, makes one with a key of every role, prints the key once on stderr and
    saves it in the credentials file. Raises :class:`StartRefusedError` when the keys file
    holds no key or is malformed, or when it holds a documented key and ``FORESIGHT_BIND_HOST``
    is not a loopback address.
    """
    keys = keys_file(settings)
    made = keys.create_first(Path(settings.credentials_file))
    if made is not None:
        print(
            f"foresight {server}: {keys.path} did not exist, so it was made with one key of "
            f"every role (read, write, operate). The key is shown this once:\n\n    {made}\n\n"
            f"Local clients (foresight sql, status, demo) read it from "
            f"{settings.credentials_file} (mode 0600), or from {CLIENT_KEY_ENV}. Make a key "
            "per client with `foresight keys create NAME --roles read,write`.",
            file=sys.stderr,
            flush=True,
        )
    try:
        entries = keys.entries()
        documented = keys.documented()
    except KeysError as error:
        raise StartRefusedError(str(error)) from error
    if not entries:
        raise StartRefusedError(
            f"{keys.path} holds no key, so nothing could get in: create one with "
            "`foresight keys create NAME --roles read,write,operate`"
        )
    if documented and not is_loopback(settings.bind_host):
        named = ", ".join(f"{e.id} ({e.name})" for e in documented)
        raise StartRefusedError(
            f"refusing to listen on {settings.bind_host!r}: key {named} is an example key from "
            "Foresight's documentation, which anyone can read. Revoke it "
            "(`foresight keys revoke ID`) and give clients keys from `foresight keys create`, "
            "or listen on the loopback only (FORESIGHT_BIND_HOST=127.0.0.1)"
        )
    return Gatekeeper(keys, rate_limits(settings), audit=audit.refused)


def rate_limits(settings: Settings) -> RateLimits:
    """The rate limits the settings give every server."""
    return RateLimits(
        per_key=settings.rate_limit_per_key,
        per_address=settings.rate_limit_per_address,
        auth_failures=settings.auth_failure_limit,
    )


def open_gatekeeper(settings: Settings) -> Gatekeeper:
    """The gatekeeper of a server whose only doors are open (``/health``, ``/metrics``): the
    per-address rate limit alone. No door asks for a key, so the keys file is never read, nor
    made, and no key can be refused."""
    return Gatekeeper(keys_file(settings), rate_limits(settings))


def local_client_key(settings: Settings) -> str | None:
    """The key this machine's clients send: ``FORESIGHT_API_KEY``, else the credentials file."""
    return client_key(settings.credentials_file)


def local_url(settings: Settings, port: int, path: str = "/") -> str:
    """The URL of ``path`` on the Foresight server of this machine listening on ``port``."""
    return settings.tls().url(loopback_for(settings.bind_host), port, path)


def open_local(
    settings: Settings, request: str | urllib.request.Request, timeout: float
) -> HTTPResponse:
    """``urlopen`` for a Foresight server of this machine: its certificate is checked against
    ``FORESIGHT_TLS_CA`` (raises like ``urlopen``: ``HTTPError``, ``URLError``)."""
    response: HTTPResponse = urllib.request.urlopen(
        request, timeout=timeout, context=settings.tls().client_context()
    )
    return response
