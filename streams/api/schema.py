"""The shapes of the intelligence API, one pydantic model each: what the routes validate, what
the OpenAPI document publishes, and what the Python client parses.

Times are epoch milliseconds (UTC), as everywhere in Foresight's JSON. Request models refuse
fields they do not know, so a misspelt field is a 422 naming it rather than a silent default.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal, NewType

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from connectors.http.errors import ApiError, error_code
from connectors.json_text import dumps
from models.entity import PipelineConfig
from models.signals import MetricKind
from schemas.predictions import KINDS

MAX_BATCH = 1000
MAX_SERIES = 64
MAX_SAMPLES = 20_000  # per series: 55 hours at 10 s
MAX_WINDOW_SAMPLES = 200_000  # per request, all items together
MAX_TEXT = 256
MAX_PAGE = 1000


class Kind(StrEnum):
    """What a prediction predicts."""

    ANOMALY = "ANOMALY"
    FORECAST = "FORECAST"
    FAILURE_RISK = "FAILURE_RISK"
    BOTTLENECK = "BOTTLENECK"
    DURATION = "DURATION"
    SCALING = "SCALING"


assert tuple(Kind) == KINDS


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class AlertStatus(StrEnum):
    FIRING = "FIRING"
    RESOLVED = "RESOLVED"


class Source(StrEnum):
    """Where predictions come from: the online state the worker keeps, or a window replayed
    through the stream's pipeline."""

    ONLINE = "online"
    WINDOW = "window"


SeriesKind = Literal[
    "UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET"
]
assert set(SeriesKind.__args__) == {kind.value for kind in MetricKind}  # type: ignore[attr-defined]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Long = NewType("Long", int)
"""A 64-bit integer in answers: epoch milliseconds, feed ids (GraphQL's Int has 32 bits)."""
EpochMs = Annotated[
    int, Field(strict=True, ge=0, le=32_503_680_000_000, description="epoch milliseconds")
]


class Horizon(IntEnum):
    """The forecast horizons the stream predicts, in seconds."""

    MINUTES_5 = 300
    HOUR_1 = 3600
    HOURS_24 = 86_400


assert tuple(Horizon) == PipelineConfig().horizons_s


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- predictions ---------------------------------------------------------------------------


class SeriesWindow(_Request):
    """Recent samples of one series, oldest first or in any order (they are sorted)."""

    metric: Text = Field(description="the series' name, as a MetricBatch would carry it")
    kind: SeriesKind = Field(
        default="UNKNOWN",
        description="the series' type; UNKNOWN is typed by Prometheus' naming conventions",
    )
    times: list[EpochMs] = Field(min_length=1, max_length=MAX_SAMPLES)
    values: list[Annotated[float, Field(strict=True, allow_inf_nan=False)]] = Field(
        min_length=1, max_length=MAX_SAMPLES
    )

    @model_validator(mode="after")
    def _parallel(self) -> SeriesWindow:
        if len(self.times) != len(self.values):
            raise ValueError(
                f"times and values must be parallel: {len(self.times)} times, "
                f"{len(self.values)} values"
            )
        return self


class PredictRequest(_Request):
    """What to predict, for one entity.

    Without ``window``, the predictions come from the online state the worker keeps (Redis:
    the entity's latest predictions and features); with it, the samples are replayed through
    a fresh copy of the stream's pipeline and the predictions of its last step come back.
    """

    entity: Text
    window: list[SeriesWindow] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SERIES,
        description="explicit recent samples per metric, instead of the online state",
    )
    kinds: list[Kind] | None = Field(
        default=None, min_length=1, description="only these kinds (default: all)"
    )
    metrics: list[Text] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SERIES,
        description="only these metrics' predictions (entity-wide ones stay)",
    )
    horizons_s: list[Horizon] | None = Field(
        default=None, min_length=1, description="only forecasts at these horizons (default: all)"
    )
    top: int = Field(default=5, strict=True, ge=0, le=50, description="drivers per prediction")

    def window_samples(self) -> int:
        return sum(len(series.times) for series in self.window or ())


class ModelRef(BaseModel):
    """A model version."""

    name: str
    version: str


class Driver(BaseModel):
    """A feature behind a prediction: its value and, when the model attributes its
    prediction, its signed contribution."""

    feature: str
    value: float | None
    contribution: float | None = Field(
        default=None,
        description="signed contribution: SHAP value in log-odds for a trained model, share of "
        "the score for the entity anomaly score (metric '*'), term of log(horizon / time to "
        "exhaustion) for the local-trend failure risk; none for a feature a model only reads",
    )


class Prediction(BaseModel):
    """One prediction, as the stream makes it."""

    kind: Kind
    metric: str = Field(description="the metric, or 'entity' for an entity-wide prediction")
    horizon_s: int
    value: float | None = Field(
        description="forecast value; time to exhaustion in s (BOTTLENECK, FAILURE_RISK); "
        "the sample scored (ANOMALY); the probability (entity-wide FAILURE_RISK); expected "
        "duration in ms (DURATION); agents to add (SCALING)"
    )
    score: float | None = Field(description="anomaly score or probability, 0 to 1")
    lower: float | None
    upper: float | None
    model: ModelRef
    shadow: bool = Field(description="recorded beside the serving model, never alerting")
    drivers: list[Driver]


class PredictResponse(BaseModel):
    """The predictions of one entity."""

    entity: str
    source: Source
    event_time: Long = Field(description="the step the predictions are of")
    features_event_time: Long | None
    predictions: list[Prediction]


class BatchRequest(_Request):
    """Up to 1,000 prediction requests, answered together."""

    items: list[PredictRequest] = Field(min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _bounded(self) -> BatchRequest:
        samples = sum(item.window_samples() for item in self.items)
        if samples > MAX_WINDOW_SAMPLES:
            raise ValueError(
                f"the windows hold {samples:,} samples in all; at most {MAX_WINDOW_SAMPLES:,} "
                "a request: send fewer items per request"
            )
        return self


class ItemError(BaseModel):
    """Why one item of a batch got no predictions."""

    code: str
    message: str


class BatchItem(BaseModel):
    """The answer to one item: its predictions, or why there are none."""

    index: int
    status: int = Field(description="200, or the status the item alone would have had")
    result: PredictResponse | None
    error: ItemError | None


class BatchResponse(BaseModel):
    items: list[BatchItem]
    succeeded: int
    failed: int


def batch_response(answers: Sequence[dict[str, Any] | ApiError]) -> dict[str, Any]:
    """A :class:`BatchResponse` as a record: each item's predictions (a PredictResponse as a
    record), or its error with the status it alone would have had."""
    items = [
        {"index": i, "status": 200, "result": answer, "error": None}
        if not isinstance(answer, ApiError)
        else {
            "index": i,
            "status": answer.status,
            "result": None,
            "error": {"code": error_code(answer.status), "message": answer.message},
        }
        for i, answer in enumerate(answers)
    ]
    failed = sum(item["error"] is not None for item in items)
    return {"items": items, "succeeded": len(items) - failed, "failed": failed}


class RecordResponse(Response):
    """A JSON answer made of plain records in the shape of one of these models (the route
    names which, for the OpenAPI document), written as pydantic would write the model:
    non-finite floats as null."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


class EntityList(BaseModel):
    """Entities with predictions in the online store; ``truncated`` when there are more."""

    entities: list[str]
    truncated: bool


# -- history, features ---------------------------------------------------------------------


class Page(BaseModel):
    """Where a listing stands: ``next_offset`` is ``None`` on the last page."""

    limit: int
    offset: int
    next_offset: int | None


class PredictionRow(BaseModel):
    entity: str
    event_time: Long
    metric: str
    kind: Kind
    model: ModelRef
    horizon_s: int
    value: float | None
    score: float | None
    lower: float | None
    upper: float | None


class PredictionHistory(BaseModel):
    rows: list[PredictionRow]
    page: Page


class AlertRow(BaseModel):
    dedup_key: str
    alert_id: str
    status: AlertStatus
    severity: Severity
    rule: str
    entity: str
    summary: str
    value: float | None
    labels: dict[str, str]
    starts_at: Long
    ends_at: Long | None
    event_time: Long


class AlertHistory(BaseModel):
    rows: list[AlertRow]
    page: Page


class FiringAlerts(BaseModel):
    """Alerts firing now, as the alerts topic says, oldest episode first."""

    alerts: list[AlertRow]


class SampleRow(BaseModel):
    entity: str
    event_time: Long
    metric: str
    value: float | None


class SampleHistory(BaseModel):
    rows: list[SampleRow]
    page: Page


class FeatureVector(BaseModel):
    """An entity's features at one step: ``metric:window:statistic`` to value."""

    entity: str
    event_time: Long
    feature_set: str
    features: dict[str, float | None]


class AsOfRow(_Request):
    entity: Text
    as_of: EpochMs


class AsOfRequest(_Request):
    """Points in time to fetch features at: for each, the entity's newest feature vector
    stamped at or before ``as_of``, so nothing from after that moment leaks in."""

    rows: list[AsOfRow] = Field(min_length=1, max_length=MAX_PAGE)
    features: list[Text] | None = Field(
        default=None, min_length=1, max_length=4096, description="only these features"
    )


class AsOfAnswer(BaseModel):
    entity: str
    as_of: Long
    vector: FeatureVector | None = Field(description="None when nothing was stamped before")


class AsOfResponse(BaseModel):
    rows: list[AsOfAnswer]


# -- models --------------------------------------------------------------------------------


class ModelVersionInfo(BaseModel):
    model: str
    version: str
    stage: str
    kind: str
    created_at: str
    since: str
    until: str
    features: int = Field(description="how many features it reads")
    feature_hash: str
    feature_set: str
    metrics: dict[str, float]
    parent: str | None
    content_hash: str


class ModelInfo(BaseModel):
    name: str
    production: str | None
    versions: list[ModelVersionInfo]


class ModelList(BaseModel):
    models: list[ModelInfo]


class PromoteRequest(_Request):
    version: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,8}$")]


class ModelChangeResponse(BaseModel):
    """What a promotion or rollback did: the ModelUpdate records, and whether they reached
    ``models.updates`` (the workers follow it)."""

    updates: list[dict[str, Any]]
    published: bool
    problem: str | None


# -- routing and agents --------------------------------------------------------------------


class AgentOption(BaseModel):
    agent: str
    expected_duration_ms: float | None
    success_probability: float | None


class RoutingDecision(BaseModel):
    task_type: str
    task_id: str | None
    agent: str
    expected_duration_ms: float | None
    success_probability: float | None
    model: ModelRef
    event_time: Long
    alternatives: list[AgentOption]


class RouteRequest(_Request):
    """A task asking for an agent: a RoutingRequest, answered by the worker's policy."""

    task_id: Text = Field(description="the task; the decision comes back under it")
    task_type: Text = Field(description="kind of task, as the agents' events name it")
    candidates: list[Text] = Field(
        default_factory=list,
        max_length=1024,
        description="the agents that may take it; empty: every agent known for the task type",
    )
    deadline: EpochMs | None = Field(default=None, description="when the task must be done by")
    priority: int = Field(
        default=0, strict=True, ge=-(2**31), le=2**31 - 1, description="higher goes first"
    )


class RouteDecision(RoutingDecision):
    """The decision for one task: the agent, its predicted run time with a 90 % interval and
    its wait, the runner-up, and why."""

    duration_lower_ms: float | None
    duration_upper_ms: float | None
    expected_wait_ms: float
    runner_up: str | None
    reason: str
    explored: bool
    priority: int
    deadline: Long | None
    deadline_miss_probability: float | None
    recommended_concurrency: int | None


class RoutingDecisions(BaseModel):
    rows: list[RoutingDecision]
    page: Page


class AgentStats(BaseModel):
    agent: str
    task_type: str
    succeeded: int
    failed: int
    success_rate: float | None
    p50_duration_ms: float | None
    p95_duration_ms: float | None
    total_cost: float | None
    last_event_time: Long


class AgentStatsResponse(BaseModel):
    rows: list[AgentStats]
    page: Page
