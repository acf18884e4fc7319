"""``foresight api`` as a user runs it, fuzzed by Schemathesis from its own OpenAPI document
and its GraphQL schema: every route answers every generated request, valid or not, without a
server error, with what its document says (status, content type, body), and refuses invalid
input with a 4xx.

The API runs in its own process on the real stack: Redis, Kafka (its live feed), and a
ClickHouse sink of its own (history reads go through the sink's SQL endpoint), with a trained
model in a registry of its own. The run is bounded (``--max-examples`` per operation) and its
summary is printed; the test fails on any failure Schemathesis reports.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.http.keys import OPERATE, READ, KeysFile
from deploy.local.processes import free_port
from models.registry import ModelRegistry
from streams.settings import Settings
from tests.connectors.test_clickhouse_sink import SinkProcess, _produce, _recent
from tests.integration.test_api import _trained

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
    )
)
EXAMPLES = "25"
# One thread: Hypothesis parses lambda sources with ``ast.parse`` while describing filtered
# strategies, and with two Schemathesis threads doing so at once CPython 3.11.7 failed a CI
# run with "SystemError: AST constructor recursion depth mismatch" (the counter it checks is
# shared by the interpreter's threads; compare python/cpython#106905). Schemathesis reports
# that as a runtime error of the run, not of the API.
WORKERS = "1"


@pytest.fixture(scope="module")
def api(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """``foresight api`` on a free port, with a sink and a registry of its own; its URL and a
    key of the read and operate roles (so promotions and rollbacks are fuzzed too; they act on
    this registry alone)."""
    folder = tmp_path_factory.mktemp("api-fuzz")
    unique = uuid.uuid4().hex[:10]
    topic = f"test.api.fuzz.{unique}"
    now = int(time.time() * 1000)
    records = [
        (name, _recent(name, now - 5_000, entity="fuzz-1"))
        for name in ("prediction_batch", "alert", "metric_batch", "feature_vector")
    ]
    asyncio.run(_produce(stack_settings.kafka(), topic, 1, records))
    sink = SinkProcess(stack_settings, folder / "chdb", topic, f"test-api-fuzz-{unique}")
    registry = ModelRegistry(str(folder / "registry"))
    _trained(registry)
    keys = KeysFile(folder / "keys.json")
    _, key = keys.create("fuzzer", [READ, OPERATE])
    port = free_port()
    environ = dict(
        os.environ,
        FORESIGHT_KEYS_FILE=str(keys.path),
        FORESIGHT_CREDENTIALS_FILE=str(sink.credentials),  # the API's key to the sink
        FORESIGHT_SINK_SQL_PORT=str(sink.sql_port),
        MODEL_REGISTRY_URL=registry.url,
        FORESIGHT_RATE_LIMIT_PER_KEY="0",
        FORESIGHT_RATE_LIMIT_PER_ADDRESS="0",
        FORESIGHT_AUTH_FAILURE_LIMIT="0",
        FORESIGHT_LOG_LEVEL="WARNING",
    )
    environ.pop("FORESIGHT_API_KEY", None)
    log = folder / "api.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "api", "--port", str(port)],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        sink.wait_until("the sink's tables", lambda: sink.count("features") == 1)
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the API did not start:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        yield url, key
    finally:
        process.terminate()
        process.wait(timeout=30)
        sink.stop()
        failures = [line for line in log.read_text().splitlines() if "Traceback" in line]
        assert not failures, f"the API logged a traceback:\n{log.read_text()[-3000:]}"


HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


def _schemathesis(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` in ``folder`` (where it keeps what it learnt)."""
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", *argv]
    environ = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS))
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, env=environ, cwd=folder
    )
    print(result.stdout[-4000:])
    return result


def test_the_rest_routes_answer_as_their_openapi_document_says(
    api: tuple[str, str], tmp_path: Path
) -> None:
    url, key = api
    result = _schemathesis(
        tmp_path,
        f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--checks", CHECKS,
        "--max-examples", EXAMPLES,
        "--phases", "examples,coverage,fuzzing",
        "--workers", WORKERS,
        "--suppress-health-check", "too_slow,filter_too_much",
        "--seed", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout


def test_graphql_answers_every_generated_query_without_a_server_error(
    api: tuple[str, str], tmp_path: Path
) -> None:
    url, key = api
    result = _schemathesis(
        tmp_path,
        f"{url}/graphql",
        "--header", f"Authorization: Bearer {key}",
        "--checks", "not_a_server_error",
        "--max-examples", EXAMPLES,
        "--workers", WORKERS,
        "--suppress-health-check", "too_slow,filter_too_much",
        "--seed", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
