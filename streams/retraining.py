"""Training from ClickHouse history, and comparing versions on their shadow outcomes.

What ``foresight train``, ``foresight models compare`` and the retrain controller
(``foresight retrain``, :mod:`streams.retrain_controller`) share: the history they read (from
the sink's SQL endpoint when a sink runs, else the chdb folder or the server at
``CLICKHOUSE_URL``), a candidate trained and registered from it, and the paired promotion test
of two versions over the steps both scored.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from connectors.clickhouse import sql_string
from models.registry import ModelRegistry, ModelVersion, RegistryError
from models.training import (
    ALERT_THRESHOLD,
    FAILURE_RISK,
    TrainingConfig,
    build_training_set,
    compare_predictions,
    train_failure_risk,
)
from streams.commands.sql import query_table
from streams.settings import Settings

Record = dict[str, Any]


def millis_as_ts(table: pa.Table) -> pa.Table:
    """Rename ``ts_ms`` to ``ts``. Queries select ``toUnixTimestamp64Milli(ts) AS ts_ms``:
    an alias ``ts`` would shadow the column in their WHERE clause (ClickHouse resolves
    aliases there), and integers travel through the sink's JSON where timestamps would not."""
    return table.rename_columns(["ts" if c == "ts_ms" else c for c in table.column_names])


def _window(since_ms: int, until_ms: int) -> str:
    return (
        f"ts >= fromUnixTimestamp64Milli(toInt64({since_ms})) "
        f"AND ts <= fromUnixTimestamp64Milli(toInt64({until_ms}))"
    )


def read_history(since_ms: int, until_ms: int, settings: Settings) -> tuple[pa.Table, ...]:
    """Features, FAILURE labels and the online local-trend risk of a time window."""
    window = _window(since_ms, until_ms)
    features = query_table(
        "SELECT entity, toUnixTimestamp64Milli(ts) AS ts_ms, "
        "CAST(names, 'Array(String)') AS names, values, "
        f"CAST(feature_set, 'String') AS feature_set FROM features WHERE {window} ORDER BY ts",
        settings,
    )
    labels = query_table(
        "SELECT entity, CAST(kind, 'String') AS kind, toUnixTimestamp64Milli(ts) AS ts_ms "
        f"FROM labels WHERE kind = 'FAILURE' AND {window}",
        settings,
    )
    baseline = query_table(
        "SELECT entity, toUnixTimestamp64Milli(ts) AS ts_ms, max(score) AS score "
        "FROM predictions WHERE kind = 'FAILURE_RISK' AND model = 'local_trend' "
        f"AND {window} GROUP BY entity, ts",
        settings,
    )
    return millis_as_ts(features), millis_as_ts(labels), millis_as_ts(baseline)


@dataclass(frozen=True)
class Trained:
    """A candidate trained from history and registered: its REGISTERED record and report."""

    update: Record
    report: dict[str, Any]


def train_candidate(
    settings: Settings,
    since_ms: int,
    until_ms: int,
    horizon_s: float,
    config: TrainingConfig,
) -> Trained:
    """Train the failure-risk model on the window's history and register it as a candidate
    whose parent is the production version. Raises ``SqlError`` when the history cannot be
    read, ``ValueError`` when it cannot train on it, ``RegistryError`` when it cannot register.
    """
    features, labels, baseline = read_history(since_ms, until_ms, settings)
    if features.num_rows == 0:
        raise ValueError(
            "no feature rows between --since and --until in ClickHouse (is the worker "
            "producing `features` and the sink storing them?)"
        )
    data = build_training_set(
        features,
        labels,
        horizon_s,
        label_until_ms=until_ms,
        baseline=baseline if baseline.num_rows else None,
    )
    model, reference, report = train_failure_risk(data, config)
    registry = ModelRegistry(settings.model_registry_url)
    production = registry.production(FAILURE_RISK) if FAILURE_RISK in registry.models() else None
    update = registry.register_model(
        model,
        reference,
        report,
        since_ms=int(data.times_ms.min()),
        until_ms=int(data.times_ms.max()),
        parent=production.version if production else None,
    )
    return Trained(update, report)


def contenders(
    registry: ModelRegistry, name: str, champion: str | None, challenger: str | None
) -> tuple[ModelVersion, ModelVersion]:
    """Champion (production unless named) and challenger (the newest other candidate unless
    named); ``RegistryError`` says what is missing."""
    versions = registry.versions(name)
    by_version = {v.version: v for v in versions}
    champion = champion or next((v.version for v in versions if v.stage == "production"), None)
    if champion is None:
        raise RegistryError(f"{name} has no production version; name one with --champion")
    challenger = challenger or next(
        (v.version for v in reversed(versions)
         if v.stage == "candidate" and v.version != champion),
        None,
    )  # fmt: skip
    if challenger is None:
        raise RegistryError(f"{name} has no candidate to compare; name one with --challenger")
    for version in (champion, challenger):
        if version not in by_version:
            known = ", ".join(by_version) or "none"
            raise RegistryError(f"{name} has no version {version!r} (versions: {known})")
    return by_version[champion], by_version[challenger]


def created_ms(found: ModelVersion) -> int:
    """When ``found`` was registered, in epoch milliseconds (to the second)."""
    moment = dt.datetime.strptime(found.created_at, "%Y-%m-%dT%H:%M:%SZ")
    return int(moment.replace(tzinfo=dt.UTC).timestamp() * 1000)


def compare_versions(
    settings: Settings, name: str, champion: ModelVersion, challenger: ModelVersion
) -> Record:
    """The two versions' FAILURE_RISK predictions on the same steps, against the FAILURE
    labels that have arrived: their metrics and the paired promotion test
    (:func:`models.training.compare_predictions`); raises ``SqlError``.

    Only predictions emitted since the newer version was registered are read: no step before
    it can have been scored by both, and the query stays as small as the shadow period.
    """
    horizon_s = float(champion.params.get("horizon_s", settings.failure_horizon_s))
    versions = f"{sql_string(champion.version)}, {sql_string(challenger.version)}"
    since_ms = max(created_ms(champion), created_ms(challenger))
    predictions = millis_as_ts(
        query_table(
            "SELECT entity, toUnixTimestamp64Milli(ts) AS ts_ms, "
            "CAST(model_version, 'String') AS model_version, score FROM predictions "
            f"WHERE kind = 'FAILURE_RISK' AND model = {sql_string(name)} "
            f"AND model_version IN ({versions}) "
            f"AND emitted_at >= fromUnixTimestamp64Milli(toInt64({since_ms}))",
            settings,
        )
    )
    labels = millis_as_ts(
        query_table(
            "SELECT entity, CAST(kind, 'String') AS kind, toUnixTimestamp64Milli(ts) AS ts_ms "
            "FROM labels WHERE kind = 'FAILURE'",
            settings,
        )
    )
    if predictions.num_rows == 0:
        result: Record = {
            "champion_version": champion.version,
            "challenger_version": challenger.version,
            "steps": 0,
        }
    else:
        result = compare_predictions(
            predictions,
            labels,
            champion.version,
            challenger.version,
            horizon_s,
            int(time.time() * 1000),
            threshold=float(champion.params.get("threshold", ALERT_THRESHOLD)),
            alpha=settings.promotion_alpha,
            min_gain=settings.promotion_min_gain,
        )
    result["model"] = name
    if result["steps"] == 0:
        result["note"] = (
            f"no step has FAILURE_RISK predictions of {name} from both version "
            f"{champion.version} and version {challenger.version} whose horizon has passed: "
            "the worker must score the challenger in shadow (model and model_version on each "
            "prediction) for a while before they can be compared"
        )
    return result
