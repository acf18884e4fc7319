"""``foresight models list | show | promote | rollback | compare``: the model registry.

``promote`` and ``rollback`` change the registry (``MODEL_REGISTRY_URL``) and produce their
ModelUpdate records to ``models.updates``, which workers act on; they need a key with the
``operate`` role and record an audit event (:mod:`streams.operations`). ``compare`` scores champion
against challenger on the FAILURE_RISK predictions both made (the ``predictions`` table, where
each row names its model and version) against the FAILURE labels that have arrived.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from connectors.clickhouse import sql_string
from connectors.user_sql import SqlError
from models.registry import ModelRegistry, ModelVersion, RegistryError
from models.training import compare_predictions
from streams.access import audit_trail
from streams.commands.sql import query_table
from streams.commands.train import millis_as_ts
from streams.operations import (
    ModelChange,
    OperatorRefusedError,
    promote_model,
    rollback_model,
)
from streams.settings import Settings

_METRICS = ("auc_pr", "roc_auc", "precision", "recall", "brier")


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.model_registry_url)


def _fail(verb: str, error: Exception) -> int:
    print(f"foresight models {verb}: {error}", file=sys.stderr)
    return 1


def _row(found: ModelVersion) -> dict[str, Any]:
    return {
        "model": found.model,
        "version": found.version,
        "stage": found.stage,
        "created_at": found.created_at,
        "since": found.since,
        "until": found.until,
        "parent": found.parent,
        "cv_auc_pr": found.metrics.get("cv_auc_pr"),
    }


def _list(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    try:
        rows = [_row(v) for name in registry.models() for v in registry.versions(name)]
    except RegistryError as error:
        return _fail("list", error)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no models in {registry.url}; train one with `foresight train failure_risk`")
    else:
        print(f"{'model':<16}{'version':>8}  {'stage':<11}{'created_at':<22}{'cv_auc_pr':>10}")
        for r in rows:
            score = "-" if r["cv_auc_pr"] is None else f"{r['cv_auc_pr']:.3f}"
            print(
                f"{r['model']:<16}{r['version']:>8}  {r['stage']:<11}{r['created_at']:<22}"
                f"{score:>10}"
            )
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    try:
        found = registry.show(args.name, args.version)
        registry.read_artifacts(found.model, found.version)  # says whether it would load
    except RegistryError as error:
        return _fail("show", error)
    record = {**found.as_dict(), "verified": True}
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    for key, value in record.items():
        if key == "features":
            value = (
                f"{len(value)} features: {', '.join(value[:6])}{', ...' if len(value) > 6 else ''}"
            )
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        print(f"{key:<14}{value}")
    return 0


def _change(verb: str, args: argparse.Namespace, settings: Settings) -> int:
    """Promote or roll back, as the operator the caller's key names; print what changed."""
    with audit_trail(settings, "cli") as audit:
        try:
            if verb == "promote":
                change: ModelChange = promote_model(settings, audit, args.name, args.version)
            else:
                change = rollback_model(settings, audit, args.name)
        except (OperatorRefusedError, RegistryError) as error:
            return _fail(verb, error)
    if args.json:
        published = change.problem is None
        print(json.dumps({"updates": change.updates, "published": published}, indent=2))
    else:
        for u in change.updates:
            print(f"{u['action']:<12}{u['model']} version {u['version']} -> {u['stage']}")
    if change.problem:
        return _fail(verb, RuntimeError(change.problem))
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    return _change("promote", args, settings)


def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    return _change("rollback", args, settings)


def _contenders(registry: ModelRegistry, args: argparse.Namespace) -> tuple[ModelVersion, ...]:
    """Champion (production unless named) and challenger (newest other candidate)."""
    versions = registry.versions(args.name)
    by_version = {v.version: v for v in versions}
    champion_version = args.champion or next(
        (v.version for v in versions if v.stage == "production"), None
    )
    if champion_version is None:
        raise RegistryError(f"{args.name} has no production version; name one with --champion")
    challenger_version = args.challenger or next(
        (v.version for v in reversed(versions)
         if v.stage == "candidate" and v.version != champion_version),
        None,
    )  # fmt: skip
    if challenger_version is None:
        raise RegistryError(f"{args.name} has no candidate to compare; name one with --challenger")
    for version in (champion_version, challenger_version):
        if version not in by_version:
            raise RegistryError(f"{args.name} has no version {version!r}")
    return by_version[champion_version], by_version[challenger_version]


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    try:
        champion, challenger = _contenders(_registry(settings), args)
    except RegistryError as error:
        return _fail("compare", error)
    horizon_s = float(champion.params.get("horizon_s", settings.failure_horizon_s))
    versions = f"{sql_string(champion.version)}, {sql_string(challenger.version)}"
    try:
        predictions = query_table(
            "SELECT entity, toUnixTimestamp64Milli(ts) AS ts_ms, "
            "CAST(model_version, 'String') AS model_version, score FROM predictions "
            f"WHERE kind = 'FAILURE_RISK' AND model = {sql_string(args.name)} "
            f"AND model_version IN ({versions})",
            settings,
        )
        labels = query_table(
            "SELECT entity, CAST(kind, 'String') AS kind, toUnixTimestamp64Milli(ts) AS ts_ms "
            "FROM labels WHERE kind = 'FAILURE'",
            settings,
        )
    except SqlError as error:
        return _fail("compare", error)
    predictions, labels = millis_as_ts(predictions), millis_as_ts(labels)
    now_ms = int(time.time() * 1000)
    if predictions.num_rows == 0:
        result: dict[str, Any] = {
            "champion_version": champion.version,
            "challenger_version": challenger.version,
            "steps": 0,
        }
    else:
        result = compare_predictions(
            predictions, labels, champion.version, challenger.version, horizon_s, now_ms
        )
    if result["steps"] == 0:
        result["note"] = (
            f"no step has FAILURE_RISK predictions of {args.name} from both version "
            f"{champion.version} and version {challenger.version} whose horizon has passed: "
            "the worker must score the challenger in shadow (model and model_version on each "
            "prediction) for a while before they can be compared"
        )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.name}: champion {champion.version} vs challenger {challenger.version}, "
            f"{result['steps']} steps"
        )
        if result["steps"]:
            print(f"{'':<12}" + "".join(f"{m:>11}" for m in _METRICS))
            for side in ("champion", "challenger"):
                cells = [result[side][m] for m in _METRICS]
                print(f"{side:<12}" + "".join(
                    f"{'-' if c is None else f'{c:.3f}':>11}" for c in cells
                ))  # fmt: skip
        if "note" in result:
            print(f"note: {result['note']}")
    return 0 if result["steps"] else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``models`` group."""
    models = subparsers.add_parser("models", help="the model registry: versions and stages")
    verbs = models.add_subparsers(dest="verb", required=True, metavar="VERB")

    listing = verbs.add_parser("list", help="every version of every model, with its stage")
    listing.set_defaults(func=_list)

    show = verbs.add_parser("show", help="a version's metadata (default: production, else newest)")
    show.add_argument("name", help="model name, e.g. failure_risk")
    show.add_argument("version", nargs="?", help="version number")
    show.set_defaults(func=_show)

    promote = verbs.add_parser("promote", help="put a version in production (archives the old)")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.set_defaults(func=_promote)

    rollback = verbs.add_parser("rollback", help="back to the previous production version")
    rollback.add_argument("name")
    rollback.set_defaults(func=_rollback)

    compare = verbs.add_parser(
        "compare", help="champion vs challenger on shadow predictions and arrived labels"
    )
    compare.add_argument("name")
    compare.add_argument("--champion", help="version (default: the production one)")
    compare.add_argument("--challenger", help="version (default: the newest other candidate)")
    compare.set_defaults(func=_compare)

    for verb in (listing, show, promote, rollback, compare):
        verb.add_argument("--json", action="store_true", help="print as JSON")
