"""``foresight models list | show | promote | rollback | split | compare``: the model registry.

``promote``, ``rollback`` and ``split`` change the registry (``MODEL_REGISTRY_URL``) and
produce their ModelUpdate records to ``models.updates``, which workers act on; they need a key
with the ``operate`` role and record an audit event (:mod:`streams.operations`). ``compare`` scores
champion against challenger on the FAILURE_RISK predictions both made (the ``predictions``
table, where each row names its model and version) against the FAILURE labels that have
arrived, and prints the paired promotion test the retrain controller decides by.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from connectors.user_sql import SqlError
from models.registry import ModelRegistry, ModelVersion, RegistryError
from models.traffic import TrafficSplit
from streams.access import audit_trail
from streams.operations import (
    ModelChange,
    OperatorRefusedError,
    promote_model,
    rollback_model,
    split_model,
)
from streams.retraining import compare_versions, contenders
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
    """Promote, roll back or split, as the operator the caller's key names; print what
    changed."""
    with audit_trail(settings, "cli") as audit:
        try:
            if verb == "promote":
                change: ModelChange = promote_model(settings, audit, args.name, args.version)
            elif verb == "split":
                split = TrafficSplit.parse([] if args.off else args.shares)
                change = split_model(settings, audit, args.name, split)
            else:
                change = rollback_model(settings, audit, args.name)
        except (OperatorRefusedError, RegistryError, ValueError) as error:
            return _fail(verb, error)
    if args.json:
        published = change.problem is None
        print(json.dumps({"updates": change.updates, "published": published}, indent=2))
    else:
        for u in change.updates:
            share = u["metrics"].get("traffic_percent") if u["action"] == "SPLIT" else None
            target = u["stage"] if share is None else f"{share:g}% of the entities"
            print(f"{u['action']:<12}{u['model']} version {u['version']} -> {target}")
    if change.problem:
        return _fail(verb, RuntimeError(change.problem))
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    return _change("promote", args, settings)


def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    return _change("rollback", args, settings)


def _split(args: argparse.Namespace, settings: Settings) -> int:
    """Set the A/B split, or with no shares print each serving version's share."""
    if args.shares or args.off:
        return _change("split", args, settings)
    registry = _registry(settings)
    try:
        production = registry.production(args.name)
        split = registry.split(args.name)
    except RegistryError as error:
        return _fail("split", error)
    arms = split.arms(production.version if production else None)
    rows = [
        {"version": v, "percent": round(100 * (high - low), 6),
         "stage": "production" if production and v == production.version else "candidate"}
        for v, (low, high) in arms.items()
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"model": args.name, "arms": rows}, indent=2))
    else:
        for row in rows:
            print(f"{args.name} version {row['version']:>4} ({row['stage']}): {row['percent']:g}%")
        if not split.shares:
            print("no A/B split: production serves every entity")
    return 0


def _cell(value: float | None, form: str = ".3f") -> str:
    return "-" if value is None else format(value, form)


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as text: each version's metrics, then the promotion test."""
    lines = [
        f"{result['model']}: champion {result['champion_version']} vs challenger "
        f"{result['challenger_version']}, {result['steps']} steps"
    ]
    if result["steps"]:
        lines.append(f"{'':<12}" + "".join(f"{m:>11}" for m in _METRICS))
        for side in ("champion", "challenger"):
            cells = [result[side][m] for m in _METRICS]
            lines.append(f"{side:<12}" + "".join(f"{_cell(c):>11}" for c in cells))
        test = result["test"]
        lines.append(
            f"test: {test['test']} over {test['steps']} steps ({test['positives']} positive, "
            f"{test['entities']} entities), {test['resamples']} resamples, seed {test['seed']}"
        )
        lines.append(
            f"  Brier {_cell(test['production_brier'], '.4f')} -> "
            f"{_cell(test['candidate_brier'], '.4f')}: fall {_cell(test['effect'], '.4f')} "
            f"(95% {_cell(test['effect_low'], '.4f')} .. {_cell(test['effect_high'], '.4f')}, "
            f"{_cell(test['relative_effect'], '.1%')}), p = {test['p_value']:.4f}"
        )
        lines.append(
            f"  alarms at {test['threshold']}: only the challenger right on "
            f"{test['alarms_only_candidate_right']} steps, only the champion on "
            f"{test['alarms_only_production_right']} (McNemar p = {test['mcnemar_p_value']:.4f})"
        )
        verdict = "promote" if test["promote"] else "refuse"
        lines.append(f"  verdict: {verdict}: {test['reason']}")
    if "note" in result:
        lines.append(f"note: {result['note']}")
    return "\n".join(lines)


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    try:
        champion, challenger = contenders(
            _registry(settings), args.name, args.champion, args.challenger
        )
        result = compare_versions(settings, args.name, champion, challenger)
    except (RegistryError, SqlError) as error:
        return _fail("compare", error)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_comparison(result))
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

    split = verbs.add_parser(
        "split",
        help="A/B test: serve candidate versions to percentages of the entities (by entity "
        "hash), production to the rest; without shares, print the split",
    )
    split.add_argument("name")
    split.add_argument("shares", nargs="*", metavar="VERSION=PERCENT", help="e.g. 2=20")
    split.add_argument("--off", action="store_true", help="end the split: production serves all")
    split.set_defaults(func=_split)

    compare = verbs.add_parser(
        "compare",
        help="champion vs challenger on shadow predictions and arrived labels, with the "
        "paired promotion test",
    )
    compare.add_argument("name")
    compare.add_argument("--champion", help="version (default: the production one)")
    compare.add_argument("--challenger", help="version (default: the newest other candidate)")
    compare.set_defaults(func=_compare)

    for verb in (listing, show, promote, rollback, split, compare):
        verb.add_argument("--json", action="store_true", help="print as JSON")
