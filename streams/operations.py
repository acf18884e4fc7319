"""Changes to what Foresight runs: models promoted, refused or rolled back, alert connectors
applied or removed.

Each needs an identity with the ``operate`` role: the caller's API key (``FORESIGHT_API_KEY``,
else the credentials file) is checked against the keys file (``FORESIGHT_KEYS_FILE``) before
anything is touched, and each change records an audit event with the key's id, whether it was
done, failed or was refused. The commands run where they are typed and act on the registry
folder and on Kafka Connect's REST API themselves, so the check binds whoever goes through
Foresight, not whoever can write the registry folder or the keys file, or reach Connect's
REST port: those are guarded by the machine (file modes, Connect on the loopback).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.alert_sinks import SinkConfig, apply_sink, ensure_sink_topics, remove_sink
from connectors.audit import FAILED, REFUSED, SUCCEEDED, AuditTrail
from connectors.http.keys import CLIENT_KEY_ENV, OPERATE, ApiKey, KeysError
from connectors.kafka_connect import ConnectError, connector_status
from connectors.kafka_producer import RecordProducer
from models.promotion import PromotionTest
from models.registry import Decision, ModelRegistry
from models.traffic import TrafficSplit
from streams.access import keys_file, local_client_key
from streams.codecs import codec_for
from streams.settings import Settings
from streams.topics import ALERTS, MODEL_UPDATES

Record = dict[str, Any]

_PUBLISH_TIMEOUT_S = 30.0
_POLL_S = 0.5


class OperatorRefusedError(PermissionError):
    """No identity with the ``operate`` role; the message says what to do."""


def operator(settings: Settings, action: str, target: str, audit: AuditTrail) -> ApiKey:
    """The caller's key, which must have the ``operate`` role for ``action`` on ``target``.

    Raises :class:`OperatorRefusedError` (recording the refusal in ``audit``) when there is no
    key, the key is not in the keys file, or it lacks the role.
    """
    presented = local_client_key(settings)
    keys = keys_file(settings)
    key = None
    try:
        keys.entries()  # a malformed keys file is an error here, not an empty one
        key = keys.find(presented)
    except KeysError as error:
        problem = str(error)
    else:
        if presented is None:
            problem = (
                f"no API key: set {CLIENT_KEY_ENV} to a key with the {OPERATE} role, or put "
                f"one in {settings.credentials_file}"
            )
        elif key is None:
            problem = (
                f"the API key given ({CLIENT_KEY_ENV} or {settings.credentials_file}) is not in "
                f"the keys file {keys.path}: it was revoked, or is another deployment's"
            )
        elif OPERATE not in key.roles:
            problem = (
                f"key {key.id} ({key.name}) has the roles {', '.join(sorted(key.roles))}; "
                f"{action} needs the {OPERATE} role"
            )
        else:
            return key
    problem += f". Make one with `foresight keys create NAME --roles {OPERATE}`"
    audit.record(action, target, REFUSED, key=key, details={"reason": problem, "role": OPERATE})
    raise OperatorRefusedError(problem)


# -- models ----------------------------------------------------------------------------------


async def _produce(settings: Settings, records: Sequence[Record]) -> None:
    producer = RecordProducer(settings.kafka(), codec_for(settings))
    await producer.start()
    try:
        for record in records:
            await producer.send(MODEL_UPDATES.name, record["model"], "model_update", record)
        await producer.flush()
    finally:
        await producer.stop()


def publish_updates(settings: Settings, records: Sequence[Record]) -> str | None:
    """Produce ModelUpdate records to ``models.updates`` in order; the error, or None."""
    try:
        asyncio.run(asyncio.wait_for(_produce(settings, records), _PUBLISH_TIMEOUT_S))
    except Exception as error:  # aiokafka, asyncio and socket errors alike
        return (
            f"could not produce to {MODEL_UPDATES.name} at {settings.kafka().describe()} "
            f"({type(error).__name__}: {error}); the registry is changed, workers will see it "
            "when they next reload. Is Kafka up (foresight stack status)?"
        )
    return None


@dataclass(frozen=True)
class ModelChange:
    """What a promote or rollback did: its ModelUpdate records, and why they could not be
    published (None when they were)."""

    updates: list[Record]
    problem: str | None


@dataclass(frozen=True)
class Caller:
    """Who asks for a change when a server already admitted their key with the ``operate``
    role: the key, and the address it came from (the audit event's origin)."""

    key: ApiKey
    address: str


def _change_model(
    settings: Settings,
    audit: AuditTrail,
    action: str,
    target: str,
    change: Callable[[ModelRegistry], list[Record]],
    caller: Caller | None,
    evidence: dict[str, str] | None = None,
) -> ModelChange:
    key = caller.key if caller else operator(settings, action, target, audit)
    origin = caller.address if caller else None
    try:
        updates = change(ModelRegistry(settings.model_registry_url))
    except Exception as error:  # a RegistryError, or the file system's
        details = {"error": str(error)}
        audit.record(action, target, FAILED, key=key, origin=origin, details=details)
        raise
    problem = publish_updates(settings, updates)
    done = ", ".join(f"{u['action']} {u['model']} {u['version']}" for u in updates)
    details = {
        "updates": done,
        "published": "no: " + problem if problem else "yes",
        **(evidence or {}),
    }
    audit.record(action, target, SUCCEEDED, key=key, origin=origin, details=details)
    return ModelChange(updates, problem)


def promote_model(
    settings: Settings, audit: AuditTrail, name: str, version: str, caller: Caller | None = None
) -> ModelChange:
    """Put ``version`` of model ``name`` in production and announce it on ``models.updates``.

    Without a ``caller`` (a command), the local key must have the ``operate`` role
    (:class:`OperatorRefusedError`); raises the registry's
    :class:`~models.registry.RegistryError` when it cannot be done.
    """
    return _change_model(
        settings,
        audit,
        "model.promote",
        f"{name} {version}",
        lambda registry: registry.promote(name, version),
        caller,
    )


def decide_candidate(
    settings: Settings, audit: AuditTrail, name: str, version: str, test: PromotionTest
) -> ModelChange:
    """Promote candidate ``version`` when ``test`` says so, else archive it as refused; the
    test is kept in the registry and its numbers ride on the ModelUpdate records. Needs the
    ``operate`` role, as :func:`promote_model`."""
    decision = Decision(test.as_dict(), test.metrics())
    evidence = {
        "test": test.test,
        "p_value": f"{test.p_value:.4g}",
        "effect": f"{test.effect:.4g}",
        "steps": str(test.steps),
        "reason": test.reason,
    }
    if test.promote:
        return _change_model(
            settings, audit, "model.promote", f"{name} {version}",
            lambda registry: registry.promote(name, version, decision=decision), None, evidence,
        )  # fmt: skip
    return _change_model(
        settings, audit, "model.refuse", f"{name} {version}",
        lambda registry: registry.refuse(name, version, decision), None, evidence,
    )  # fmt: skip


def split_model(
    settings: Settings,
    audit: AuditTrail,
    name: str,
    split: TrafficSplit,
    caller: Caller | None = None,
) -> ModelChange:
    """Serve candidates of model ``name`` to shares of the entities (an A/B test), as
    :func:`promote_model`; an empty ``split`` ends it."""
    shares = ", ".join(f"{v}={p:g}%" for v, p in split.shares.items()) or "none"
    return _change_model(
        settings, audit, "model.split", f"{name} {shares}",
        lambda registry: registry.set_split(name, split), caller,
    )  # fmt: skip


def rollback_model(
    settings: Settings, audit: AuditTrail, name: str, caller: Caller | None = None
) -> ModelChange:
    """Put model ``name``'s previous production version back, as :func:`promote_model`."""
    return _change_model(
        settings, audit, "model.rollback", name, lambda registry: registry.rollback(name), caller
    )


# -- alert connectors ------------------------------------------------------------------------


def connector_state(connect_url: str, name: str) -> dict[str, Any]:
    """``{"connector", "state", "tasks": [states], "trace"}``; state NOT_APPLIED if unknown."""
    try:
        status = connector_status(connect_url, name)
    except ConnectError as error:
        if "HTTP 404" in str(error):
            return {"connector": name, "state": "NOT_APPLIED", "tasks": [], "trace": ""}
        raise
    tasks = status.get("tasks", [])
    traces = [t.get("trace", "") for t in [status["connector"], *tasks] if t.get("trace")]
    return {
        "connector": name,
        "state": status["connector"]["state"],
        "tasks": [t["state"] for t in tasks],
        "trace": traces[0].splitlines()[0] if traces else "",
    }


def running(state: dict[str, Any]) -> bool:
    """Whether a connector and all its tasks run."""
    return (
        state["state"] == "RUNNING"
        and bool(state["tasks"])
        and all(t == "RUNNING" for t in state["tasks"])
    )


def _settled(state: dict[str, Any]) -> bool:
    return running(state) or "FAILED" in [state["state"], *state["tasks"]]


def apply_alert_connectors(
    settings: Settings, audit: AuditTrail, sinks: Sequence[SinkConfig], timeout_s: float
) -> list[dict[str, Any]]:
    """Create the sinks' topics, create or update their connectors, and wait up to
    ``timeout_s`` for them to run; returns each one's state, with its topic and secrets file.

    Needs the ``operate`` role (:class:`OperatorRefusedError`); raises :class:`ConnectError`
    or ``OSError`` when Connect does not answer. The audit event names the connectors and
    their states, never an endpoint or a key.
    """
    action, target = "connect.apply", ", ".join(s.name for s in sinks)
    key = operator(settings, action, target, audit)
    connect = settings.kafka_connect_url
    try:
        asyncio.run(
            ensure_sink_topics(
                settings.kafka(),
                list(sinks),
                ALERTS.partition_count(settings),
                ALERTS.config(settings),
            )
        )
        for sink in sinks:
            apply_sink(connect, sink)
        deadline = time.monotonic() + timeout_s
        states = [connector_state(connect, s.name) for s in sinks]
        while not all(_settled(s) for s in states) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            states = [connector_state(connect, s.name) for s in sinks]
    except Exception as error:  # Connect's, Kafka's and the network's errors alike
        audit.record(action, target, FAILED, key=key, details={"error": str(error)})
        raise
    outcome = SUCCEEDED if all(running(s) for s in states) else FAILED
    details = {s["connector"]: "/".join([s["state"], *s["tasks"]]) for s in states}
    audit.record(action, target, outcome, key=key, details=details)
    return [
        dict(state, topic=sink.topic, secrets_file=str(sink.secrets_file))
        for sink, state in zip(sinks, states, strict=True)
    ]


def remove_alert_connectors(
    settings: Settings,
    audit: AuditTrail,
    names: Sequence[str],
    secrets_dir: Path,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """Delete the connectors ``names`` and their secrets files, and wait up to ``timeout_s``
    for Connect to stop them; each one's ``{"connector", "removed", "secrets_removed",
    "state"}`` (``removed`` false: it was not applied; ``state`` NOT_APPLIED once gone).

    Needs the ``operate`` role, and records an audit event like
    :func:`apply_alert_connectors`; raises :class:`ConnectError` or ``OSError`` when Connect
    does not answer.
    """
    action, target = "connect.remove", ", ".join(names)
    key = operator(settings, action, target, audit)
    connect = settings.kafka_connect_url
    removed: list[dict[str, bool]] = []
    try:
        removed = [remove_sink(connect, name, secrets_dir) for name in names]
        deadline = time.monotonic() + timeout_s
        states = [connector_state(connect, name)["state"] for name in names]
        while set(states) != {"NOT_APPLIED"} and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            states = [connector_state(connect, name)["state"] for name in names]
    except Exception as error:  # Connect's and the network's errors alike
        audit.record(action, target, FAILED, key=key, details={"error": str(error)})
        raise
    rows = [
        {
            "connector": name,
            "removed": done["connector"],
            "secrets_removed": done["secrets"],
            "state": state,
        }
        for name, done, state in zip(names, removed, states, strict=True)
    ]
    outcome = SUCCEEDED if set(states) == {"NOT_APPLIED"} else FAILED
    details = {
        r["connector"]: ("removed" if r["removed"] else "not applied")
        + ("" if r["state"] == "NOT_APPLIED" else f", still {r['state']}")
        for r in rows
    }
    audit.record(action, target, outcome, key=key, details=details)
    return rows
