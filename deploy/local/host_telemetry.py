"""Real clients on this machine: node_exporter scraped by a Prometheus that remote-writes to
Foresight, and an Alertmanager that receives Foresight's alerts.

``foresight demo`` adds the machine it runs on beside the simulated fleet with the first two,
and the integration tests drive all three. Each runs as a child process on a free port of the
loopback, with its own folder for config and data, so a system-wide service installed by a
package (Debian starts one) is neither used nor disturbed. The programs are the upstream
binaries (``node_exporter``, ``prometheus``, ``alertmanager``) when on ``PATH``, else Debian's
(``prometheus-node-exporter``, ``prometheus``, ``prometheus-alertmanager``), installed by
``deploy/local/system-packages`` when missing.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.local.processes import ChildProcess, free_port
from deploy.local.stack import installed, wait_until

# The program of each client: its upstream name, and Debian's command (a system-packages need).
PROGRAMS = {
    "node_exporter": "prometheus-node-exporter",
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
}


def program(name: str, progress: Callable[[str], None] = print) -> str:
    """The path of client ``name`` (a key of :data:`PROGRAMS`): the upstream binary on
    ``PATH``, else Debian's, installed when missing. StackError says what to install when
    it cannot be."""
    found = shutil.which(name)
    return found or installed(PROGRAMS[name], progress=progress)


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: bytes = reply.read()
        return body


def answers(url: str) -> bool:
    """True when ``url`` answers a GET with a success."""
    try:
        _get(url, timeout=2.0)
    except (OSError, urllib.error.URLError):
        return False
    return True


class _Server(ChildProcess):
    """``binary`` listening on 127.0.0.1:``port`` (a free one by default) with ``flags``, and
    its ``config`` (a mapping) written as YAML to ``folder``/``config_name`` when given; ready
    once ``ready_path`` answers."""

    ready_path = "/"
    config_name = ""

    def __init__(
        self,
        binary: str,
        folder: Path,
        flags: Sequence[str] = (),
        config: dict[str, Any] | None = None,
        port: int | None = None,
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        argv = [binary, f"--web.listen-address=127.0.0.1:{self.port}", *flags]
        if config is not None:
            config_file = folder / self.config_name
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
            argv.append(f"--config.file={config_file}")
        super().__init__(argv, folder / "log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until it answers; StackError (with its log) when it does not or exits."""
        alive = self.alive
        wait_until(
            self.argv[0],
            lambda: answers(self.url + self.ready_path),
            timeout_s,
            self.log,
            lambda: not alive(),
        )


class NodeExporter(_Server):
    """node_exporter with its default collectors, or as ``flags`` say."""

    ready_path = "/metrics"


class Prometheus(_Server):
    """Prometheus with ``config`` (a prometheus.yml as a mapping) and its data in ``folder``."""

    ready_path = "/-/ready"
    config_name = "prometheus.yml"

    def __init__(
        self, binary: str, folder: Path, config: dict[str, Any], port: int | None = None
    ) -> None:
        flags = [f"--storage.tsdb.path={folder / 'data'}", "--storage.tsdb.retention.time=1d"]
        super().__init__(binary, folder, flags, config, port)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of PromQL ``expr`` now: ``[{"metric": {...}, "value": [t, v]}]``."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        answer = json.loads(_get(url))
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


class Alertmanager(_Server):
    """Alertmanager alone (no cluster), notifying ``webhook_url`` when given, firing and
    resolved, as soon as it can (group_wait and group_interval of a second)."""

    ready_path = "/-/ready"
    config_name = "alertmanager.yml"

    def __init__(
        self, binary: str, folder: Path, webhook_url: str = "", port: int | None = None
    ) -> None:
        receiver: dict[str, Any] = {"name": "default"}
        if webhook_url:
            receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
        config = {
            "route": {
                "receiver": "default",
                "group_by": ["alertname", "entity"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "4h",
            },
            "receivers": [receiver],
        }
        flags = [f"--storage.path={folder / 'data'}", "--cluster.listen-address="]
        super().__init__(binary, folder, flags, config, port)

    @property
    def alerts_endpoint(self) -> str:
        """Where Foresight's Alertmanager sink posts (``foresight connect apply
        --alertmanager-url``)."""
        return f"{self.url}/api/v2/alerts"

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds as active now (``GET /api/v2/alerts``)."""
        found: list[dict[str, Any]] = json.loads(_get(self.alerts_endpoint))
        return found


def scrape_config(job: str, target: str, instance: str, interval_s: float) -> dict[str, Any]:
    """A scrape job of one ``target`` (host:port) whose series carry ``instance``."""
    return {
        "job_name": job,
        "scrape_interval": f"{interval_s:g}s",
        "static_configs": [{"targets": [target], "labels": {"instance": instance}}],
    }


def remote_write(
    url: str, key_file: Path, deadline_s: float = 5.0, ca_file: str = ""
) -> dict[str, Any]:
    """A remote_write to Foresight's ingest at ``url`` with the key in ``key_file``, sending
    at least every ``deadline_s`` and the metric types every minute; an https ingest is
    verified with ``ca_file`` (empty: the system's CAs). Paths are written absolute:
    Prometheus reads a relative one from its configuration file's folder, and the default
    stack folder (``.stack``) is relative."""
    config: dict[str, Any] = {
        "url": url,
        "authorization": {"credentials_file": str(key_file.resolve())},
        "queue_config": {"batch_send_deadline": f"{deadline_s:g}s"},
    }
    if ca_file:
        config["tls_config"] = {"ca_file": str(Path(ca_file).resolve())}
    return config


def prometheus_config(
    scrape_configs: list[dict[str, Any]], remote_writes: list[dict[str, Any]]
) -> dict[str, Any]:
    """A prometheus.yml: these jobs, written to these remote_write endpoints."""
    return {"scrape_configs": scrape_configs, "remote_write": remote_writes}
