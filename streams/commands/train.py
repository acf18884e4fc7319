"""``foresight train failure_risk --since ISO --until ISO``: train, register, announce.

Reads the features, FAILURE labels and the online local-trend risk of the window from
ClickHouse (:mod:`streams.retraining`), trains the XGBoost failure-risk model with temporal
cross-validation (:mod:`models.training`), registers it as a candidate in the model registry
(``MODEL_REGISTRY_URL``) with its evaluation report, and produces the ModelUpdate record to
``models.updates``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from connectors.user_sql import SqlError
from models.registry import RegistryError
from models.training import FAILURE_RISK, TrainingConfig
from streams.operations import publish_updates
from streams.retraining import train_candidate
from streams.setting_domains import Between, option
from streams.settings import Settings


def parse_time(text: str) -> int:
    """ISO 8601 (``2025-01-31T12:00:00Z``; no zone means UTC) as epoch milliseconds."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; write e.g. 2025-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def format_report(report: dict[str, Any], update: dict[str, Any] | None) -> str:
    """The training report as text: data, folds and means of model and baselines."""
    lines = []
    if update is not None:
        lines.append(
            f"registered {update['model']} version {update['version']} as {update['stage']}: "
            f"{update['uri']}"
        )
    lines.append(
        f"{report['rows']} rows ({report['positives']} positive, prevalence "
        f"{report['prevalence']:.4f}) of {report['entities']} entities, {report['features']} "
        f"features, {report['since']} .. {report['until']}; horizon {report['horizon_s']:.0f} s, "
        f"threshold {report['threshold']}"
    )
    metrics = ("auc_pr", "roc_auc", "precision", "recall", "brier")
    contenders = list(report["cv"]["mean"])
    lines.append(f"{'fold':<6}{'contender':<22}" + "".join(f"{m:>11}" for m in metrics))
    for fold in report["cv"]["folds"]:
        for name in contenders:
            lines.append(
                f"{fold['fold']:<6}{name:<22}"
                + "".join(f"{_fmt(fold[name][m]):>11}" for m in metrics)
            )
    for name in contenders:
        lines.append(
            f"{'mean':<6}{name:<22}"
            + "".join(f"{_fmt(report['cv']['mean'][name][m]):>11}" for m in metrics)
        )
    lines.extend(f"note: {note}" for note in report["notes"])
    if report["dropped_rows"]:
        lines.append(f"rows left out: {report['dropped_rows']}")
    return "\n".join(lines)


def _train(args: argparse.Namespace, settings: Settings) -> int:
    if args.until_ms <= args.since_ms:
        print("foresight train: --until must be after --since", file=sys.stderr)
        return 2
    horizon_s = settings.failure_horizon_s if args.horizon_s is None else args.horizon_s
    config = TrainingConfig(
        folds=args.folds, search_trials=args.search_trials, threads=args.threads
    )
    try:
        trained = train_candidate(settings, args.since_ms, args.until_ms, horizon_s, config)
    except SqlError as error:
        print(f"foresight train: cannot read the history: {error}", file=sys.stderr)
        return 1
    except (ValueError, RegistryError) as error:
        print(f"foresight train: {error}", file=sys.stderr)
        return 1
    update, report = trained.update, trained.report
    problem = publish_updates(settings, [update])
    if args.json:
        print(json.dumps({"update": update, "published": problem is None, "report": report}))
    else:
        print(format_report(report, update))
    if problem:
        print(f"foresight train: {problem}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train``."""
    train = subparsers.add_parser(
        "train", help="train a batch model on ClickHouse history and register it as a candidate"
    )
    train.add_argument("model", choices=[FAILURE_RISK], help="the model to train")
    train.add_argument(
        "--since",
        dest="since_ms",
        type=parse_time,
        required=True,
        metavar="ISO",
        help="start of the training window, ISO 8601 (UTC unless zoned)",
    )
    train.add_argument(
        "--until",
        dest="until_ms",
        type=parse_time,
        required=True,
        metavar="ISO",
        help="end of the window; labels after it are not read",
    )
    train.add_argument(
        "--horizon-s",
        type=option(Between(0, above=True)),
        default=None,
        help="a failure this many seconds after a step makes it positive "
        "(default: FORESIGHT_FAILURE_HORIZON_S, 1800)",
    )
    train.add_argument("--folds", type=int, default=4, help="temporal CV folds (default 4)")
    train.add_argument(
        "--search-trials",
        type=int,
        default=0,
        help="Optuna trials of hyper-parameter search over the same temporal folds (default 0)",
    )
    train.add_argument(
        "--threads",
        type=int,
        default=1,
        help="XGBoost threads (default 1: extra threads only pay on otherwise idle cores)",
    )
    train.add_argument("--json", action="store_true", help="print the update and report as JSON")
    train.set_defaults(func=_train)
