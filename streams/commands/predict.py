"""``foresight predict ENTITY``: an entity's predictions now, from the intelligence API."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from connectors.clickhouse import QueryResult
from connectors.http.errors import ApiError
from schemas.predictions import KINDS
from streams.access import local_client_key, local_url
from streams.commands.sql import format_table
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.api import schema


def _when(t_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t_ms / 1000))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _horizon(seconds: int) -> str:
    if not seconds:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _interval(prediction: schema.Prediction) -> str:
    if prediction.lower is None and prediction.upper is None:
        return "-"
    return f"{_number(prediction.lower)}..{_number(prediction.upper)}"


def _driver(driver: schema.Driver) -> str:
    share = "" if driver.contribution is None else f" ({driver.contribution:+.3g})"
    return f"{driver.feature}={_number(driver.value)}{share}"


def describe(answer: schema.PredictResponse) -> str:
    """The predictions as a person reads them: one line each, with what drove them."""
    where = "online state" if answer.source.value == "online" else "the window sent"
    rows = [
        (
            p.kind.value,
            p.metric,
            _horizon(p.horizon_s),
            _number(p.value),
            _interval(p),
            _number(p.score),
            f"{p.model.name} {p.model.version}{' (shadow)' * p.shadow}",
            ", ".join(_driver(d) for d in p.drivers) or "-",
        )
        for p in answer.predictions
    ]
    columns = ["kind", "metric", "horizon", "value", "interval", "score", "model", "drivers"]
    head = f"{answer.entity}: {where}, step of {_when(answer.event_time)}"
    table = format_table(QueryResult(columns, rows))
    if rows or answer.source.value != "online":
        return head + "\n" + table
    # The entity's features stay in the store; the stream's predictions of it expire.
    why = (
        "no predictions: the stream's latest predictions of this entity have expired (the "
        "server keeps them PREDICTION_CACHE_TTL seconds after its last step, shown above), "
        "no trained model in production scores its features, or the filters left none"
    )
    return head + "\n" + table + "\n" + why


def _predict(args: argparse.Namespace, settings: Settings) -> int:
    from streams.api.client import ApiClient  # the API's models load slowly: only when asked

    url = args.url or local_url(settings, settings.api_port, "")
    verify = settings.tls().client_context() or True
    try:
        with ApiClient(url, local_client_key(settings), verify=verify) as client:
            answer = client.predict(
                args.entity,
                kinds=args.kind,
                metrics=args.metric,
                horizons_s=args.horizon,
                top=args.top,
            )
    except ApiError as error:
        print(f"foresight predict: {error.message} ({error.status})", file=sys.stderr)
        return 1
    except ValidationError as error:  # the request itself, refused here as the server would
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        print(f"foresight predict: {problems}", file=sys.stderr)
        return 2
    if args.json:
        print(answer.model_dump_json(indent=2))
    else:
        print(describe(answer))
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``predict`` command."""
    parser = subparsers.add_parser(
        "predict",
        help="an entity's predictions now, with what drove them (from `foresight api`)",
    )
    parser.add_argument("entity", help="the entity (host, service, agent)")
    parser.add_argument("--kind", action="append", choices=KINDS,
                        help="only this kind (repeatable)")  # fmt: skip
    parser.add_argument("--metric", action="append", help="only this metric (repeatable)")
    parser.add_argument(
        "--horizon",
        action="append",
        type=int,
        help="only forecasts at this horizon: 300, 3600 or 86400 s (repeatable)",
    )
    parser.add_argument("--top", type=int, default=3, help="drivers per prediction (default 3)")
    parser.add_argument(
        "--url",
        help="the API (default: http://127.0.0.1:FORESIGHT_API_PORT on this machine; https "
        "with FORESIGHT_TLS_CERT)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    parser.set_defaults(func=_predict)
