"""GraphQL at ``/graphql``, over the same services as the REST routes.

Queries read entities with their latest predictions (the online state, with drivers),
their prediction and alert history, the alerts firing now, and the registry's models;
subscriptions (``graphql-transport-ws`` over WebSocket, the same key and role as the REST
routes) follow live predictions and alerts through the same fan-out as the gateway's
WebSocket feed (:class:`~connectors.live_feed.LiveFeed`: its filters, and its bounded outbox
per subscriber, coalescing or dropping for one that reads too slowly and saying how many it
lost in ``droppedBefore``).

What a query may ask is bounded before it runs: its depth (:data:`MAX_DEPTH`), its aliases
and tokens, and its cost (:class:`CostLimit`): every field costs one for each row of the
lists it sits in, a list's rows counted as its ``limit`` argument (the largest one allowed
when a variable gives it). The latest predictions of many entities are fetched together
(a data loader: one Redis round trip per query, not per entity).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, NewType

import strawberry
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
)
from strawberry.dataloader import DataLoader
from strawberry.experimental.pydantic import type as from_model
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, Info
from strawberry.types.scalar import ScalarDefinition

from connectors.gateway_filters import SubscriptionError, parse_subscription
from connectors.http.errors import ApiError
from connectors.prometheus import PREDICTION_LATENCY
from streams.api import schema
from streams.api.history import Paging, TimeRange
from streams.api.routes import time_range
from streams.api.service import Intelligence, alert_row

log = logging.getLogger(__name__)

MAX_DEPTH = 8
MAX_ALIASES = 20
MAX_TOKENS = 2000
MAX_COST = 20_000

strawberry.enum(schema.Kind, name="PredictionKind")
strawberry.enum(schema.Severity, name="Severity")
strawberry.enum(schema.AlertStatus, name="AlertStatus")
strawberry.enum(schema.Source, name="Source")


@from_model(model=schema.ModelRef, all_fields=True, name="ModelRef")
class ModelRef:
    pass


@from_model(model=schema.Driver, all_fields=True, name="Driver")
class Driver:
    pass


@from_model(model=schema.Prediction, all_fields=True, name="Prediction")
class Prediction:
    pass


@from_model(model=schema.PredictResponse, all_fields=True, name="Predictions")
class Predictions:
    event_time: schema.Long
    features_event_time: schema.Long | None


@from_model(model=schema.Page, all_fields=True, name="Page")
class Page:
    pass


@from_model(model=schema.PredictionRow, all_fields=True, name="PredictionRow")
class PredictionRow:
    event_time: schema.Long


@from_model(model=schema.PredictionHistory, all_fields=True, name="PredictionHistory")
class PredictionHistory:
    pass


@from_model(model=schema.AlertRow, name="Alert")
class Alert:
    dedup_key: strawberry.auto
    alert_id: strawberry.auto
    status: strawberry.auto
    severity: strawberry.auto
    rule: strawberry.auto
    entity: strawberry.auto
    summary: strawberry.auto
    value: strawberry.auto
    labels: JSON
    starts_at: schema.Long
    ends_at: schema.Long | None
    event_time: schema.Long


@from_model(model=schema.AlertHistory, all_fields=True, name="AlertHistory")
class AlertHistory:
    pass


@from_model(model=schema.ModelVersionInfo, name="ModelVersion")
class ModelVersion:
    model: strawberry.auto
    version: strawberry.auto
    stage: strawberry.auto
    kind: strawberry.auto
    created_at: strawberry.auto
    since: strawberry.auto
    until: strawberry.auto
    features: strawberry.auto
    feature_hash: strawberry.auto
    feature_set: strawberry.auto
    metrics: JSON
    parent: strawberry.auto
    content_hash: strawberry.auto


@from_model(model=schema.ModelInfo, all_fields=True, name="Model")
class Model:
    pass


def _service(info: Info) -> Intelligence:
    service: Intelligence = info.context["service"]
    return service


# Arguments are bounded by their types, so a bad value is refused when the query is validated
# (or its variables read), naming the argument, before anything runs.
Name = NewType("Name", str)
"""A name or an fnmatch glob: 1 to 256 characters."""
Limit = NewType("Limit", int)
Offset = NewType("Offset", int)
Top = NewType("Top", int)
ModelName = NewType("ModelName", str)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DEFAULT_LIMIT = Limit(100)


def _integer(what: str, low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{what}: an integer from {low:,} to {high:,}, got {value!r}")
        return value

    return parse


def _name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= schema.MAX_TEXT:
        raise ValueError(f"a name or glob of 1 to {schema.MAX_TEXT} characters, got {value!r:.60}")
    return value


def _model_name(value: Any) -> str:
    if not isinstance(value, str) or not _MODEL_NAME.match(value):
        raise ValueError(
            f"a model name (letters, digits, '_', '-' and '.', at most 128), got {value!r:.60}"
        )
    return value


SCALARS: dict[object, ScalarDefinition] = {
    schema.Long: strawberry.scalar(
        name="Long",
        description="A 64-bit integer: epoch milliseconds, feed ids",
        serialize=int,
        parse_value=_integer("epoch milliseconds", 0, 32_503_680_000_000),
    ),
    Name: strawberry.scalar(
        name="Name",
        description=f"A name or an fnmatch glob (web-*), 1 to {schema.MAX_TEXT} characters",
        serialize=str,
        parse_value=_name,
    ),
    Limit: strawberry.scalar(
        name="Limit",
        description=f"Rows per page, 1 to {schema.MAX_PAGE:,}",
        serialize=int,
        parse_value=_integer("rows per page", 1, schema.MAX_PAGE),
    ),
    Offset: strawberry.scalar(
        name="Offset",
        description="Rows to skip, 0 to 1,000,000",
        serialize=int,
        parse_value=_integer("rows to skip", 0, 1_000_000),
    ),
    ModelName: strawberry.scalar(
        name="ModelName",
        description="A model's name in the registry: letters, digits, '_', '-' and '.'",
        serialize=str,
        parse_value=_model_name,
    ),
    Top: strawberry.scalar(
        name="Top",
        description="Drivers per prediction, 0 to 50",
        serialize=int,
        parse_value=_integer("drivers per prediction", 0, 50),
    ),
}


def _window(since: int | None, until: int | None) -> TimeRange | None:
    """The time range asked for; None when it is empty (it holds no rows)."""
    try:
        return time_range(since, until)
    except ApiError:
        return None


def _empty(paging: Paging) -> schema.Page:
    return schema.Page(limit=paging.limit, offset=paging.offset, next_offset=None)


LatestKey = tuple[str, tuple[str, ...] | None, tuple[str, ...] | None, int]


async def _load_latest(
    service: Intelligence, keys: Sequence[LatestKey]
) -> list[schema.PredictResponse | Exception | None]:
    """The latest predictions of many entities in one call to the predictor."""
    requests = [
        schema.PredictRequest(
            entity=entity,
            kinds=[schema.Kind(k) for k in kinds] if kinds else None,
            metrics=list(metrics) if metrics else None,
            top=top,
        )
        for entity, kinds, metrics, top in keys
    ]
    with PREDICTION_LATENCY.labels("graphql").time():
        answers = await service.predictor.predict(requests)
    return [_latest(a) for a in answers]


def _latest(answer: dict[str, Any] | ApiError) -> schema.PredictResponse | Exception | None:
    if isinstance(answer, ApiError):
        return None if answer.status == 404 else answer  # no state: null
    return schema.PredictResponse.model_validate(answer)


@strawberry.type
class Entity:
    """An entity: a host, a service, or an agent."""

    name: str

    @strawberry.field(description="its latest predictions (online state), null when none")
    async def latest(
        self,
        info: Info,
        kinds: list[schema.Kind] | None = None,
        metrics: list[Name] | None = None,
        top: Top = Top(5),
    ) -> Predictions | None:
        key = (
            self.name,
            tuple(k.value for k in kinds) if kinds else None,
            tuple(metrics) if metrics else None,
            top,
        )
        answer: schema.PredictResponse | None = await info.context["latest"].load(key)
        return None if answer is None else Predictions.from_pydantic(answer)

    @strawberry.field(description="its stored predictions, newest first")
    async def history(
        self,
        info: Info,
        kinds: list[schema.Kind] | None = None,
        metric: Name | None = None,
        since: schema.Long | None = None,
        until: schema.Long | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = Offset(0),
    ) -> PredictionHistory:
        paging, window = Paging(limit, offset), _window(since, until)
        found = (
            schema.PredictionHistory(rows=[], page=_empty(paging))
            if window is None
            else await _service(info).history.predictions(
                self.name, window, paging, [k.value for k in kinds or ()], metric
            )
        )
        return PredictionHistory.from_pydantic(found)

    @strawberry.field(description="its stored alert state changes, newest first")
    async def alerts(
        self,
        info: Info,
        since: schema.Long | None = None,
        until: schema.Long | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = Offset(0),
    ) -> AlertHistory:
        paging, window = Paging(limit, offset), _window(since, until)
        found = (
            schema.AlertHistory(rows=[], page=_empty(paging))
            if window is None
            else await _service(info).history.alerts(self.name, window, paging)
        )
        return AlertHistory.from_pydantic(found)

    @strawberry.field(description="its alerts firing now")
    def firing(self, info: Info) -> list[Alert]:
        firing = _service(info).firing_alerts(self.name).alerts
        return [Alert.from_pydantic(a) for a in firing]


@strawberry.type
class Query:
    @strawberry.field(description="one entity, by name")
    def entity(self, name: Name) -> Entity:
        return Entity(name=name)

    @strawberry.field(description="entities with predictions in the online store")
    async def entities(
        self, info: Info, glob: Name = Name("*"), limit: Limit = DEFAULT_LIMIT
    ) -> list[Entity]:
        found = await _service(info).entities(glob, limit)
        return [Entity(name=name) for name in found.entities]

    @strawberry.field(description="stored alert state changes, newest first")
    async def alerts(
        self,
        info: Info,
        entity: Name = Name("*"),
        statuses: list[schema.AlertStatus] | None = None,
        severities: list[schema.Severity] | None = None,
        rule: Name | None = None,
        since: schema.Long | None = None,
        until: schema.Long | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = Offset(0),
    ) -> AlertHistory:
        paging, window = Paging(limit, offset), _window(since, until)
        found = (
            schema.AlertHistory(rows=[], page=_empty(paging))
            if window is None
            else await _service(info).history.alerts(
                entity,
                window,
                paging,
                [s.value for s in statuses or ()],
                [s.value for s in severities or ()],
                rule,
            )
        )
        return AlertHistory.from_pydantic(found)

    @strawberry.field(description="alerts firing now, oldest episode first")
    def firing_alerts(self, info: Info, entity: Name = Name("*")) -> list[Alert]:
        return [Alert.from_pydantic(a) for a in _service(info).firing_alerts(entity).alerts]

    @strawberry.field(description="the registry's models and their versions")
    async def models(self, info: Info) -> list[Model]:
        return [Model.from_pydantic(m) for m in (await _service(info).models()).models]

    @strawberry.field(description="one model of the registry, null when there is none")
    async def model(self, info: Info, name: ModelName) -> Model | None:
        try:
            return Model.from_pydantic(await _service(info).model(name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise


@strawberry.type
class LivePredictions:
    """A PredictionBatch as it goes by: its id in the feed, and how many messages this
    subscription lost just before it (it read too slowly)."""

    id: schema.Long
    dropped_before: int
    entity: str
    event_time: schema.Long
    predictions: list[PredictionRow]


@strawberry.type
class LiveAlert:
    """An alert state change as it goes by (see :class:`LivePredictions`)."""

    id: schema.Long
    dropped_before: int
    alert: Alert


def _rows(batch: dict[str, Any]) -> list[PredictionRow]:
    return [
        PredictionRow.from_pydantic(
            schema.PredictionRow(
                entity=batch["entity"],
                event_time=batch["event_time"],
                metric=p["metric"],
                kind=p["kind"],
                model=schema.ModelRef(name=p["model"], version=p["model_version"]),
                horizon_s=p["horizon_s"],
                value=p["value"],
                score=p["score"],
                lower=p["lower"],
                upper=p["upper"],
            )
        )
        for p in batch["predictions"]
    ]


async def _follow(info: Info, subscribe: dict[str, Any]) -> AsyncGenerator[tuple[int, Any], None]:
    """``(dropped before, message)`` for each live message of a subscription to the feed."""
    try:
        subscription = parse_subscription({"type": "subscribe", **subscribe})
    except SubscriptionError as error:
        raise ValueError(str(error)) from None
    feed = _service(info).feed
    subscriber = feed.subscribe(subscription)
    reported = 0
    try:
        while True:
            texts = await subscriber.outbox.wait()
            lost, reported = subscriber.outbox.dropped - reported, subscriber.outbox.dropped
            for text in texts:
                yield lost, json.loads(text)
                lost = 0
    finally:
        feed.unsubscribe(subscriber)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="live predictions of the entities the glob matches")
    async def predictions(
        self,
        info: Info,
        entity: Name = Name("*"),
        kinds: list[schema.Kind] | None = None,
    ) -> AsyncGenerator[LivePredictions, None]:
        asked: dict[str, Any] = {"topics": ["predictions"], "entity": entity}
        if kinds:
            asked["kinds"] = [k.value for k in kinds]
        async for lost, message in _follow(info, asked):
            batch = message["data"]
            yield LivePredictions(
                id=message["id"],
                dropped_before=lost,
                entity=batch["entity"],
                event_time=batch["event_time"],
                predictions=_rows(batch),
            )

    @strawberry.subscription(description="live alert state changes")
    async def alerts(
        self,
        info: Info,
        entity: Name = Name("*"),
        min_severity: schema.Severity = schema.Severity.INFO,
        labels: JSON | None = None,
    ) -> AsyncGenerator[LiveAlert, None]:
        asked: dict[str, Any] = {
            "topics": ["alerts"],
            "entity": entity,
            "min_severity": min_severity.value,
        }
        if labels is not None:
            asked["labels"] = labels
        async for lost, message in _follow(info, asked):
            alert = Alert.from_pydantic(alert_row(message["data"]))
            yield LiveAlert(id=message["id"], dropped_before=lost, alert=alert)


class CostLimit(ValidationRule):
    """Refuse an operation whose cost is over :data:`MAX_COST` (see the module docstring)."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        cost = self._cost(node.selection_set, 1, set())
        if cost > MAX_COST:
            self.report_error(
                GraphQLError(
                    f"this query would cost {cost:,}, over the limit of {MAX_COST:,}: every "
                    "field costs one per row of the lists it is in (their limit); ask for "
                    "fewer rows or fewer fields",
                    node,
                )
            )

    def _cost(self, selections: SelectionSetNode | None, rows: int, seen: set[str]) -> int:
        if selections is None:
            return 0
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += rows + self._cost(
                    selection.selection_set, rows * _rows_of(selection), seen
                )
            elif isinstance(selection, InlineFragmentNode):
                total += self._cost(selection.selection_set, rows, seen)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                fragment = self.context.get_fragment(selection.name.value)
                if fragment is not None:
                    inner = seen | {selection.name.value}
                    total += self._cost(fragment.selection_set, rows, inner)
        return total


def _rows_of(field: FieldNode) -> int:
    """How many rows a field's list may hold: its ``limit``, or 1 without one."""
    for argument in field.arguments or ():
        if argument.name.value == "limit":
            if isinstance(argument.value, IntValueNode):
                return max(1, int(argument.value.value))
            if isinstance(argument.value, VariableNode):
                return schema.MAX_PAGE
    return DEFAULT_LIMIT if field.name.value in _LISTS else 1


_LISTS = frozenset({"entities", "history", "alerts"})


def _expected(error: GraphQLError) -> bool:
    """Errors whose message is for the caller; anything else is masked (and logged)."""
    original = error.original_error
    return original is None or isinstance(original, ApiError | ValueError | GraphQLError)


class _Schema(strawberry.Schema):
    """Logs only the errors that are the server's: a refused query is the caller's business
    (it gets the reason), not a traceback in the log."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if not _expected(error):
                log.error("GraphQL: %s", error.message, exc_info=error.original_error)


SCHEMA = _Schema(
    query=Query,
    subscription=Subscription,
    config=StrawberryConfig(scalar_map=SCALARS),
    extensions=[
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: AddValidationRules([CostLimit]),
        lambda: MaskErrors(
            should_mask_error=lambda error: not _expected(error),
            error_message="the server failed on this field; its log has the details",
        ),
    ],
)


def graphql_router(service: Intelligence) -> GraphQLRouter[Any, Any]:
    """``/graphql`` for ``service``: POST (or GET) queries, WebSocket subscriptions."""

    async def context() -> dict[str, Any]:
        return {
            "service": service,
            "latest": DataLoader(load_fn=lambda keys: _load_latest(service, keys)),
        }

    return GraphQLRouter(SCHEMA, graphql_ide=None, context_getter=context, include_in_schema=False)
