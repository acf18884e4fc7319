"""The local stack: Kafka (KRaft), Kafka Connect, a schema registry, Redis and embedded
ClickHouse on one machine.

Nothing is installed by hand. Kafka and Connect jars are resolved by Maven from
``deploy/local/pom.xml`` into the Maven cache and started with ``java``; the Connect HTTP sink
plugins are built from ``connectors/kafka-connect/http-sink`` and ``smtp-sink``, and the schema
registry (Confluent's REST API over Apache Avro) from ``deploy/local/schema-registry``; Redis is
Debian's
``redis-server`` (reused when one already answers on its port); ClickHouse is chdb on a data
folder, or the server at ``CLICKHOUSE_URL``. Java, Maven and redis-server are installed with
apt when missing, by ``deploy/local/system-packages`` (the Makefile's installer too).

Every process the stack starts is recorded in ``<stack_dir>/pids/<service>.pid`` so that
``down`` stops exactly those, and only those.

With ``FORESIGHT_STACK_KAFKA_SASL_PORT`` set, Kafka also listens SASL_SSL on that port: TLS with
the development certificate of :mod:`deploy.local.certs` (made when missing), clients
authenticated by SCRAM-SHA-512 as user ``foresight``, whose password the stack writes to
``<stack_dir>/kafka/sasl/foresight.password`` (0600). When Foresight's own settings say the
brokers need TLS or SASL (``KAFKA_SECURITY_PROTOCOL``), the Connect worker is configured to
match.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from connectors.http.tls import TlsConfig
from connectors.kafka_clients import KafkaConfig
from connectors.kafka_connect import secret_reference, write_secrets
from connectors.private_files import private_folder, write_private
from deploy.local.certs import certs_folder, make_dev_certs

KAFKA_VERSION = "3.9.1"
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"
HTTP_SINK_CLASS = "io.foresight.connect.http.HttpSinkConnector"
SMTP_SINK_CLASS = "io.foresight.connect.smtp.SmtpSinkConnector"


@dataclass(frozen=True)
class ConnectPlugin:
    """A Connect plugin of ``connectors/kafka-connect/<project>``: its connector class, and
    the jars Maven leaves (``built``, a glob under the project) for its folder on the path."""

    project: str
    connector_class: str
    built: str


CONNECT_PLUGINS = (
    ConnectPlugin("http-sink", HTTP_SINK_CLASS, "target/foresight-http-sink-*.jar"),
    ConnectPlugin("smtp-sink", SMTP_SINK_CLASS, "target/plugin/*.jar"),
)
REGISTRY_MAIN = "io.foresight.registry.SchemaRegistry"
CONTROLLER_PORT_OFFSET = 3
"""Kafka's KRaft controller listens this far above the broker (9095 beside 9092): 9093 and
9094 are Alertmanager's web and cluster ports, so both run on one machine with defaults."""
SCRAM_USER = "foresight"
SCRAM_MECHANISM = "SCRAM-SHA-512"
SERVICES = ("redis", "kafka", "schema-registry", "connect")
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
_HERE = Path(__file__).resolve().parent
SYSTEM_PACKAGES = _HERE / "system-packages"


class StackError(RuntimeError):
    """The stack could not do what was asked; the message says what to do about it."""


@dataclass(frozen=True)
class Endpoints:
    """Where each service of the stack listens, derived from the settings."""

    kafka_host: str
    kafka_port: int
    connect_host: str
    connect_port: int
    redis_host: str
    redis_port: int
    clickhouse_url: str
    chdb_path: Path
    sink_sql_port: int | None = None
    sink_key: str | None = None  # a key of the read role, to ask the sink
    sink_tls: TlsConfig = field(default_factory=TlsConfig)
    kafka_sasl_port: int = 0  # the SASL_SSL listener's port; 0: none
    kafka: KafkaConfig = field(default_factory=KafkaConfig)  # how Foresight's clients talk
    registry_port: int = 8085

    @property
    def bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_sasl_port}"

    @property
    def connect_url(self) -> str:
        return f"http://{self.connect_host}:{self.connect_port}"


@dataclass(frozen=True)
class ServiceStatus:
    """Health of one service, and why."""

    name: str
    healthy: bool
    detail: str
    pid: int | None = None
    managed: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def endpoints(
    kafka_bootstrap_servers: str,
    kafka_connect_url: str,
    feature_store_url: str,
    clickhouse_url: str,
    chdb_path: str,
    sink_sql_port: int | None = None,
    sink_key: str | None = None,
    registry_port: int = 8085,
    *,
    sink_tls: TlsConfig | None = None,
    kafka_sasl_port: int = 0,
    kafka: KafkaConfig | None = None,
) -> Endpoints:
    """Endpoints of the local stack from the settings' URLs (the first broker is ours)."""
    host, _, port = kafka_bootstrap_servers.split(",")[0].strip().rpartition(":")
    connect = urlparse(kafka_connect_url)
    redis = urlparse(feature_store_url)
    return Endpoints(
        kafka_host=host or "127.0.0.1",
        kafka_port=int(port or 9092),
        connect_host=connect.hostname or "127.0.0.1",
        connect_port=connect.port or 8083,
        redis_host=redis.hostname or "127.0.0.1",
        redis_port=redis.port or 6379,
        clickhouse_url=clickhouse_url,
        chdb_path=Path(chdb_path),
        sink_sql_port=sink_sql_port,
        sink_key=sink_key,
        registry_port=registry_port,
        sink_tls=sink_tls or TlsConfig(),
        kafka_sasl_port=kafka_sasl_port,
        kafka=kafka or KafkaConfig(kafka_bootstrap_servers),
    )


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_json(url: str, timeout: float = 2.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    log: Path | None,
    exited: Callable[[], bool] = lambda: False,
) -> None:
    """Poll ``check`` until it holds; StackError after ``timeout`` seconds, or as soon as
    ``exited`` says the process that was to answer is gone, quoting its log's last errors
    (a test's stack may be wiped before anyone reads the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if exited():
            raise StackError(f"{what} exited before it answered{_log_tail(log)}")
        time.sleep(0.25)
    raise StackError(f"{what} did not become ready within {timeout:.0f}s{_log_tail(log)}")


def _log_tail(log: Path | None, lines: int = 8) -> str:
    """``; see LOG`` and its last errors (or last lines when it has none), for an error
    message: the causes, not a Java stack's frames, are what a person reads."""
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"; see {log}"
    errors = [line for line in text if _LOG_ERROR.search(line)]
    tail = (errors or text)[-lines:]
    return f"; see {log}, which says:\n" + "\n".join(f"  {line}" for line in tail)


_LOG_ERROR = re.compile(r"\b(ERROR|FATAL)\b|^Caused by|Exception:")


def installed(command: str, *also: str, progress: Callable[[str], None] = print) -> str:
    """The path of ``command``, after ``system-packages`` installs whatever of it and of
    ``also`` is missing (one line of progress per package; StackError if it cannot)."""
    bash = shutil.which("bash") or "/bin/bash"
    result = subprocess.run(
        [bash, str(SYSTEM_PACKAGES), command, *also],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        progress(line)
    path = shutil.which(command)
    if result.returncode != 0 or path is None:
        raise StackError(result.stderr.strip() or f"{command} is not on PATH")
    return path


def connect_secrets_dir(stack_dir: Path) -> Path:
    """The folder of connector secrets, the only one the stack's Connect worker may read them from.

    ``foresight connect apply`` writes one 0600 properties file per connector here and gives
    the connector ``${file:<file>:<key>}`` references, which the worker's FileConfigProvider
    resolves when a connector or task starts.
    """
    return stack_dir.resolve() / "connect" / "secrets"


class LocalStack:
    """Starts, checks and stops the local services.

    Parameters
    ----------
    stack_dir
        Folder for data, logs, pids and generated configs (``FORESIGHT_STACK_DIR``,
        default ``.stack``).
    where
        The endpoints, from :func:`endpoints`.
    progress
        Called with a line of text as each step starts, for the command line.
    """

    def __init__(
        self, stack_dir: Path, where: Endpoints, progress: Callable[[str], None] = print
    ) -> None:
        self.dir = stack_dir.resolve()
        self.where = where
        self.progress = progress
        self.repo = _HERE.parent.parent

    # -- files ---------------------------------------------------------------------------
    def _pid_file(self, service: str) -> Path:
        return self.dir / "pids" / f"{service}.pid"

    def _log(self, service: str) -> Path:
        return self.dir / "logs" / f"{service}.log"

    def _java_log(self, service: str) -> Path:
        """The log4j log of a Java service (its stdout goes to :meth:`_log`)."""
        return self._log(service).with_name(f"{self._log(service).name}.java")

    def logs(self, service: str) -> list[Path]:
        """Every log file of ``service``: its output, its Java log and their rotated copies."""
        return sorted(self._log(service).parent.glob(f"{self._log(service).name}*"))

    def _connect_config_file(self) -> Path:
        return self.dir / "connect" / "connect-distributed.properties"

    def connect_config(self) -> dict[str, str]:
        """The Connect worker's configuration as rendered when this stack last started it."""
        lines = self._connect_config_file().read_text().splitlines()
        return dict(
            line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")
        )

    def _render(
        self, template: str, target: Path, appended: Sequence[str] = (), **values: object
    ) -> Path:
        """Write ``template`` filled with ``values`` to ``target``, then the ``appended`` lines
        (settings only some configurations have)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_filled(template, **values) + "".join(f"{a}\n" for a in appended))
        return target

    def scram_password_file(self) -> Path:
        """The password of the SASL_SSL listener's user ``foresight`` (made at its first up)."""
        return self.dir / "kafka" / "sasl" / f"{SCRAM_USER}.password"

    def certs(self) -> Path:
        """The folder of the development certificates the SASL_SSL listener presents."""
        return certs_folder(self.dir)

    def _sasl_ssl(self) -> tuple[str, list[str]]:
        """The SASL_SSL listener (``""`` without its port) and its lines of Kafka's config;
        makes the certificates, the key store and the user's password when missing."""
        w = self.where
        if not w.kafka_sasl_port:
            return "", []
        certs = self.certs()
        if not (certs / "server.pem").is_file() or not (certs / "server-key.pem").is_file():
            self.progress(f"making development certificates in {certs}")
            make_dev_certs(certs)
        folder = private_folder(self.scram_password_file().parent)
        keystore = folder / "keystore.pem"
        write_private(
            keystore, (certs / "server-key.pem").read_text() + (certs / "server.pem").read_text()
        )
        if not self.scram_password_file().is_file():
            write_private(self.scram_password_file(), secrets.token_urlsafe(24) + "\n")
        lines = _filled("kafka-sasl-ssl.properties", keystore=keystore).splitlines()
        return f",SASL_SSL://{w.sasl_bootstrap}", lines

    def _add_scram_user(self) -> None:
        """Create (or reset) the SCRAM user of the SASL_SSL listener, through the PLAINTEXT one.

        The password goes in a 0600 file, not on a command line others can read.
        """
        password = self.scram_password_file().read_text().strip()
        request = self.scram_password_file().with_name("scram-user.properties")
        # From a file, ConfigCommand takes the value without the brackets of --add-config.
        write_private(request, f"{SCRAM_MECHANISM}=iterations=8192,password={password}\n")
        self.progress(f"creating the SCRAM user {SCRAM_USER!r} for {self.where.sasl_bootstrap}")
        try:
            self._run(
                [
                    *self._java("kafka-scram", "kafka.admin.ConfigCommand", request, "256m")[:-1],
                    *("--bootstrap-server", self.where.bootstrap, "--alter"),
                    *("--entity-type", "users", "--entity-name", SCRAM_USER),
                    *("--add-config-file", str(request)),
                ],
                f"creating the SCRAM user {SCRAM_USER}",
            )
        finally:
            request.unlink(missing_ok=True)

    def _sasl_ssl_ready(self) -> bool:
        """Whether the SASL_SSL listener answers with the certificate the dev CA signed."""
        ca = self.certs() / "ca.pem"
        if not ca.is_file():
            return False
        return _kafka_ready(self.where.sasl_bootstrap, ssl.create_default_context(cafile=ca))

    # -- processes -------------------------------------------------------------------------
    def _running_pid(self, service: str) -> int | None:
        """The pid we recorded for ``service`` if that very process is still alive.

        The pid file holds the pid and the process's start time, so a recycled pid (or a
        process that renamed itself, as redis-server does) is never mistaken for ours.
        """
        pid_file = self._pid_file(service)
        if not pid_file.is_file():
            return None
        pid_text, _, started = pid_file.read_text().partition(" ")
        pid = int(pid_text)
        return pid if _start_time(pid) == started.strip() else None

    def _exited(self, service: str) -> bool:
        """Whether the process this stack started for ``service`` has exited (False when
        the stack started none: a service it found answering is not its to watch)."""
        if not self._pid_file(service).is_file():
            return False
        pid = self._running_pid(service)
        return pid is None or _zombie_or_gone(pid)

    def _spawn(self, service: str, argv: list[str]) -> int:
        log = self._log(service)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._pid_file(service).parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
            )
        self._pid_file(service).write_text(f"{process.pid} {_start_time(process.pid)}\n")
        return process.pid

    def stop(self, service: str, timeout: float = 30.0) -> bool:
        """Stop ``service`` (one of :data:`SERVICES`) if this stack started it:
        SIGTERM, then SIGKILL after ``timeout`` seconds; ``up`` starts it again."""
        pid = self._running_pid(service)
        self._pid_file(service).unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if _zombie_or_gone(pid):
                return True
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return True

    # -- prerequisites ---------------------------------------------------------------------
    def _tool(self, command: str, *also: str) -> str:
        return installed(command, *also, progress=self.progress)

    def classpath(self) -> str:
        """The Kafka and Connect classpath, resolved by Maven once and cached."""
        pom = _HERE / "pom.xml"
        cached = self.dir / "classpath.txt"
        if cached.is_file() and cached.stat().st_mtime >= pom.stat().st_mtime:
            return cached.read_text().strip()
        mvn = self._tool("mvn", "java")
        self.progress(f"resolving Kafka {KAFKA_VERSION} jars with Maven (first time only)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={cached}",
            ],
            "resolving the Kafka jars",
        )
        return cached.read_text().strip()

    def connect_plugins(self) -> Path:
        """The plugin path of the stack's Connect worker: a folder per plugin of
        :data:`CONNECT_PLUGINS`, each built with Maven when its sources changed since."""
        path = self.dir / "connect-plugins"
        for plugin in CONNECT_PLUGINS:
            self._connect_plugin(plugin, path / f"foresight-{plugin.project}")
        return path

    def _connect_plugin(self, plugin: ConnectPlugin, folder: Path) -> None:
        project = self.repo / "connectors" / "kafka-connect" / plugin.project
        stamp = folder / ".built"
        sources = [project / "pom.xml", *sorted((project / "src").rglob("*"))]
        newest = max(p.stat().st_mtime for p in sources if p.is_file())
        if stamp.is_file() and stamp.stat().st_mtime >= newest:
            return
        mvn = self._tool("mvn", "javac")
        self.progress(f"building the Connect {plugin.project} plugin with Maven")
        self._run(
            [mvn, "-q", "-B", "-f", str(project / "pom.xml"), "package", "-DskipTests"],
            f"building the {plugin.project} plugin",
        )
        built = sorted(project.glob(plugin.built))
        if not built:
            raise StackError(f"Maven built no {plugin.built} under {project}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for jar in built:
            shutil.copy2(jar, folder / jar.name)
        stamp.touch()

    def schema_registry(self) -> list[str]:
        """The registry's jar and classpath, built with Maven when its sources are newer."""
        project = _HERE / "schema-registry"
        built = self.dir / "schema-registry" / "classpath.txt"
        sources = [project / "pom.xml", *sorted((project / "src").rglob("*"))]
        newest = max(p.stat().st_mtime for p in sources if p.is_file())
        jars = sorted((project / "target").glob("foresight-schema-registry-*.jar"))
        if not (built.is_file() and jars and built.stat().st_mtime >= newest):
            mvn = self._tool("mvn", "javac")
            self.progress("building the schema registry with Maven")
            built.parent.mkdir(parents=True, exist_ok=True)
            self._run(
                [
                    *(mvn, "-q", "-B", "-f", str(project / "pom.xml"), "package"),
                    *("dependency:build-classpath", f"-Dmdep.outputFile={built}"),
                ],
                "building the schema registry",
            )
            jars = sorted((project / "target").glob("foresight-schema-registry-*.jar"))
        return [str(jars[-1]), built.read_text().strip()]

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise StackError(f"{what} failed (exit {result.returncode}):\n{tail}")

    def _java(self, service: str, main: str, config: Path, heap: str) -> list[str]:
        java = self._tool("java")
        return [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{_HERE / 'log4j.properties'}",
            f"-Dforesight.log.file={self._java_log(service)}",
            f"-Dforesight.stack={self.dir}",
            "-cp",
            self.classpath(),
            main,
            str(config),
        ]

    # -- services --------------------------------------------------------------------------
    def _up_kafka(self) -> bool:
        """Start Kafka unless it runs; whether it was started."""
        w = self.where
        if self._running_pid("kafka") or _port_open(w.kafka_host, w.kafka_port):
            return False
        if w.kafka.security_protocol != "PLAINTEXT":
            raise StackError(
                f"Kafka is not running at {w.bootstrap}, and the settings say it needs "
                f"KAFKA_SECURITY_PROTOCOL={w.kafka.security_protocol}: the local stack starts "
                "Kafka from its PLAINTEXT address. Start it with KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
                "and KAFKA_BOOTSTRAP_SERVERS=<host>:<plaintext port>, with "
                "FORESIGHT_STACK_KAFKA_SASL_PORT for the secure listener, then point Foresight "
                "at that listener"
            )
        data = self.dir / "kafka" / "data"
        sasl_ssl_listener, sasl_ssl = self._sasl_ssl()
        config = self._render(
            "kafka.properties",
            self.dir / "kafka" / "server.properties",
            host=w.kafka_host,
            port=w.kafka_port,
            controller_port=w.kafka_port + CONTROLLER_PORT_OFFSET,
            data_dir=data,
            sasl_ssl_listener=sasl_ssl_listener,
            appended=sasl_ssl,
        )
        if not (data / "meta.properties").is_file():
            cluster_id = self.dir / "kafka" / "cluster.id"
            if not cluster_id.is_file():
                cluster_id.write_text(_random_cluster_id())
            self.progress("formatting Kafka's KRaft storage")
            self._run(
                [
                    *self._java("kafka-format", "kafka.tools.StorageTool", config, "256m")[:-1],
                    *("format", "-t", cluster_id.read_text().strip(), "-c", str(config)),
                ],
                "formatting Kafka storage",
            )
        secure = f" and SASL_SSL on {w.sasl_bootstrap}" if w.kafka_sasl_port else ""
        self.progress(f"starting Kafka {KAFKA_VERSION} on {w.bootstrap}{secure}")
        self._spawn("kafka", self._java("kafka", "kafka.Kafka", config, "1g"))
        return True

    def _up_connect(self) -> None:
        w = self.where
        if self._running_pid("connect") or _port_open(w.connect_host, w.connect_port):
            return
        secrets_dir = private_folder(connect_secrets_dir(self.dir))
        config = self._render(
            "connect.properties",
            self._connect_config_file(),
            bootstrap=w.bootstrap,
            host=w.connect_host,
            port=w.connect_port,
            plugin_path=self.connect_plugins(),
            secrets_dir=secrets_dir,
            appended=connect_kafka_security(w.kafka, secrets_dir),
        )
        self.progress(f"starting Kafka Connect on {w.connect_url}")
        self._spawn(
            "connect",
            self._java(
                "connect", "org.apache.kafka.connect.cli.ConnectDistributed", config, "768m"
            ),
        )

    def _up_registry(self) -> None:
        w = self.where
        if self._running_pid("schema-registry") or _port_open("127.0.0.1", w.registry_port):
            return
        classpath = ":".join(self.schema_registry())
        journal = self.dir / "schema-registry" / "journal.jsonl"
        self.progress(f"starting the schema registry on {w.registry_url}")
        self._spawn(
            "schema-registry",
            [
                *(self._tool("java"), "-Xmx128m", "-XX:+UseSerialGC", "-cp", classpath),
                *(REGISTRY_MAIN, "--host", "127.0.0.1", "--port", str(w.registry_port)),
                *("--journal", str(journal)),
            ],
        )

    def _registry_subjects(self) -> list[str] | None:
        """The registry's subjects, or None when no registry answers."""
        try:
            subjects = _http_json(f"{self.where.registry_url}/subjects")
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return [str(s) for s in subjects] if isinstance(subjects, list) else None

    def _up_redis(self) -> None:
        w = self.where
        if self._running_pid("redis") or _redis_ping(w.redis_host, w.redis_port):
            return
        try:
            server = self._tool("redis-server")
        except StackError as error:
            raise StackError(f"{error}\nOr point FEATURE_STORE_URL at a Redis.") from None
        data = self.dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self.progress(f"starting Redis on {w.redis_host}:{w.redis_port}")
        self._spawn(
            "redis",
            [
                server,
                "--bind",
                w.redis_host,
                "--port",
                str(w.redis_port),
                "--dir",
                str(data),
                "--save",
                "60 1000",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--pidfile",
                str(self.dir / "redis" / "redis.pid"),
            ],
        )

    def up(
        self, timeout: float = 120.0, services: tuple[str, ...] = SERVICES
    ) -> list[ServiceStatus]:
        """Start whichever of ``services`` is not running, wait until each answers, and return
        every service's status."""
        unknown = sorted(set(services) - set(SERVICES))
        if unknown:
            raise StackError(f"no stack services {unknown}; the stack has {', '.join(SERVICES)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        w = self.where
        if "redis" in services:
            self._up_redis()
            wait_until(
                "Redis", self._redis_answers, 30, self._log("redis"), lambda: self._exited("redis")
            )
        if "kafka" in services:
            started = self._up_kafka()
            wait_until(
                "Kafka",
                self._kafka_answers,
                timeout,
                self._java_log("kafka"),
                lambda: self._exited("kafka"),
            )
            if started and w.kafka_sasl_port:
                self._add_scram_user()
                wait_until(
                    "Kafka's SASL_SSL listener",
                    self._sasl_ssl_ready,
                    timeout,
                    self._java_log("kafka"),
                )
        if "schema-registry" in services:
            self._up_registry()
            wait_until(
                "The schema registry",
                lambda: self._registry_subjects() is not None,
                timeout,
                self._log("schema-registry"),
                lambda: self._exited("schema-registry"),
            )
        if "connect" in services:
            self._up_connect()
            wait_until(
                "Kafka Connect",
                self._connect_ready,
                timeout,
                self._java_log("connect"),
                lambda: self._exited("connect"),
            )
        return self.status()

    def _redis_answers(self) -> bool:
        return _redis_ping(self.where.redis_host, self.where.redis_port)

    def _kafka_answers(self) -> bool:
        return _kafka_ready(self.where.bootstrap, self.where.kafka.ssl_context())

    def _connect_plugins_missing(self) -> list[str] | None:
        """The classes of :data:`CONNECT_PLUGINS` the worker lacks; None when it does not
        answer."""
        try:
            plugins = _http_json(f"{self.where.connect_url}/connector-plugins")
        except (OSError, ValueError, urllib.error.URLError):
            return None
        if not isinstance(plugins, list):
            return None
        loaded = {p.get("class") for p in plugins if isinstance(p, dict)}
        return [p.connector_class for p in CONNECT_PLUGINS if p.connector_class not in loaded]

    def _connect_ready(self) -> bool:
        """The worker answers with the HTTP sink (a worker that predates a newer plugin still
        delivers alerts to the tools; its status says what it lacks)."""
        missing = self._connect_plugins_missing()
        return missing is not None and HTTP_SINK_CLASS not in missing

    # -- status and down -------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        """Health of every service, with the reason when one is not healthy."""
        w = self.where
        out = []
        pid = self._running_pid("kafka")
        ok = self._kafka_answers()
        out.append(
            ServiceStatus(
                "kafka",
                ok,
                f"broker answers on {w.bootstrap}" if ok else f"no broker answers on {w.bootstrap}",
                pid,
                pid is not None,
            )
        )
        if w.kafka_sasl_port:
            out.append(self._sasl_ssl_status(pid))
        pid = self._running_pid("connect")
        missing = self._connect_plugins_missing()
        if missing == []:
            detail, ok = f"worker on {w.connect_url} has the HTTP and SMTP sink plugins", True
        elif missing is not None:
            detail = (
                f"worker on {w.connect_url} answers but lacks {', '.join(missing)}: it started "
                "before the plugin was built; restart it (foresight stack down, then up)"
            )
            ok = HTTP_SINK_CLASS not in missing  # alerts still reach the HTTP tools
        else:
            detail, ok = f"nothing answers on {w.connect_url}", False
        out.append(ServiceStatus("connect", ok, detail, pid, pid is not None))
        pid = self._running_pid("schema-registry")
        subjects = self._registry_subjects()
        detail = (
            f"no registry answers on {w.registry_url}"
            if subjects is None
            else f"registry on {w.registry_url} holds {len(subjects)} subjects"
        )
        out.append(
            ServiceStatus("schema-registry", subjects is not None, detail, pid, pid is not None)
        )
        pid = self._running_pid("redis")
        ok = _redis_ping(w.redis_host, w.redis_port)
        where = f"{w.redis_host}:{w.redis_port}"
        detail = f"PONG from {where}" if ok else f"no PONG from {where}"
        if ok and pid is None:
            detail += " (an existing server, reused)"
        out.append(ServiceStatus("redis", ok, detail, pid, pid is not None))
        out.append(_clickhouse_status(w))
        return out

    def _sasl_ssl_status(self, pid: int | None) -> ServiceStatus:
        w = self.where
        if self._sasl_ssl_ready():
            detail = (
                f"SASL_SSL ({SCRAM_MECHANISM}) on {w.sasl_bootstrap}, certificate signed by "
                f"{self.certs() / 'ca.pem'}; user {SCRAM_USER}, password in "
                f"{self.scram_password_file()}"
            )
            return ServiceStatus("kafka-sasl-ssl", True, detail, pid, pid is not None)
        detail = (
            f"no TLS broker answers on {w.sasl_bootstrap}: if Kafka runs, it was started "
            "without FORESIGHT_STACK_KAFKA_SASL_PORT; restart the stack (foresight stack down, "
            "then up) to open it"
        )
        return ServiceStatus("kafka-sasl-ssl", False, detail, pid, pid is not None)

    def down(self, wipe: bool = False) -> list[str]:
        """Stop the processes ``up`` started (by pid); ``wipe`` also deletes the data."""
        stopped = [s for s in reversed(SERVICES) if self.stop(s)]  # Connect before Kafka
        if wipe and self.dir.exists():
            for child in (
                *("kafka", "redis", "connect", "schema-registry"),
                *("chdb", "worker-data", "logs", "pids"),
            ):
                shutil.rmtree(self.dir / child, ignore_errors=True)
            if self.where.chdb_path.resolve().is_relative_to(self.dir):
                shutil.rmtree(self.where.chdb_path, ignore_errors=True)
        return stopped

    def managed_pids(self) -> Iterator[tuple[str, int]]:
        """``(service, pid)`` of every live process this stack started."""
        for service in SERVICES:
            pid = self._running_pid(service)
            if pid is not None:
                yield service, pid


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _zombie_or_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _random_cluster_id() -> str:
    """A KRaft cluster id as Kafka makes them: a random UUID in URL-safe base64, never
    starting with "-" (the storage tool would take it for an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _filled(template: str, **values: object) -> str:
    """The template of this folder with its ``${name}`` placeholders filled."""
    text = (_HERE / template).read_text()
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


def connect_kafka_security(kafka: KafkaConfig, secrets_dir: Path) -> list[str]:
    """The Connect worker's properties for brokers that need TLS or SASL (none for PLAINTEXT).

    They are set for the worker's own clients and, prefixed, for the producers, consumers and
    admin clients of connectors. The SASL password goes to a 0600 file in ``secrets_dir``,
    read by the worker's FileConfigProvider; the properties hold a reference to it.
    """
    if kafka.security_protocol == "PLAINTEXT":
        return []
    own = {"security.protocol": kafka.security_protocol}
    if kafka.uses_tls and kafka.ssl_cafile:
        own["ssl.truststore.type"] = "PEM"
        own["ssl.truststore.location"] = str(Path(kafka.ssl_cafile).resolve())
    if kafka.uses_sasl:
        secrets_file = secrets_dir / "kafka-client.properties"
        write_secrets(secrets_file, {"password": _jaas_quoted(kafka.sasl_password)})
        own["sasl.mechanism"] = kafka.sasl_mechanism
        own["sasl.jaas.config"] = (
            f"{_LOGIN_MODULES[kafka.sasl_mechanism]} required "
            f'username="{_jaas_quoted(kafka.sasl_username)}" '
            f'password="{secret_reference(secrets_file, "password")}";'
        )
    return [
        f"{prefix}{key}={value}"
        for prefix in ("", "producer.", "consumer.", "admin.")
        for key, value in own.items()
    ]


def _jaas_quoted(text: str) -> str:
    """``text`` escaped for a double-quoted value of a JAAS configuration."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _kafka_ready(bootstrap: str, tls: ssl.SSLContext | None = None) -> bool:
    """True when the broker answers a request (not merely an open port); over TLS, verified
    by ``tls``, when given."""
    host, _, port = bootstrap.rpartition(":")
    if not _port_open(host, int(port)):
        return False
    # ApiVersions request v0, correlation id 1, client id "fs": the smallest real request,
    # which a SASL listener answers before authentication.
    body = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02fs"
    try:
        with (
            socket.create_connection((host, int(port)), timeout=2.0) as plain,
            tls.wrap_socket(plain, server_hostname=host) if tls else plain as sock,
        ):
            sock.sendall(len(body).to_bytes(4, "big") + body)
            header = sock.recv(10)
    except OSError:
        return False
    return len(header) >= 10 and header[4:8] == b"\x00\x00\x00\x01" and header[8:10] == b"\x00\x00"


def _clickhouse_status(w: Endpoints) -> ServiceStatus:
    from connectors.clickhouse import open_store

    if not w.clickhouse_url and w.sink_sql_port is not None:
        from connectors.clickhouse_sink import SinkUnavailableError, ask_sink

        try:
            answer = ask_sink(w.sink_sql_port, "SELECT version()", w.sink_key, 5.0, w.sink_tls)
            version = answer.rows[0][0]
        except SinkUnavailableError:
            pass  # no sink holds the folder: open it below
        except Exception as error:  # a sink that answers but fails is the status to report
            return ServiceStatus("clickhouse", False, f"{type(error).__name__}: {error}")
        else:
            return ServiceStatus(
                "clickhouse",
                True,
                f"ClickHouse {version} (chdb at {w.chdb_path}, held by the ClickHouse sink "
                f"on port {w.sink_sql_port})",
            )
    try:
        with open_store(w.clickhouse_url, str(w.chdb_path)) as store:
            version = store.query("SELECT version()").rows[0][0]
    except Exception as error:  # any failure to open or query is the status to report
        return ServiceStatus("clickhouse", False, f"{type(error).__name__}: {error}")
    where = (
        "server " + urlparse(w.clickhouse_url).netloc
        if w.clickhouse_url
        else f"chdb at {w.chdb_path}"
    )
    return ServiceStatus("clickhouse", True, f"ClickHouse {version} ({where})")
