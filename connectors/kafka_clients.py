"""The one place Foresight builds Kafka clients.

Every producer, consumer and admin client of the project comes from a :class:`KafkaConfig`
(the brokers and how to talk to them: PLAINTEXT by default, or TLS and SASL), so no client can
forget the security the others use; each caller adds only its own options (fetch sizes, acks,
linger, request sizes, group). The Faust worker takes the same configuration through
``broker_credentials`` (:mod:`streams.app`), and the local stack's Connect worker through its
properties (:mod:`deploy.local.stack`).

Passwords come from a file (``KAFKA_SASL_PASSWORD_FILE``), read when the configuration is
made, and never appear in its ``repr``. A client that cannot start says why: aiokafka only
says "Unable to bootstrap", so the factory's clients then open one connection to the first
broker themselves and raise :class:`KafkaRefusedError` with the reason found (a certificate
not trusted, a SASL login refused, a listener that speaks another protocol, nothing there).
What aiokafka logs while such a start fails ("Unable connect to ...") is dropped, since the
reason says it in full; a start that succeeds logs it as aiokafka would have.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from connectors.http.tls import verifying_context

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_SECURITY_OPTIONS = {"security_protocol", "ssl_context", "sasl_mechanism",
                     "sasl_plain_username", "sasl_plain_password"}  # fmt: skip


class KafkaConfigError(ValueError):
    """The Kafka settings do not fit together; the message names the setting and the fix."""


class KafkaRefusedError(KafkaConnectionError):  # type: ignore[misc]  # untyped aiokafka
    """A client could not start; the message says why, and which setting to look at."""


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are and how every client talks to them.

    Parameters
    ----------
    bootstrap_servers
        Brokers, comma separated (``KAFKA_BOOTSTRAP_SERVERS``, default ``127.0.0.1:9092``).
    security_protocol
        ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``
        (``KAFKA_SECURITY_PROTOCOL``).
    sasl_mechanism
        ``SCRAM-SHA-512`` (default), ``SCRAM-SHA-256`` or ``PLAIN`` (``KAFKA_SASL_MECHANISM``).
    sasl_username, sasl_password_file
        The SASL user, and a file holding its password (``KAFKA_SASL_USERNAME``,
        ``KAFKA_SASL_PASSWORD_FILE``); needed with the SASL protocols.
    ssl_cafile
        PEM file of the CA that signed the brokers' certificates (``KAFKA_SSL_CAFILE``); empty:
        the system's trusted CAs.

    Examples
    --------
    >>> KafkaConfig("127.0.0.1:9092").client_options()
    {'bootstrap_servers': '127.0.0.1:9092', 'security_protocol': 'PLAINTEXT'}
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password_file: str = ""
    ssl_cafile: str = ""
    _password: str = dataclasses.field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for server in self.bootstrap_servers.split(","):
            host, colon, port = server.strip().rpartition(":")
            if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
                raise KafkaConfigError(
                    f"KAFKA_BOOTSTRAP_SERVERS is {self.bootstrap_servers!r}; give the brokers "
                    "as host:port, comma separated (e.g. kafka-1:9092,kafka-2:9092)"
                )
        if self.security_protocol not in PROTOCOLS:
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL is {self.security_protocol!r}; use one of "
                f"{', '.join(PROTOCOLS)}"
            )
        if self.ssl_cafile and not Path(self.ssl_cafile).is_file():
            raise KafkaConfigError(
                f"KAFKA_SSL_CAFILE is {self.ssl_cafile!r}, which is not a file; give the PEM "
                "file of the CA that signed the brokers' certificates"
            )
        if self.uses_sasl:
            object.__setattr__(self, "_password", self._read_password())

    def _read_password(self) -> str:
        if self.sasl_mechanism not in MECHANISMS:
            raise KafkaConfigError(
                f"KAFKA_SASL_MECHANISM is {self.sasl_mechanism!r}; use one of "
                f"{', '.join(MECHANISMS)}"
            )
        if not self.sasl_username or not self.sasl_password_file:
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs KAFKA_SASL_USERNAME "
                "and KAFKA_SASL_PASSWORD_FILE (a file holding the password)"
            )
        try:
            password = Path(self.sasl_password_file).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise KafkaConfigError(
                f"cannot read the SASL password from KAFKA_SASL_PASSWORD_FILE "
                f"{self.sasl_password_file!r}: {error}"
            ) from error
        if not password:
            raise KafkaConfigError(
                f"KAFKA_SASL_PASSWORD_FILE {self.sasl_password_file!r} is empty; write the "
                f"password of {self.sasl_username!r} into it"
            )
        return password

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def sasl_password(self) -> str:
        """The password read from ``sasl_password_file`` (empty without SASL)."""
        return self._password

    def describe(self) -> str:
        """Where and how, for messages: ``127.0.0.1:9094 (SASL_SSL, SCRAM-SHA-512 as app)``."""
        how = self.security_protocol
        if self.uses_sasl:
            how += f", {self.sasl_mechanism} as {self.sasl_username}"
        return f"{self.bootstrap_servers} ({how})"

    def failure(self, error: BaseException) -> str:
        """A Kafka error for a person: a refused start's reason as it is (it names the
        brokers and what to check), anything else with where the brokers were looked for."""
        if isinstance(error, KafkaRefusedError):
            return str(error.args[0])
        return f"{error} (is Kafka up at {self.describe()}?)"

    def ssl_context(self) -> ssl.SSLContext | None:
        """What clients verify the brokers with (hostname included); ``None`` without TLS."""
        return verifying_context(self.ssl_cafile, "KAFKA_SSL_CAFILE") if self.uses_tls else None

    def client_options(self) -> dict[str, Any]:
        """The brokers and security as aiokafka's keyword arguments, the same for every client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        return options

    def options(self, **own: Any) -> dict[str, Any]:
        """The client's own ``own`` options over the shared ones (brokers and security),
        which a caller cannot override."""
        shared = self.client_options()
        clash = sorted(set(own) & (set(shared) | _SECURITY_OPTIONS))
        if clash:
            raise TypeError(f"{clash} come from the KafkaConfig, not from the caller")
        return {**shared, **own}

    def producer(self, **options: Any) -> AIOKafkaProducer:
        """An aiokafka producer with the caller's ``options`` (acks, linger_ms, ...)."""
        return _Producer(self, **self.options(**options))

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        """An aiokafka consumer of ``topics`` (or none yet) with the caller's ``options``."""
        return _Consumer(self, *topics, **self.options(**options))

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        """An aiokafka admin client with the caller's ``options`` (client_id, ...)."""
        return _Admin(self, **self.options(**options))

    def client(self, **options: Any) -> AIOKafkaClient:
        """aiokafka's bare client (metadata requests, no producing or consuming)."""
        return AIOKafkaClient(**self.options(**options))

    async def refusal(self) -> str | None:
        """Why a connection to the first broker fails, in words; ``None`` when it succeeds."""
        first = self.bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        where = f"Kafka at {first} ({self.security_protocol})"
        shared = self.client_options()
        del shared["bootstrap_servers"]
        try:
            connection = await create_conn(
                host.strip("[]"), int(port), request_timeout_ms=10_000, **shared
            )
        except ssl.SSLCertVerificationError as error:
            return (
                f"{where} presented a certificate this client does not trust "
                f"({error.verify_message}); set KAFKA_SSL_CAFILE to the CA that signed it"
            )
        except ssl.SSLError as error:
            return (
                f"the TLS handshake with {where} failed ({error.reason}): does that listener "
                "speak TLS? Check KAFKA_SECURITY_PROTOCOL and the port"
            )
        except KafkaError as error:
            if isinstance(error, (SaslAuthenticationFailed, UnsupportedSaslMechanismError)):
                return (
                    f"{where} refused the {self.sasl_mechanism} login of "
                    f"{self.sasl_username!r} ({error}); check KAFKA_SASL_USERNAME and the "
                    "password in KAFKA_SASL_PASSWORD_FILE"
                )
            return (
                f"{where} closed the connection ({error}): does the listener expect TLS or "
                "SASL? Check KAFKA_SECURITY_PROTOCOL and the port"
            )
        except ConnectionRefusedError as error:
            return f"nothing answers as {where} ({error}); is Kafka up (foresight stack status)?"
        except ConnectionError as error:  # reset: a plain listener hung up on a TLS hello
            return (
                f"{where} dropped the connection ({error!r}): does the listener speak "
                f"{self.security_protocol}? Check KAFKA_SECURITY_PROTOCOL and the port"
            )
        except OSError as error:
            return f"cannot reach {where}: {error}"
        connection.close()
        return None


class _Held:
    """aiokafka's records held while a client of this module starts (``records``), None once
    the start is over: tasks the start created copied the starting task's context, and log
    as they come from then on."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] | None = []

    def release(self) -> list[logging.LogRecord]:
        records, self.records = self.records or [], None
        return records


_STARTING: contextvars.ContextVar[_Held | None] = contextvars.ContextVar(
    "foresight_kafka_starting", default=None
)


class _HeldWhileStarting(logging.Filter):
    """Holds aiokafka's records in a starting client's task (see :class:`_Held`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = _STARTING.get()
        if held is None or held.records is None:
            return True
        held.records.append(record)
        return False


logging.getLogger("aiokafka").addFilter(_HeldWhileStarting())  # aiokafka.client logs on it


class _ExplainsRefusal:
    """A client whose failed start says why (mixed into aiokafka's three clients), and
    closes what the start opened: aiokafka leaves it open, and the client's finaliser then
    logs "Unclosed AIOKafkaProducer" under the reason."""

    _close = "stop"  # the aiokafka client's closing verb

    def __init__(self, kafka: KafkaConfig, *topics: str, **options: Any) -> None:
        super().__init__(*topics, **options)  # the aiokafka client, next in the MRO
        self._foresight_kafka = kafka

    async def start(self) -> None:
        held = _Held()
        token = _STARTING.set(held)
        try:
            await super().start()  # type: ignore[misc]
        except KafkaConnectionError as error:
            held.release()  # the refusal below says it in full
            with contextlib.suppress(KafkaError, OSError):  # the refusal is the news
                await getattr(super(), self._close)()
            kafka = self._foresight_kafka
            reason = await kafka.refusal() or f"Kafka at {kafka.describe()}: {error}"
            raise KafkaRefusedError(reason) from error
        finally:
            _STARTING.reset(token)
            for record in held.release():  # not refused: what went wrong on the way is news
                logging.getLogger(record.name).handle(record)


class _Producer(_ExplainsRefusal, AIOKafkaProducer):  # type: ignore[misc]  # untyped aiokafka
    pass


class _Consumer(_ExplainsRefusal, AIOKafkaConsumer):  # type: ignore[misc]
    pass


class _Admin(_ExplainsRefusal, AIOKafkaAdminClient):  # type: ignore[misc]
    _close = "close"
